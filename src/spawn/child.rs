//! The child side: the instance's reaper (pid 1) and the start of each program.
//!
//! THE RULE OF THIS FILE: everything here runs after `clone` in a copy of a process that may
//! have had other threads. Only async-signal-safe code may run: raw syscalls, reads of memory
//! prepared by the parent, stack buffers. No allocation (no `String`, `Vec`, `format!`, `Box`),
//! no locks, no logging, no panics that unwind (a failure is a fixed-size `ChildError` record
//! sent to the supervisor, then `_exit`). Data comes from the parent as plain structures: the
//! mount plan (`MountPlan`) and the exec plan in the shared region (`ExecPlan`).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::os::raw::c_char;
use std::ptr;

use super::proto::{self, stage, ChildError, ExecPlan, ExitRecord, Reply, Request};
use crate::ns::mount::{Entry, MountKind, MountPlan};
use crate::sys;

/// True in a cloned child (reaper or starting program); read by `crate::in_sandbox_child`
/// so a debug allocator can abort on any allocation there.
pub static IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The control socket's fixed number in the reaper.
const CTRL: RawFd = 3;
/// How many programs one instance may have running at once.
const MAX_PROGRAMS: usize = 64;

/// Everything the reaper needs, prepared by the parent before `clone`.
pub struct ReaperArgs<'a> {
    pub ctrl: RawFd,
    pub plan: &'a MountPlan,
    pub landlock: &'a crate::landlock::Plan,
    pub hostname: &'a CStr,
    pub loopback: bool,
    /// Base of the shared region holding `ExecPlan`s.
    pub region: *const u8,
}

fn send_reply(kind: u32, pid: i32, err: ChildError, fd: Option<RawFd>) {
    let r = Reply { kind, pid, err };
    let fds_storage = [fd.unwrap_or(-1)];
    let fds: &[RawFd] = if fd.is_some() { &fds_storage } else { &[] };
    let _ = sys::send_with_fds(CTRL, proto::as_bytes(&r), fds);
}

fn fail_setup(stage: u32, detail: u32) -> ! {
    let err = ChildError {
        stage,
        errno: sys::errno(),
        detail,
        _pad: 0,
    };
    send_reply(proto::REPLY_SETUP_FAILED, 0, err, None);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(125) }
}

macro_rules! check {
    ($e:expr, $stage:expr) => {
        check!($e, $stage, 0)
    };
    ($e:expr, $stage:expr, $detail:expr) => {
        if $e.is_err() {
            fail_setup($stage, $detail as u32);
        }
    };
}

/// The reaper: sets up the root, then starts, reaps and reports programs until the supervisor
/// goes away. Never returns.
pub fn reaper_main(args: &ReaperArgs<'_>) -> ! {
    IN_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY (whole function): only raw syscalls on fds and memory we own or were given.
    unsafe {
        // Keep exactly the control socket (as fd 3) besides 0-2: another instance's supervisor
        // fds may have been copied into us by a concurrent clone in the same process.
        let tmp = libc::fcntl(args.ctrl, libc::F_DUPFD_CLOEXEC, 64);
        if tmp < 0 || libc::dup3(tmp, CTRL, libc::O_CLOEXEC) < 0 {
            libc::_exit(125);
        }
        if sys::close_range(4, u32::MAX, 0).is_err() {
            libc::_exit(125);
        }
        // Programs can read pid 1's command line and name (/proc/1/cmdline is not behind the
        // ptrace check that guards environ, mem and exe): erase the supervisor's.
        hide_supervisor_identity();

        // Wait until the supervisor has written our id maps.
        let mut buf = [0u8; 64];
        match sys::recv_with_fds(CTRL, &mut buf, &mut []) {
            Ok((n, _)) if n > 0 => {}
            _ => libc::_exit(125),
        }

        // On cgroup v1 the supervisor moved us into the instance's cgroups after the clone,
        // so the cgroup namespace made by the clone is rooted at the supervisor's cgroups and
        // /proc/self/cgroup would show the instance's host path (`/rsandbox-SLOT`). A fresh
        // one, now, is rooted at the instance's own cgroups ("/" inside), as on v2.
        check!(
            sys::cvt(libc::unshare(libc::CLONE_NEWCGROUP)),
            stage::CGROUP_NS
        );

        let host = args.hostname.to_bytes();
        check!(
            sys::cvt(libc::sethostname(host.as_ptr().cast(), host.len())),
            stage::HOSTNAME
        );
        if args.loopback {
            check!(loopback_up(), stage::LOOPBACK);
        }

        let work_fd = setup_root(args.plan);

        // Our own 0-2 are the supervisor's; replace them with /dev/null.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        check!(sys::cvt(null), stage::FDS);
        for fd in 0..3 {
            check!(sys::cvt(libc::dup2(null, fd)), stage::FDS);
        }
        libc::close(null);

        check!(
            sys::cvt(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)),
            stage::DUMPABLE
        );
        if args.landlock.abi > 0 {
            check!(apply_landlock(args.landlock), stage::LANDLOCK);
        }

        // SIGCHLD arrives through a signalfd; SIGPIPE is ignored (a vanished supervisor).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check!(
            sys::cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut())),
            stage::SIGNALS
        );
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let sfd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        check!(sys::cvt(sfd), stage::SIGNALS);

        send_reply(proto::REPLY_READY, 0, ChildError::default(), Some(work_fd));
        libc::close(work_fd);

        serve(args, sfd)
    }
}

