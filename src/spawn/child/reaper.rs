//! The reaper (pid 1 of an instance): its setup after `clone`, then its loop of starting,
//! signalling and reaping programs for the supervisor. Under the rule in `mod.rs`.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::ptr;

use super::super::proto::{self, ChildError, ExecPlan, ExitRecord, Request};
use super::{ctrl, program, root, send_reply, ReaperArgs, CTRL, IN_CHILD};
use crate::error::Stage;
use crate::sys;

/// How many programs one instance may have running at once.
const MAX_PROGRAMS: usize = 64;

/// (pid, status-pipe fd) of each running program; pid 0 marks a free slot.
type Running = [(libc::pid_t, RawFd); MAX_PROGRAMS];

/// The reaper: sets up the root, then starts, reaps and reports programs until the supervisor
/// goes away. Never returns.
pub fn reaper_main(args: &ReaperArgs<'_>) -> ! {
    IN_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
    // Handlers the supervisor installed (tokio's for SIGTERM in the daemon, SIGWINCH and others
    // in the terminal relay) were copied into us, and would run here if a program signalled
    // pid 1 (which only gets signals it handles), writing to descriptor numbers that now mean
    // something else: every disposition back to the default, nothing blocked.
    sys::reset_signals();
    // Keep exactly the control socket (as fd 3) besides 0-2: another instance's supervisor
    // fds may have been copied into us by a concurrent clone in the same process.
    let moved = sys::dup_above(args.ctrl, 64).and_then(|tmp| sys::dup_to(tmp, CTRL, true));
    if moved.is_err() || sys::close_range(4, u32::MAX, 0).is_err() {
        sys::exit(125);
    }
    // Programs can read pid 1's command line and name (/proc/1/cmdline is not behind the
    // ptrace check that guards environ, mem and exe): erase the supervisor's.
    hide_supervisor_identity();

    // Wait until the supervisor has written our id maps.
    let mut buf = [0u8; 64];
    match sys::recv_with_fds(ctrl(), &mut buf, &mut []) {
        Ok((n, _)) if n > 0 => {}
        _ => sys::exit(125),
    }

    // On cgroup v1 the supervisor moved us into the instance's cgroups after the clone,
    // so the cgroup namespace made by the clone is rooted at the supervisor's cgroups and
    // /proc/self/cgroup would show the instance's host path (`/rsandbox-SLOT`). A fresh
    // one, now, is rooted at the instance's own cgroups ("/" inside), as on v2.
    check!(sys::unshare(libc::CLONE_NEWCGROUP), Stage::CgroupNs);
    check!(sys::sethostname(args.hostname.to_bytes()), Stage::Hostname);
    if args.loopback {
        check!(sys::loopback_up(), Stage::Loopback);
    }

    let work_fd = root::setup_root(args.plan);

    // Our own 0-2 are the supervisor's; replace them with /dev/null.
    let null = check!(sys::open(c"/dev/null", libc::O_RDWR, 0), Stage::Fds);
    for fd in 0..3 {
        check!(sys::dup_to(null, fd, false), Stage::Fds);
    }
    sys::close(null);

    check!(sys::set_dumpable(false), Stage::Dumpable);
    if args.landlock.abi > 0 {
        check!(
            crate::landlock::restrict_self(args.landlock),
            Stage::Landlock
        );
    }

    // SIGCHLD arrives through a signalfd; SIGPIPE is ignored (a vanished supervisor).
    let sfd = check!(sys::signalfd_for(libc::SIGCHLD), Stage::Signals);
    sys::ignore_signal(libc::SIGPIPE);

    send_reply(proto::REPLY_READY, 0, ChildError::default(), Some(work_fd));
    sys::close(work_fd);

    serve(args, sfd)
}

