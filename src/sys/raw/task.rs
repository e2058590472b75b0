//! The process: clone, credentials and capabilities, signals, limits, seccomp, execve.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;
use std::ptr;

use super::{cvt, cvt_long, errno};

/// `CLONE_INTO_CGROUP` (clone3 only; libc does not name it): the child starts in the cgroup
/// whose directory descriptor is `CloneArgs::cgroup`.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

impl CloneArgs {
    /// Fork-like: no `CLONE_VM`, no new stack, `SIGCHLD` on exit; `flags` added, and with a
    /// cgroup directory descriptor `CLONE_INTO_CGROUP` into it.
    pub fn fork(flags: u64, cgroup: Option<RawFd>) -> CloneArgs {
        let mut args = CloneArgs {
            flags,
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        if let Some(fd) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = fd as u64;
        }
        args
    }
}

/// `clone3(2)`: 0 in the child, the child's pid in the parent. rustix has no wrapper (a
/// fork-like clone cannot be made safe).
///
/// # Safety
/// `args` must describe a fork-like clone (no `CLONE_VM`, no stack) and any pointer in it
/// (`pidfd`) must be valid. In the child only async-signal-safe code may run (the caller may be
/// multi-threaded: another thread may hold the allocator's lock), and it must end in `execve`
/// or `_exit`.
pub unsafe fn clone3(args: &mut CloneArgs) -> io::Result<libc::pid_t> {
    // SAFETY: the caller's contract; args is live and correctly sized.
    let r = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    Ok(r as libc::pid_t)
}

/// The classic `clone(2)`, fork-like (no `CLONE_VM`, no new stack), with `flags` (a
/// `CLONE_VFORK`, say) and `SIGCHLD` on exit: 0 in the child, its pid in the parent.
///
/// # Safety
/// As for `clone3`.
pub unsafe fn clone_classic(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: the caller's contract; no pointers are passed.
    let r = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    })?;
    Ok(r as libc::pid_t)
}

/// Where a fork-like clone returned.
pub enum Forked {
    /// In the new child.
    Child,
    /// In the parent: the child's pid and a pidfd for it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// `clone3` without `CLONE_VM` and without a new stack: the child continues on a copy of the
/// caller's address space, like `fork`, but with namespace flags, a pidfd, and optionally
/// `CLONE_INTO_CGROUP`. Unlike glibc's `fork` it runs no atfork handlers and takes no locks.
///
/// # Safety
/// In the child only async-signal-safe code may run (the caller may be multi-threaded: another
/// thread may hold the allocator's lock), and the child must end in `execve` or `_exit`.
pub unsafe fn clone_fork(flags: u64, cgroup_fd: Option<RawFd>) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs::fork(flags | libc::CLONE_PIDFD as u64, cgroup_fd);
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    // SAFETY: fork-like args whose pidfd pointer is a live local; the caller keeps the rule.
    match unsafe { clone3(&mut args) }? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid,
            // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// `prctl(2)` with integer arguments.
fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here take integers, not pointers.
    cvt(unsafe { libc::prctl(op, arg, 0, 0, 0) }).map(drop)
}

/// `PR_SET_NAME`: this thread's name (`comm`), truncated by the kernel to 15 bytes.
pub fn set_name(name: &CStr) {
    // SAFETY: a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// `PR_SET_DUMPABLE`.
pub fn set_dumpable(on: bool) -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong)
}

/// `PR_SET_NO_NEW_PRIVS`.
pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// `PR_SET_PDEATHSIG`: `sig` when the parent thread dies.
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong)
}

/// `getppid(2)`.
pub fn parent_pid() -> i32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
}

/// Empties the bounding, ambient, permitted, effective and inheritable capability sets.
pub fn drop_capabilities() -> io::Result<()> {
    // Up to the first capability the kernel does not know (EINVAL).
    for cap in 0..64 {
        if let Err(e) = prctl(libc::PR_CAPBSET_DROP, cap) {
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let hdr = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let empty = || Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [empty(), empty()];
    // SAFETY: a version-3 header and the two data words it expects, all live locals.
    cvt_long(unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) })
        .map(drop)
}