/// The reaper is a copy of the supervisor, so `/proc/1/cmdline` inside would show the
/// supervisor's argv (host paths, `--ro`/`--rw` sources, daemon flags) and `/proc/1/comm` its
/// name. Overwrites this copy's argv and environment strings (found through
/// `/proc/self/stat` fields 48-51: arg_start, arg_end, env_start, env_end) with
/// `rsandbox-init` and NULs, and renames the thread. Best effort: a failure leaves them as they
/// were (environ stays unreadable inside either way: the reaper is non-dumpable).
fn hide_supervisor_identity() {
    const NAME: &[u8] = b"rsandbox-init";
    // SAFETY: prctl with a NUL-terminated static string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rsandbox-init".as_ptr(), 0, 0, 0) };
    let mut buf = [0u8; 2048];
    // SAFETY: open/close of a NUL-terminated literal path; read into a stack buffer.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let n = sys::read(fd, &mut buf);
        libc::close(fd);
        match n {
            Ok(n) if n > 0 => n,
            _ => return,
        }
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

/// Mounts the plan and pivots into it; returns an fd of the work dir.
fn setup_root(plan: &MountPlan) -> RawFd {
    let root = plan.root.as_c_str();
    // SAFETY: raw syscalls with NUL-terminated strings from the plan, which outlives us.
    unsafe {
        check!(
            sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
            stage::MOUNT_PRIVATE
        );
        check!(
            sys::mount(Some(root), root, None, libc::MS_BIND, None),
            stage::BIND_ROOT
        );
        let mut work_fd = -1;
        for (i, op) in plan.ops.iter().enumerate() {
            match &op.kind {
                MountKind::Bind { src, recursive } => {
                    let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                    check!(
                        sys::mount(Some(src), &op.dst, None, flags, None),
                        stage::MOUNT,
                        i
                    );
                    if op.attrs != 0 {
                        check!(
                            sys::mount_setattr(&op.dst, *recursive, op.attrs),
                            stage::MOUNT_ATTR,
                            i
                        );
                    }
                }
                MountKind::Fs {
                    fstype,
                    flags,
                    data,
                } => {
                    let data = if data.is_empty() {
                        None
                    } else {
                        Some(data.as_c_str())
                    };
                    check!(
                        sys::mount(Some(fstype), &op.dst, Some(fstype), *flags, data),
                        stage::MOUNT,
                        i
                    );
                }
                MountKind::MkdirP => {
                    let skip = root.to_bytes().len();
                    check!(as_sandbox(|| mkdir_p(&op.dst, skip)), stage::MOUNT, i)
                }
                MountKind::Populate { entries } => {
                    check!(as_sandbox(|| populate(entries)), stage::MOUNT, i)
                }
                MountKind::SetAttr => check!(
                    sys::mount_setattr(&op.dst, false, op.attrs),
                    stage::MOUNT_ATTR,
                    i
                ),
            }
            if op.is_work {
                work_fd = libc::open(
                    op.dst.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                check!(sys::cvt(work_fd), stage::WORK_FD, i);
            }
        }
        check!(
            sys::mount_setattr(root, false, crate::ns::mount::RO_ATTRS),
            stage::ROOT_READONLY
        );
        check!(sys::cvt(libc::chdir(root.as_ptr())), stage::PIVOT_ROOT);
        check!(
            sys::cvt_long(libc::syscall(
                libc::SYS_pivot_root,
                c".".as_ptr(),
                c".".as_ptr()
            )),
            stage::PIVOT_ROOT
        );
        check!(
            sys::cvt(libc::umount2(c".".as_ptr(), libc::MNT_DETACH)),
            stage::DETACH_OLD_ROOT
        );
        check!(sys::cvt(libc::chdir(c"/".as_ptr())), stage::DETACH_OLD_ROOT);
        work_fd
    }
}

/// Builds the Landlock ruleset from the plan and restricts the reaper itself, so every program
/// it starts inherits one domain. Raw syscalls only.
fn apply_landlock(p: &crate::landlock::Plan) -> std::io::Result<()> {
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let attr = RulesetAttr {
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
    // SAFETY: raw landlock syscalls with stack structures and fds we own and close.
    unsafe {
        let ruleset = sys::cvt_long(libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0,
        ))? as RawFd;
        for rule in &p.rules {
            let fd = libc::open(rule.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                continue; // a path this instance does not have (e.g. an absent device)
            }
            let pb = PathBeneath {
                allowed_access: rule.access & p.handled_fs,
                parent_fd: fd,
            };
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset,
                1, /* PATH_BENEATH */
                &pb as *const PathBeneath,
                0,
            );
            libc::close(fd);
            if r < 0 {
                libc::close(ruleset);
                return Err(std::io::Error::last_os_error());
            }
        }
        // Required unless privileged in our namespace (we are); harmless for a process that
        // never execs.
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let r = libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0);
        libc::close(ruleset);
        sys::cvt_long(r).map(drop)
    }
}