/// The reaper is a copy of the supervisor, so `/proc/1/cmdline` inside would show the
/// supervisor's argv (host paths, `--ro`/`--rw` sources, daemon flags) and `/proc/1/comm` its
/// name. Overwrites this copy's argv and environment strings (found through
/// `/proc/self/stat` fields 48-51: arg_start, arg_end, env_start, env_end) with
/// `rsandbox-init` and NULs, and renames the thread. Best effort: a failure leaves them as they
/// were (environ stays unreadable inside either way: the reaper is non-dumpable).
fn hide_supervisor_identity() {
    const NAME: &[u8] = b"rsandbox-init";
    sys::set_name(c"rsandbox-init");
    let mut buf = [0u8; 2048];
    let Ok(fd) = sys::open(c"/proc/self/stat", libc::O_RDONLY, 0) else {
        return;
    };
    let n = sys::read(fd, &mut buf);
    sys::close(fd);
    let n = match n {
        Ok(n) if n > 0 => n,
        _ => return,
    };
    let stat = &buf[..n];
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return;
    };
    let mut fields = [0usize; 4];
    for (i, word) in stat[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        if let Some(k) = (i + 3).checked_sub(48).filter(|&k| k < 4) {
            let mut v = 0usize;
            for &d in word {
                if !d.is_ascii_digit() {
                    return;
                }
                v = v.wrapping_mul(10).wrapping_add((d - b'0') as usize);
            }
            fields[k] = v;
        }
    }
    let [arg_start, arg_end, env_start, env_end] = fields;
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if start == 0 || end <= start {
            continue;
        }
        // SAFETY: [start, end) is this process's own argv/environment string area on its
        // initial stack, mapped and writable; this copy of the memory is ours alone (clone
        // without CLONE_VM), so the supervisor's strings are untouched.
        unsafe { ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
    if arg_end > arg_start + NAME.len() {
        // SAFETY: as above; NAME fits with room for its NUL, which write_bytes left.
        unsafe { ptr::copy_nonoverlapping(NAME.as_ptr(), arg_start as *mut u8, NAME.len()) };
    }
}

/// The reaper's loop: requests from the supervisor, SIGCHLD from the kernel.
fn serve(args: &ReaperArgs<'_>, sfd: RawFd) -> ! {
    let mut running: Running = [(0, -1); MAX_PROGRAMS];
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: CTRL,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut pfds, -1).is_err() {
            // Exiting pid 1 kills the namespace's processes.
            sys::exit(125);
        }
        if pfds[1].revents != 0 {
            reap(sfd, &mut running);
        }
        if pfds[0].revents != 0 {
            let mut buf = [0u8; 64];
            let mut fds = [-1 as RawFd; sys::MAX_FDS];
            match sys::recv_with_fds(ctrl(), &mut buf, &mut fds) {
                Ok((n, nfds)) if n > 0 => {
                    let req: Option<Request> = proto::from_bytes(&buf[..n]);
                    match req {
                        Some(r) if r.op == proto::OP_EXEC && nfds >= 5 => {
                            start(args, &fds[..nfds], &mut running);
                        }
                        Some(r) if r.op == proto::OP_KILL => {
                            // We are pid 1 of our own namespace: -1 is every process in it.
                            if r.pid == -1 {
                                let _ = sys::kill(-1, r.sig);
                            } else {
                                let _ = sys::kill(-r.pid, r.sig);
                                let _ = sys::kill(r.pid, r.sig);
                            }
                            send_reply(proto::REPLY_DONE, 0, ChildError::default(), None);
                        }
                        Some(r) if r.op == proto::OP_OPEN_PTY => {
                            fds[..nfds].iter().for_each(|&fd| sys::close(fd));
                            open_pty();
                        }
                        _ => fds[..nfds].iter().for_each(|&fd| sys::close(fd)),
                    }
                }
                // The supervisor is gone (or closed us): exiting pid 1 ends the instance.
                _ => sys::exit(0),
            }
        }
    }
}