// Credentials: raw syscalls, never glibc's wrappers: those broadcast the change to every thread
// in glibc's list (__nptl_setxid), a list copied from the multi-threaded supervisor, and wait
// forever on a thread that was being created at the moment of the clone.

/// `setgroups(0, NULL)`: no supplementary groups.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: an empty list; the null pointer is never read.
    cvt_long(unsafe { libc::syscall(libc::SYS_setgroups, 0, ptr::null::<libc::gid_t>()) }).map(drop)
}

/// `setresgid(2)` with all three ids `gid`.
pub fn set_gid(gid: u32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// `setresuid(2)` with all three ids `uid`.
pub fn set_uid(uid: u32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// `setfsuid(2)` and `setfsgid(2)` of this thread, the raw syscalls; cannot report failure.
pub fn set_fs_ids(uid: u32, gid: u32) {
    // SAFETY: no memory is involved.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
}

/// `setsid(2)`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// `ioctl(fd, TIOCSCTTY, 0)`: the terminal on `fd` becomes the controlling terminal of this
/// session (whose leader the caller must be, just after `setsid`).
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller's descriptor, open for the call.
    rustix::process::ioctl_tiocsctty(unsafe { super::borrow(fd) }).map_err(Into::into)
}

/// `setrlimit(2)`.
pub fn setrlimit(resource: u32, cur: u64, max: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: a live rlimit local.
    cvt(unsafe { libc::setrlimit(resource as _, &lim) }).map(drop)
}

/// `sched_setaffinity(2)` of this thread to the CPU mask `mask`.
pub fn set_affinity(mask: &[u64]) -> io::Result<()> {
    // SAFETY: a live mask of the stated byte length.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            0,
            std::mem::size_of_val(mask),
            mask.as_ptr(),
        )
    })
    .map(drop)
}

/// A signal set holding `sigs`.
fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset then initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a live sigset_t local and valid signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks `sig` and returns a close-on-exec, non-blocking signalfd that reads it.
pub fn signalfd_for(sig: i32) -> io::Result<RawFd> {
    let set = sigset(&[sig]);
    // SAFETY: a live sigset_t; the old mask is not asked for.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut()) })?;
    // SAFETY: a live sigset_t; -1 asks for a new descriptor.
    cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
}

/// Ignores `sig` (`SIG_IGN`).
pub fn ignore_signal(sig: i32) {
    // SAFETY: SIG_IGN is not a handler: no code of ours runs on the signal.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}

/// Unblocks every signal and sets every disposition back to the default.
pub fn reset_signals() {
    let empty = sigset(&[]);
    // SAFETY: a live, empty sigset_t; the old mask is not asked for.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) };
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            default_signal(sig);
        }
    }
}

/// Sets `sig`'s disposition back to the default.
pub fn default_signal(sig: i32) {
    // SAFETY: SIG_DFL is not a handler: no code of ours runs on the signal.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;

/// `seccomp(SECCOMP_SET_MODE_FILTER)` of `filter` with `flags`; returns the listener's
/// descriptor with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0.
pub fn seccomp_set_filter(filter: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<RawFd> {
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at the live filter of the stated length; the kernel copies it.
    let r = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    })?;
    Ok(r as RawFd)
}

/// `execve(2)`; returns only on failure, with its errno.
///
/// # Safety
/// `argv` and `envp` must be valid NULL-terminated arrays of NUL-terminated strings.
pub unsafe fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> i32 {
    // SAFETY: the caller's contract; path is NUL-terminated by the same contract.
    unsafe { libc::execve(path, argv, envp) };
    errno()
}

/// Sleeps for `ms` milliseconds (`nanosleep(2)`; a signal may cut it short).
pub fn sleep_ms(ms: u32) {
    let t = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: (ms % 1000) as libc::c_long * 1_000_000,
    };
    // SAFETY: a live timespec; the remainder is not asked for.
    unsafe { libc::nanosleep(&t, ptr::null_mut()) };
}