/// Runs `work` as the sandbox user, in a vfork-like child: our own uid is unmapped, a tmpfs of
/// this namespace refuses inodes owned by unmapped ids, and an unmapped fsuid could not be set
/// back afterwards (later binds need our own credentials to reach their sources).
fn as_sandbox(work: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    // SAFETY: raw clone without CLONE_VM; the child only runs mkdir_p and _exit.
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_VFORK | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        );
        if pid == 0 {
            libc::syscall(libc::SYS_setfsgid, crate::ns::user::SANDBOX_ID);
            libc::syscall(libc::SYS_setfsuid, crate::ns::user::SANDBOX_ID);
            let code = match work() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO).min(255),
            };
            libc::_exit(code);
        }
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut status = 0;
        if libc::wait4(pid as libc::pid_t, &mut status, 0, ptr::null_mut()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => Ok(()),
            Some(e) => Err(std::io::Error::from_raw_os_error(e)),
            None => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        }
    }
}

/// Creates each entry (a `Populate` op's) in order; raw syscalls on the plan's paths.
fn populate(entries: &[(std::ffi::CString, Entry)]) -> std::io::Result<()> {
    for (path, entry) in entries {
        // SAFETY: NUL-terminated paths from the plan; the fd opened is closed at once.
        let r = unsafe {
            match entry {
                Entry::Dir => libc::mkdir(path.as_ptr(), 0o755),
                Entry::File => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd
                }
                Entry::Symlink(target) => libc::symlink(target.as_ptr(), path.as_ptr()),
            }
        };
        sys::cvt(r)?;
    }
    Ok(())
}

/// `mkdir -p` of `path`'s components after the first `skip` bytes (the template root). The
/// path is copied into a stack buffer; nothing is allocated.
fn mkdir_p(path: &CStr, skip: usize) -> std::io::Result<()> {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let mut i = skip + 1;
    while i <= bytes.len() {
        if i == bytes.len() || buf[i] == b'/' {
            let saved = buf[i];
            buf[i] = 0;
            // SAFETY: buf[..=i] is NUL-terminated.
            let r = unsafe { libc::mkdir(buf.as_ptr().cast(), 0o755) };
            if r < 0 && sys::errno() != libc::EEXIST {
                return Err(std::io::Error::last_os_error());
            }
            buf[i] = saved;
        }
        i += 1;
    }
    Ok(())
}

