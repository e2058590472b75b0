//! Landlock: the filesystem, network and scope rules of an instance, computed in the parent as
//! plain data (this file, the parent half: `plan`) and applied by the reaper right after
//! `pivot_root` (`child.rs`, the child half: `restrict_self`).
//!
//! The ruleset is built inside the instance because the inodes it grants (the tmpfs work dir,
//! `/tmp`, `/dev/shm`) only exist there. The reaper restricts itself, so every program it starts
//! shares one Landlock domain: signal and abstract-socket scoping then keep programs inside the
//! instance while still letting one run of a session signal another's background processes.
//! Rights: read and execute beneath `/` (everything visible was bound or synthesized), all rights
//! beneath the work dir, `/tmp`, `/dev/shm` and `--rw` binds, read/write on the few device files;
//! TCP bind/connect denied when the network is off.

use std::ffi::CString;

mod child;
pub(crate) use child::restrict_self;

/// Filesystem access rights (`LANDLOCK_ACCESS_FS_*`).
pub mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    /// ABI 1 has bits 0..=12.
    pub const ABI1_ALL: u64 = (1 << 13) - 1;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
}

/// The highest ABI whose features rsandbox uses (7 adds only audit-logging flags).
pub const MAX_ABI: u32 = 7;

/// One path rule, as the reaper applies it (inside paths, after `pivot_root`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PathRule {
    pub path: CString,
    pub access: u64,
}

/// What the reaper enforces; `abi == 0` means Landlock is not used.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub abi: u32,
    pub handled_fs: u64,
    pub handled_net: u64,
    pub scoped: u64,
    pub rules: Vec<PathRule>,
}

/// All filesystem rights the given ABI knows.
pub fn fs_all(abi: u32) -> u64 {
    let mut a = fs::ABI1_ALL;
    if abi >= 2 {
        a |= fs::REFER;
    }
    if abi >= 3 {
        a |= fs::TRUNCATE;
    }
    if abi >= 5 {
        a |= fs::IOCTL_DEV;
    }
    a
}

/// Rights that may be granted on a file (not a directory).
pub fn file_rights(abi: u32) -> u64 {
    (fs::EXECUTE | fs::WRITE_FILE | fs::READ_FILE | fs::TRUNCATE | fs::IOCTL_DEV) & fs_all(abi)
}

/// Builds the plan for a kernel with Landlock ABI `kernel_abi` (0: none).
/// `writable` are directories with all rights; `devices` files with read/write.
pub fn plan(kernel_abi: u32, writable: &[String], devices: &[String], net_off: bool) -> Plan {
    let abi = kernel_abi.min(MAX_ABI);
    if abi == 0 {
        return Plan::default();
    }
    let cs = |s: &str| CString::new(s).expect("inside paths have no NUL");
    let mut rules = vec![PathRule {
        path: cs("/"),
        access: fs::EXECUTE | fs::READ_FILE | fs::READ_DIR,
    }];
    for w in writable {
        rules.push(PathRule {
            path: cs(w),
            access: fs_all(abi),
        });
    }
    for d in devices {
        rules.push(PathRule {
            path: cs(d),
            access: (fs::READ_FILE | fs::WRITE_FILE | fs::TRUNCATE | fs::IOCTL_DEV)
                & file_rights(abi),
        });
    }
    Plan {
        abi,
        handled_fs: fs_all(abi),
        // TCP bind (1) and connect (2) from ABI 4: with no network, nothing is allowed.
        handled_net: if abi >= 4 && net_off { 0b11 } else { 0 },
        // Abstract unix sockets (1) and signals (2) scoped to the instance from ABI 6.
        scoped: if abi >= 6 { 0b11 } else { 0 },
        rules,
    }
}

/// The report's value: `abiN` or `none`.
#[cfg(test)]
pub fn describe(p: &Plan) -> String {
    if p.abi == 0 {
        "none".into()
    } else {
        format!("abi{}", p.abi)
    }
}
