//! One program, from the reaper's fork to `execve`: DESIGN.md §3 step 7, in its order. Under
//! the rule in `mod.rs`; a failure is a `(stage, errno)` record on the exec-error socket.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::RawFd;

use super::super::proto::{self, ChildError, ExecPlan};
use crate::error::Stage;
use crate::sys;

/// Writes the failure record to the exec-error socket and exits (127 when exec failed, the
/// shell's "not found", else 125).
fn fail(errfd: RawFd, stage: Stage, errno: i32) -> ! {
    let err = ChildError::new(stage, errno, 0);
    let _ = sys::write_all(errfd, proto::as_bytes(&err));
    sys::exit(if stage == Stage::Exec { 127 } else { 125 })
}

/// The program's side: fds are stdin, stdout, stderr, the exec-error socket, the status pipe
/// and the run's cgroup descriptors. `plan` is in memory the parent (sleeping in vfork) keeps
/// alive and unchanged until we exec or exit.
pub(super) fn main(plan: &ExecPlan, fds: &[RawFd]) -> ! {
    let errfd = fds[3];
    macro_rules! step {
        ($e:expr, $stage:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => fail(errfd, $stage, sys::errno_of(&e)),
            }
        };
    }
    // Signals: nothing blocked, every disposition default (the supervisor may ignore SIGPIPE).
    sys::reset_signals();
    // cgroup v1: join the run's cgroups first, so everything below is accounted to it.
    if plan.cgroup_mode == proto::CGROUP_V1_PROCS {
        for &fd in &fds[5..] {
            step!(sys::write_all(fd, b"0"), Stage::Cgroup);
        }
    }
    if plan.affinity_len != 0 {
        let words = (plan.affinity_len as usize / 8).min(plan.affinity.len());
        step!(sys::set_affinity(&plan.affinity[..words]), Stage::Affinity);
    }
    step!(sys::setsid(), Stage::Setsid);

    // stdio: first above 10 (any of them may be 0-2 already), then into place.
    let mut high = [0; 3];
    for i in 0..3 {
        high[i] = step!(sys::dup_above(fds[i], 10), Stage::Stdio);
    }
    for (i, &fd) in high.iter().enumerate() {
        step!(sys::dup_to(fd, i as RawFd, false), Stage::Stdio);
    }
    // A terminal run: the pty slave on 0-2 becomes the new session's controlling terminal, so
    // the line discipline turns ^C and ^Z into signals for the program's process group.
    if plan.tty != 0 {
        step!(sys::set_controlling_tty(0), Stage::Tty);
    }

    // SAFETY: the parent wrote cwd into the region as a NUL-terminated string.
    let cwd = unsafe { CStr::from_ptr(plan.cwd) };
    step!(sys::chdir(cwd), Stage::Chdir);
    for rl in &plan.rlimits[..plan.nrlimits as usize] {
        step!(sys::setrlimit(rl.resource, rl.cur, rl.max), Stage::Rlimit);
    }

    // Credentials with raw syscalls (see `sys::set_uid`); these need CAP_SETUID/CAP_SETGID, so
    // they come before the capabilities are dropped.
    if plan.clear_groups != 0 {
        step!(sys::clear_groups(), Stage::Setgroups);
    }
    step!(sys::set_gid(plan.gid), Stage::Setgid);
    step!(sys::set_uid(plan.uid), Stage::Setuid);
    step!(sys::drop_capabilities(), Stage::Caps);
    step!(sys::set_no_new_privs(), Stage::NoNewPrivs);
    // Mark, don't close: the exec-error socket must survive until execve succeeds.
    step!(
        sys::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC),
        Stage::CloseFds
    );
    // seccomp last: everything above may use syscalls the filter denies.
    if !plan.filter.is_null() {
        load_filter(plan, errfd);
    }
    exec(plan, errfd)
}

/// Loads the seccomp filter; with `notify`, hands its listener to the supervisor through the
/// one syscall the filter's prefix allows: `sendmsg` on `HANDOFF_FD`.
fn load_filter(plan: &ExecPlan, errfd: RawFd) {
    // SAFETY: the parent placed filter_len instructions at filter, in the region.
    let filter = unsafe { std::slice::from_raw_parts(plan.filter, plan.filter_len as usize) };
    let handoff = crate::seccomp::HANDOFF_FD as RawFd;
    let notify = plan.notify != 0;
    if notify {
        if let Err(e) = sys::dup_to(errfd, handoff, true) {
            fail(errfd, Stage::Seccomp, sys::errno_of(&e));
        }
    }
    let flags = if notify {
        sys::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    let listener = match sys::seccomp_set_filter(filter, flags) {
        Ok(fd) => fd,
        Err(e) => fail(errfd, Stage::Seccomp, sys::errno_of(&e)),
    };
    if notify {
        // The listener is close-on-exec, and so is the handoff fd.
        let rec = ChildError::new(Stage::Listener, 0, 0);
        // SAFETY: both descriptors are open in this process until execve.
        let (to, fd) = unsafe { (sys::borrow(handoff), sys::borrow(listener)) };
        if let Err(e) = sys::send_with_fds(to, proto::as_bytes(&rec), &[fd]) {
            fail(errfd, Stage::Seccomp, sys::errno_of(&e));
        }
    }
}

/// The PATH search as data: tries each candidate, keeps the most telling errno.
fn exec(plan: &ExecPlan, errfd: RawFd) -> ! {
    let mut errno = libc::ENOENT;
    let mut p = plan.paths;
    loop {
        // SAFETY: paths is a NULL-terminated array the parent wrote into the region, and p has
        // not passed its NULL.
        let path = unsafe { *p };
        if path.is_null() {
            break;
        }
        // ETXTBSY: a file the supervisor has just written into the work dir (Command::file)
        // can still be open for writing in a process another supervisor thread is forking at
        // that moment (a copy of the fd table lives until that child execs or, for a reaper,
        // closes its fds). The window is short: wait it out, 1 ms at a time, 200 times at most.
        let mut busy = 0;
        let e = loop {
            // SAFETY: path, argv and envp are the NUL- and NULL-terminated strings and arrays
            // the parent wrote into the region.
            let e = unsafe { sys::execve(path, plan.argv, plan.envp) };
            if e != libc::ETXTBSY || busy >= 200 {
                break e;
            }
            busy += 1;
            sys::sleep_ms(1);
        };
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => errno = e,
            _ => {
                errno = e;
                break;
            }
        }
        // SAFETY: path was not the terminating NULL, so the next element is in the array.
        p = unsafe { p.add(1) };
    }
    fail(errfd, Stage::Exec, errno)
}