/// Sets `lo` up with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (no netlink, no allocation).
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: an ifreq on the stack, an AF_INET socket we close before returning.
    unsafe {
        let s = sys::cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as c_char;
        }
        let r = (|| {
            sys::cvt(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr))?;
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as i16;
            sys::cvt(libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr))
        })();
        libc::close(s);
        r.map(drop)
    }
}

/// The reaper's loop: requests from the supervisor, SIGCHLD from the kernel.
fn serve(args: &ReaperArgs<'_>, sfd: RawFd) -> ! {
    // (pid, status-pipe fd) of each running program; pid 0 marks a free slot.
    let mut running = [(0 as libc::pid_t, -1 as RawFd); MAX_PROGRAMS];
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
            // SAFETY: _exit never returns; exiting pid 1 kills the namespace's processes.
            unsafe { libc::_exit(125) }
        }
        if pfds[1].revents != 0 {
            reap(sfd, &mut running);
        }
        if pfds[0].revents != 0 {
            let mut buf = [0u8; 64];
            let mut fds = [-1 as RawFd; 16];
            match sys::recv_with_fds(CTRL, &mut buf, &mut fds) {
                Ok((n, nfds)) if n > 0 => {
                    let req: Option<Request> = proto::from_bytes(&buf[..n]);
                    match req {
                        Some(r) if r.op == proto::OP_EXEC && nfds >= 5 => {
                            start(args, &fds[..nfds], &mut running);
                        }
                        Some(r) if r.op == proto::OP_KILL => {
                            // SAFETY: kill has no memory effects; we are pid 1 of our own namespace.
                            unsafe {
                                if r.pid == -1 {
                                    libc::kill(-1, r.sig);
                                } else {
                                    libc::kill(-r.pid, r.sig);
                                    libc::kill(r.pid, r.sig);
                                }
                            }
                            send_reply(proto::REPLY_DONE, 0, ChildError::default(), None);
                        }
                        _ => {
                            for &fd in &fds[..nfds] {
                                // SAFETY: fds we were just given and own.
                                unsafe { libc::close(fd) };
                            }
                        }
                    }
                }
                // The supervisor is gone (or closed us): exiting pid 1 ends the instance.
                // SAFETY: _exit never returns.
                _ => unsafe { libc::_exit(0) },
            }
        }
    }
}

/// Reaps every exited child; reports the ones the supervisor started.
fn reap(sfd: RawFd, running: &mut [(libc::pid_t, RawFd); MAX_PROGRAMS]) {
    let mut si = [0u8; 128];
    while matches!(sys::read(sfd, &mut si), Ok(n) if n > 0) {}
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data written by wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to stack variables.
        let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut ru) };
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
                // SAFETY: the status pipe's write end, owned by this slot.
                unsafe { libc::close(slot.1) };
                *slot = (0, -1);
            }
        }
    }
}