/// Opens a new pty of the instance's own devpts and hands its master to the supervisor. Done
/// here, inside the instance's mount namespace, because the supervisor cannot reach that devpts
/// by path (the reaper is non-dumpable, so `/proc/PID/root` is closed to an unprivileged
/// supervisor) and no pty of the host may be used.
fn open_pty() {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    match sys::open(c"/dev/pts/ptmx", flags, 0) {
        Ok(fd) => {
            send_reply(proto::REPLY_DONE, 0, ChildError::default(), Some(fd));
            sys::close(fd);
        }
        Err(e) => {
            let err = ChildError::new(Stage::Pty, sys::errno_of(&e), 0);
            send_reply(proto::REPLY_START_FAILED, 0, err, None);
        }
    }
}

/// Reaps every exited child; reports the ones the supervisor started.
fn reap(sfd: RawFd, running: &mut Running) {
    let mut si = [0u8; 128];
    while matches!(sys::read(sfd, &mut si), Ok(n) if n > 0) {}
    while let Ok((pid, status, ru)) = sys::wait4(-1, libc::WNOHANG) {
        if pid <= 0 {
            return;
        }
        for slot in running.iter_mut() {
            if slot.0 == pid {
                let rec = ExitRecord {
                    status,
                    _pad: 0,
                    utime_us: ru.ru_utime.tv_sec * 1_000_000 + ru.ru_utime.tv_usec,
                    stime_us: ru.ru_stime.tv_sec * 1_000_000 + ru.ru_stime.tv_usec,
                    maxrss_kb: ru.ru_maxrss,
                };
                let _ = sys::write_all(slot.1, proto::as_bytes(&rec));
                sys::close(slot.1);
                *slot = (0, -1);
            }
        }
    }
}

/// Starts one program (fds: stdin, stdout, stderr, exec-error socket, status pipe, then the
/// run's cgroup descriptors).
fn start(args: &ReaperArgs<'_>, fds: &[RawFd], running: &mut Running) {
    let close_all = |keep_status: bool| {
        for (i, &fd) in fds.iter().enumerate() {
            if !(keep_status && i == 4) {
                sys::close(fd);
            }
        }
    };
    let Some(slot) = running.iter().position(|s| s.0 == 0) else {
        close_all(false);
        let err = ChildError::new(Stage::Fork, libc::EAGAIN, 0);
        send_reply(proto::REPLY_START_FAILED, 0, err, None);
        return;
    };
    // SAFETY: the shared region starts with an ExecPlan the supervisor wrote before sending
    // OP_EXEC, and it does not touch the region again until we reply.
    let plan = unsafe { &*(args.region as *const ExecPlan) };
    // CLONE_VFORK without CLONE_VM: a copy of our memory, and we sleep until the program has
    // called execve or exited, so the supervisor may reuse the region as soon as we reply.
    // On cgroup v2 the program is born in its run's cgroup (CLONE_INTO_CGROUP): no migration.
    let pid = if plan.cgroup_mode == proto::CGROUP_V2_CLONE_INTO && fds.len() > 5 {
        let mut clone = sys::CloneArgs::fork(libc::CLONE_VFORK as u64, Some(fds[5]));
        // SAFETY: a fork-like clone3 with no pointers in its arguments; the child only runs
        // program::main, which ends in execve or _exit.
        unsafe { sys::clone3(&mut clone) }
    } else {
        // SAFETY: as above, with the classic clone.
        unsafe { sys::clone_classic(libc::CLONE_VFORK) }
    };
    match pid {
        Ok(0) => program::main(plan, fds),
        Ok(pid) => {
            close_all(true);
            running[slot] = (pid, fds[4]);
            send_reply(proto::REPLY_STARTED, pid, ChildError::default(), None);
        }
        Err(e) => {
            let err = ChildError::new(Stage::Fork, sys::errno_of(&e), 0);
            close_all(false);
            send_reply(proto::REPLY_START_FAILED, 0, err, None);
        }
    }
}
