//! User-namespace identity: which host ids an instance's sandbox user (1000) maps to.
//!
//! One id is mapped, in both modes: inside uid/gid 1000 is a host id. As root each concurrent
//! instance gets its own host id, `UID_BASE + slot` (a range no distribution hands out by
//! default: /etc/subuid ranges start at 100000 in blocks of 65536); unprivileged, the invoking
//! user's own ids. Inside uid 0 is never mapped, so nothing in the instance can become host root
//! or own host-root files, and files the supervisor creates (as root) must be chowned to the
//! mapped id.

use std::io;

/// First host uid/gid handed to instances when rsandbox runs as root.
pub const UID_BASE: u32 = 1_000_000_000;
/// Number of instance slots (and host ids) as root.
pub const SLOTS: u32 = 65_536;
/// The sandbox user's uid and gid inside every instance.
pub const SANDBOX_ID: u32 = 1000;

/// The id mapping of one instance.
#[derive(Clone, Copy, Debug)]
pub struct IdMap {
    pub host_uid: u32,
    pub host_gid: u32,
    /// Running as root: maps are written with host privileges and groups can be cleared.
    pub privileged: bool,
}

impl IdMap {
    /// The mapping for state slot `slot`, given the supervisor's effective ids.
    pub fn for_slot(slot: u32, euid: u32, egid: u32) -> IdMap {
        if euid == 0 {
            IdMap {
                host_uid: UID_BASE + slot,
                host_gid: UID_BASE + slot,
                privileged: true,
            }
        } else {
            IdMap {
                host_uid: euid,
                host_gid: egid,
                privileged: false,
            }
        }
    }

    /// Writes `/proc/PID/{setgroups,uid_map,gid_map}` for the child `pid`.
    pub fn write(&self, pid: i32) -> io::Result<()> {
        if !self.privileged {
            std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        }
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{SANDBOX_ID} {} 1\n", self.host_uid),
        )?;
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{SANDBOX_ID} {} 1\n", self.host_gid),
        )?;
        Ok(())
    }
}