/// Starts one program (fds: stdin, stdout, stderr, exec-error pipe, status pipe).
fn start(args: &ReaperArgs<'_>, fds: &[RawFd], running: &mut [(libc::pid_t, RawFd); MAX_PROGRAMS]) {
    let close_all = |keep_status: bool| {
        for (i, &fd) in fds.iter().enumerate() {
            if !(keep_status && i == 4) {
                // SAFETY: fds we were given and own.
                unsafe { libc::close(fd) };
            }
        }
    };
    let Some(slot) = running.iter().position(|s| s.0 == 0) else {
        close_all(false);
        let err = ChildError {
            stage: stage::FORK,
            errno: libc::EAGAIN,
            detail: 0,
            _pad: 0,
        };
        send_reply(proto::REPLY_START_FAILED, 0, err, None);
        return;
    };
    // SAFETY: the shared region starts with an ExecPlan the supervisor wrote before sending
    // OP_EXEC, and it does not touch the region again until we reply.
    let plan = unsafe { &*(args.region as *const ExecPlan) };
    // CLONE_VFORK without CLONE_VM: a copy of our memory, and we sleep until the program has
    // called execve or exited, so the supervisor may reuse the region as soon as we reply.
    // SAFETY: raw clone; the child only runs program_main, which ends in execve or _exit.
    // On cgroup v2 the program is born in its run's cgroup (CLONE_INTO_CGROUP): no migration.
    let pid = if plan.cgroup_mode == proto::CGROUP_V2_CLONE_INTO && fds.len() > 5 {
        #[repr(C)]
        struct CloneArgs([u64; 11]);
        // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        // set_tid_size, cgroup
        let args = CloneArgs([
            (libc::CLONE_VFORK as u64) | 0x2_0000_0000, // CLONE_INTO_CGROUP
            0,
            0,
            0,
            libc::SIGCHLD as u64,
            0,
            0,
            0,
            0,
            0,
            fds[5] as u64,
        ]);
        // SAFETY: clone3 without CLONE_VM and without a stack: fork-like; the child only runs
        // program_main, which ends in execve or _exit.
        unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        }
    } else {
        // SAFETY: as above, with the classic clone.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_VFORK | libc::SIGCHLD) as libc::c_ulong,
                0,
                0,
                0,
                0,
            )
        }
    };
    if pid == 0 {
        program_main(plan, fds);
    }
    if pid < 0 {
        let err = ChildError {
            stage: stage::FORK,
            errno: sys::errno(),
            detail: 0,
            _pad: 0,
        };
        close_all(false);
        send_reply(proto::REPLY_START_FAILED, 0, err, None);
        return;
    }
    close_all(true);
    running[slot] = (pid as libc::pid_t, fds[4]);
    send_reply(
        proto::REPLY_STARTED,
        pid as i32,
        ChildError::default(),
        None,
    );
}

fn program_fail(errfd: RawFd, stage: u32, errno: i32) -> ! {
    let err = ChildError {
        stage,
        errno,
        detail: 0,
        _pad: 0,
    };
    let _ = sys::write_all(errfd, proto::as_bytes(&err));
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(if stage == stage::EXEC { 127 } else { 125 }) }
}

