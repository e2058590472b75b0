//! The fixed-size records exchanged between the supervisor, the reaper and a starting program.
//!
//! Everything here is `repr(C)` plain data, written and read whole with one syscall, so the
//! child side can use it without allocating or parsing.

use std::os::raw::c_char;

use crate::error::Stage;

/// What went wrong and where, as the child side reports it: `(stage, errno, detail)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChildError {
    /// A `Stage` as its number (every bit pattern must be a valid record).
    pub stage: u32,
    pub errno: i32,
    /// Stage-specific: the index of the mount op that failed, for example.
    pub detail: u32,
    pub _pad: u32,
}

impl ChildError {
    pub const fn new(stage: Stage, errno: i32, detail: u32) -> ChildError {
        ChildError {
            stage: stage as u32,
            errno,
            detail,
            _pad: 0,
        }
    }

    /// The stage the record names.
    pub fn stage(&self) -> Stage {
        Stage::from_raw(self.stage)
    }
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
/// Open the instance's `/dev/pts/ptmx` (a new pty of its own devpts) and reply `REPLY_DONE`
/// with the master attached, or `REPLY_START_FAILED` with the errno.
pub const OP_OPEN_PTY: u32 = 4;

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
    /// stdin, stdout and stderr are one pty slave: make it the controlling terminal (after
    /// `setsid`).
    pub tty: u32,
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
