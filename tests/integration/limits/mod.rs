//! Resource limits: memory, pids, CPU quota, CPU time and affinity under cgroup v1 or v2, the
//! rlimit/watchdog fallback without cgroups, how hits are reported, and a soak that leaves no
//! cgroups (live or dying) behind. A file per theme, below; the shared programs and helpers
//! are here.

use std::path::{Path, PathBuf};

use rsandbox::{Command, Limit, Outcome, Status};

use crate::util;

// Memory and pids under cgroups: bombs stopped and reported, a child OOM-killed under exit 0.
mod memory_pids;
// The cgroups themselves: limits as the kernel sees them, run cgroups, a lone supervisor on v2.
mod cgroup;
// CPU: quota, affinity, CPU time from the cgroup and its limit.
mod cpu;
// Without cgroups: the memory and CPU-time watchdogs and RLIMIT_NPROC, in the library and CLI.
mod fallback;
// A 2,000-run soak that leaves no cgroups (live or dying), locks or processes behind.
mod soak;

const MIB: u64 = 1 << 20;

/// Grows by 10 MiB (zero-filled, so resident) at a time up to 2 GiB, then says it survived: a
/// limit that does not hold fails the test without taking the host down.
const MEMORY_BOMB: &str = "b = []\nfor i in range(200):\n    b.append(bytearray(10 << 20))\nprint('survived', flush=True)\n";

/// Starts up to 200 background sleeps, one at a time.
const FORK_BOMB: &str =
    "i=0; while [ $i -lt 200 ]; do sleep 100 & i=$((i+1)); done; echo 'all forked'";

fn sh_cmd(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

/// The cgroup mechanism rsandbox uses in this process ("cgroup1" or "cgroup2"), or `None` with a
/// SKIP line when it cannot use cgroups. Fails instead when the host's layout is listed in
/// `RSANDBOX_TEST_EXPECT` and this pass should have it: as root, or on a v2 host (where an
/// unprivileged user is given a delegated subtree). An unprivileged user on a v1/hybrid host
/// never has cgroups (v1 is not delegated), so that pass skips.
fn cgroups() -> Option<&'static str> {
    if !util::require("userns") {
        return None;
    }
    match rsandbox::testing::cgroup::setup() {
        Ok(s) => util::require(s.name()).then_some(s.name()),
        Err(why) => {
            let v2 = rsandbox::probe::host().cgroup_layout == rsandbox::probe::CgroupLayout::V2;
            let feature = if v2 { "cgroup2" } else { "cgroup1" };
            let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
            if expected.split(',').any(|f| f.trim() == feature) && (util::is_root() || v2) {
                panic!("{feature} is listed in RSANDBOX_TEST_EXPECT but rsandbox cannot use cgroups: {why}");
            }
            eprintln!("SKIP: rsandbox cannot use cgroups in this pass ({why}); test not run");
            None
        }
    }
}

/// The first of `dirs` that has `file` (the controller's directory on v1; the one on v2).
fn with_file<'a>(dirs: &'a [PathBuf], file: &str) -> Option<&'a Path> {
    dirs.iter()
        .map(PathBuf::as_path)
        .find(|d| d.join(file).exists())
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn assert_status(o: &Outcome, status: Status, limit: Limit) {
    assert_eq!(o.status, status, "{o:#?}");
    assert!(
        o.limits_hit.contains(&limit),
        "limits_hit lacks {limit:?}: {o:#?}"
    );
}