/// The program's side, from the fork to `execve`: DESIGN.md §3 step 7, in its order.
fn program_main(plan: &ExecPlan, fds: &[RawFd]) -> ! {
    let errfd = fds[3];
    macro_rules! step {
        ($e:expr, $stage:expr) => {
            if let Err(e) = $e {
                program_fail(errfd, $stage, e.raw_os_error().unwrap_or(0));
            }
        };
    }
    // SAFETY (whole function): raw syscalls on our own fds and on plan memory, which the
    // parent (sleeping in vfork) keeps alive and unchanged until we exec or exit.
    unsafe {
        // Signals: nothing blocked, every disposition default (the supervisor may ignore SIGPIPE).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // cgroup v1: join the run's cgroups first, so everything below is accounted to it.
        if plan.cgroup_mode == proto::CGROUP_V1_PROCS {
            for &fd in &fds[5..] {
                step!(sys::write_all(fd, b"0"), stage::CGROUP);
            }
        }
        if plan.affinity_len != 0 {
            step!(
                sys::cvt_long(libc::syscall(
                    libc::SYS_sched_setaffinity,
                    0,
                    plan.affinity_len as usize,
                    plan.affinity.as_ptr()
                )),
                stage::AFFINITY
            );
        }
        step!(sys::cvt(libc::setsid()), stage::SETSID);

        // stdio: first above 10 (any of them may be 0-2 already), then into place.
        let mut high = [0; 3];
        for i in 0..3 {
            high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 10);
            step!(sys::cvt(high[i]), stage::STDIO);
        }
        for (i, &fd) in high.iter().enumerate() {
            step!(sys::cvt(libc::dup2(fd, i as RawFd)), stage::STDIO);
        }

        step!(sys::cvt(libc::chdir(plan.cwd)), stage::CHDIR);
        for rl in &plan.rlimits[..plan.nrlimits as usize] {
            let lim = libc::rlimit {
                rlim_cur: rl.cur,
                rlim_max: rl.max,
            };
            step!(
                sys::cvt(libc::setrlimit(rl.resource as _, &lim)),
                stage::RLIMIT
            );
        }

        // Raw syscalls, never glibc's wrappers: those broadcast the change to every thread in
        // glibc's list (__nptl_setxid), a list copied from the multi-threaded supervisor, and
        // wait forever on a thread that was being created at the moment of the clone.
        if plan.clear_groups != 0 {
            step!(
                sys::cvt_long(libc::syscall(
                    libc::SYS_setgroups,
                    0,
                    ptr::null::<libc::gid_t>()
                )),
                stage::SETGROUPS
            );
        }
        step!(
            sys::cvt_long(libc::syscall(
                libc::SYS_setresgid,
                plan.gid,
                plan.gid,
                plan.gid
            )),
            stage::SETGID
        );
        step!(
            sys::cvt_long(libc::syscall(
                libc::SYS_setresuid,
                plan.uid,
                plan.uid,
                plan.uid
            )),
            stage::SETUID
        );
        step!(drop_capabilities(), stage::CAPS);
        step!(
            sys::cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
            stage::NO_NEW_PRIVS
        );
        // Mark, don't close: the exec-error pipe must survive until execve succeeds.
        step!(
            sys::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC),
            stage::CLOSE_FDS
        );
        // seccomp last: everything above may use syscalls the filter denies.
        if !plan.filter.is_null() {
            let prog = libc::sock_fprog {
                len: plan.filter_len as u16,
                filter: plan.filter as *mut libc::sock_filter,
            };
            let handoff = crate::seccomp::HANDOFF_FD as RawFd;
            if plan.notify != 0 {
                step!(
                    sys::cvt(libc::dup3(errfd, handoff, libc::O_CLOEXEC)),
                    stage::SECCOMP
                );
            }
            let flags: libc::c_ulong = if plan.notify != 0 { 1 << 3 } else { 0 }; // NEW_LISTENER
            let r = libc::syscall(
                libc::SYS_seccomp,
                1, /* SECCOMP_SET_MODE_FILTER */
                flags,
                &prog as *const libc::sock_fprog,
            );
            step!(sys::cvt_long(r), stage::SECCOMP);
            if plan.notify != 0 {
                // The one syscall the prefix allows: sendmsg on the handoff fd. The listener is
                // close-on-exec, and so is the handoff fd.
                let rec = ChildError {
                    stage: stage::LISTENER,
                    errno: 0,
                    detail: 0,
                    _pad: 0,
                };
                step!(
                    sys::send_with_fds(handoff, proto::as_bytes(&rec), &[r as RawFd]),
                    stage::SECCOMP
                );
            }
        }

        // PATH search as data: try each candidate, keep the most telling errno.
        let mut errno = libc::ENOENT;
        let mut p = plan.paths;
        while !(*p).is_null() {
            // ETXTBSY: a file the supervisor has just written into the work dir (Command::file)
            // can still be open for writing in a process another supervisor thread is forking at
            // that moment (a copy of the fd table lives until that child execs or, for a reaper,
            // closes its fds). The window is microseconds: wait it out, up to 200 ms.
            let mut busy = 0;
            while libc::execve(*p, plan.argv, plan.envp) < 0
                && sys::errno() == libc::ETXTBSY
                && busy < 200
            {
                busy += 1;
                let ms = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                libc::nanosleep(&ms, ptr::null_mut());
            }
            let e = sys::errno();
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => errno = e,
                _ => {
                    errno = e;
                    break;
                }
            }
            p = p.add(1);
        }
        program_fail(errfd, stage::EXEC, errno)
    }
}

/// Empties the bounding, ambient, permitted, effective and inheritable sets.
fn drop_capabilities() -> std::io::Result<()> {
    // SAFETY: prctl/capget-style calls with stack structures.
    unsafe {
        // Up to the first capability the kernel does not know (EINVAL): 41 on 6.x.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                if sys::errno() == libc::EINVAL {
                    break;
                }
                return Err(std::io::Error::last_os_error());
            }
        }
        sys::cvt(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
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
        let hdr = Header {
            version: 0x20080522,
            pid: 0,
        }; // _LINUX_CAPABILITY_VERSION_3
        let data = [
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        sys::cvt_long(libc::syscall(
            libc::SYS_capset,
            &hdr as *const Header,
            data.as_ptr(),
        ))?;
    }
    Ok(())
}
