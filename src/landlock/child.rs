//! Landlock's child half: builds the ruleset from the parent's `Plan` and restricts the caller.
//!
//! Runs in the reaper after `clone`, under the child's rule (see `spawn::child`): raw calls from
//! `sys` only, reads of the plan the parent prepared, no allocation, no locks.

use std::io;

use super::Plan;
use crate::sys;

/// Builds the ruleset from `p` and restricts the calling process (the reaper) itself, so every
/// program it starts inherits one domain. Needs `p.abi > 0`.
pub(crate) fn restrict_self(p: &Plan) -> io::Result<()> {
    let attr = sys::LandlockRulesetAttr {
        handled_access_fs: p.handled_fs,
        handled_access_net: p.handled_net,
        scoped: p.scoped,
    };
    // The struct grew over ABIs: pass only the fields this kernel knows.
    let size = if p.abi >= 6 {
        24
    } else if p.abi >= 4 {
        16
    } else {
        8
    };
    let ruleset = sys::landlock_create_ruleset(&attr, size)?;
    for rule in &p.rules {
        let Ok(fd) = sys::open(&rule.path, libc::O_PATH, 0) else {
            continue; // a path this instance does not have (e.g. an absent device)
        };
        let r = sys::landlock_add_path_rule(ruleset, fd, rule.access & p.handled_fs);
        sys::close(fd);
        if let Err(e) = r {
            sys::close(ruleset);
            return Err(e);
        }
    }
    // Required unless privileged in our namespace (we are); harmless for a process that never
    // execs.
    let _ = sys::set_no_new_privs();
    let r = sys::landlock_restrict_self(ruleset);
    sys::close(ruleset);
    r
}
