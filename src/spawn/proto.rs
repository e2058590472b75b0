//! The fixed-size records exchanged between the supervisor, the reaper and a starting program.
//!
//! Everything here is `repr(C)` plain data, written and read whole with one syscall, so the
//! child side can use it without allocating or parsing.

use std::os::raw::c_char;

/// What went wrong and where, as the child side reports it: `(stage, errno, detail)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChildError {
    pub stage: u32,
    pub errno: i32,
    /// Stage-specific: the index of the mount op that failed, for example.
    pub detail: u32,
    pub _pad: u32,
}

/// Supervisor -> reaper.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Request {
    pub op: u32,
    pub pid: i32,
    pub sig: i32,
    pub _pad: u32,
}

pub const OP_GO: u32 = 1;
/// Start the program described in the shared region; 5 fds attached: stdin, stdout, stderr,
/// the exec-error pipe and the exit-status pipe.
pub const OP_EXEC: u32 = 2;
/// `kill(-pid, sig)` then `kill(pid, sig)` inside the instance; pid -1 means every process.
pub const OP_KILL: u32 = 3;

/// Reaper -> supervisor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Reply {
    pub kind: u32,
    pub pid: i32,
    pub err: ChildError,
}

/// Setup done; the work directory's fd is attached.
pub const REPLY_READY: u32 = 1;
pub const REPLY_SETUP_FAILED: u32 = 2;
pub const REPLY_STARTED: u32 = 3;
pub const REPLY_START_FAILED: u32 = 4;
pub const REPLY_DONE: u32 = 5;

/// Written by the reaper to a program's status pipe when it reaps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRecord {
    /// Raw wait status.
    pub status: i32,
    pub _pad: i32,
    pub utime_us: i64,
    pub stime_us: i64,
    pub maxrss_kb: i64,
}

/// The stages a child reports failures from. Names are in `stage_name`.
pub mod stage {
    pub const WAIT_GO: u32 = 1;
    pub const FDS: u32 = 2;
    pub const HOSTNAME: u32 = 3;
    pub const LOOPBACK: u32 = 4;
    pub const MOUNT_PRIVATE: u32 = 5;
    pub const BIND_ROOT: u32 = 6;
    pub const MOUNT: u32 = 7;
    pub const MOUNT_ATTR: u32 = 8;
    pub const WORK_FD: u32 = 9;
    pub const ROOT_READONLY: u32 = 10;
    pub const PIVOT_ROOT: u32 = 11;
    pub const DETACH_OLD_ROOT: u32 = 12;
    pub const DUMPABLE: u32 = 13;
    pub const SIGNALS: u32 = 14;
    pub const FORK: u32 = 20;
    pub const STDIO: u32 = 21;
    pub const SETSID: u32 = 22;
    pub const CHDIR: u32 = 23;
    pub const RLIMIT: u32 = 24;
    pub const SETGROUPS: u32 = 25;
    pub const SETGID: u32 = 26;
    pub const SETUID: u32 = 27;
    pub const CAPS: u32 = 28;
    pub const NO_NEW_PRIVS: u32 = 29;
    pub const CLOSE_FDS: u32 = 30;
    pub const EXEC: u32 = 31;
    pub const SECCOMP: u32 = 32;
    /// Not a failure: the record carries the seccomp listener fd.
    pub const LISTENER: u32 = 33;
    pub const LANDLOCK: u32 = 15;
    pub const CGROUP_NS: u32 = 16;
    pub const CGROUP: u32 = 34;
    pub const AFFINITY: u32 = 35;
}

/// A stage's name for error messages and `{"error": {"stage": ...}}`.
pub fn stage_name(s: u32) -> &'static str {
    use stage::*;
    match s {
        WAIT_GO => "wait-for-supervisor",
        FDS => "fds",
        HOSTNAME => "hostname",
        LOOPBACK => "loopback",
        MOUNT_PRIVATE => "mount-private",
        BIND_ROOT => "bind-root",
        MOUNT => "mount",
        MOUNT_ATTR => "mount-setattr",
        WORK_FD => "work-dir",
        ROOT_READONLY => "root-readonly",
        PIVOT_ROOT => "pivot-root",
        DETACH_OLD_ROOT => "detach-old-root",
        DUMPABLE => "dumpable",
        SIGNALS => "signals",
        FORK => "fork",
        STDIO => "stdio",
        SETSID => "setsid",
        CHDIR => "chdir",
        RLIMIT => "rlimit",
        SETGROUPS => "setgroups",
        SETGID => "setgid",
        SETUID => "setuid",
        CAPS => "capabilities",
        NO_NEW_PRIVS => "no-new-privs",
        CLOSE_FDS => "close-fds",
        EXEC => "exec",
        SECCOMP => "seccomp",
        LANDLOCK => "landlock",
        CGROUP_NS => "cgroup-namespace",
        CGROUP => "cgroup",
        AFFINITY => "cpu-affinity",
        _ => "unknown",
    }
}

/// One resource limit for the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Rlimit {
    pub resource: u32,
    pub cur: u64,
    pub max: u64,
}

pub const MAX_RLIMITS: usize = 8;

/// How to start one program; lives at the start of the shared region, with every string and
/// pointer array it points to placed after it in the same region.
#[repr(C)]
pub struct ExecPlan {
    /// NULL-terminated.
    pub argv: *const *const c_char,
    /// NULL-terminated.
    pub envp: *const *const c_char,
    /// Candidate paths for argv[0], tried in order (PATH search done as data). NULL-terminated.
    pub paths: *const *const c_char,
    pub cwd: *const c_char,
    pub uid: u32,
    pub gid: u32,
    /// Whether to clear supplementary groups (not allowed, and not needed, when unprivileged).
    pub clear_groups: u32,
    pub nrlimits: u32,
    pub rlimits: [Rlimit; MAX_RLIMITS],
    /// The seccomp program (in the region), loaded last before execve; null for none.
    pub filter: *const libc::sock_filter,
    pub filter_len: u32,
    /// Load with SECCOMP_FILTER_FLAG_NEW_LISTENER and hand the listener over.
    pub notify: u32,
    /// How the program joins its run's cgroup: 0 not at all, 1 (v1) by writing "0" to each
    /// cgroup.procs fd passed after the five standard ones, 2 (v2) by being cloned into the
    /// directory fd passed there.
    pub cgroup_mode: u32,
    /// CPU affinity (a cpu_set_t); `affinity_len` 0 leaves it alone.
    pub affinity: [u64; 16],
    pub affinity_len: u32,
}

pub const CGROUP_NONE: u32 = 0;
pub const CGROUP_V1_PROCS: u32 = 1;
pub const CGROUP_V2_CLONE_INTO: u32 = 2;

/// Views a plain-data record as bytes for one `write`/`send`.
pub fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    #[allow(unsafe_code)]
    // SAFETY: T is Copy plain data; reading its bytes is always valid.
    unsafe {
        std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

/// Reads a plain-data record back from bytes; `None` unless exactly the right size.
pub fn from_bytes<T: Copy + Default>(b: &[u8]) -> Option<T> {
    if b.len() != std::mem::size_of::<T>() {
        return None;
    }
    let mut v = T::default();
    #[allow(unsafe_code)]
    // SAFETY: the records are Copy plain data made only of integers, so every bit pattern is a
    // valid value, and the length was checked above.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), b.len());
    }
    Some(v)
}
