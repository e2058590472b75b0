//! The only code that forks: creating an instance's reaper and starting programs through it.
//!
//! Parent side here (may allocate, returns rich errors); the child side, which may not, is in
//! `child/`. The supervisor talks to the reaper over a `SOCK_SEQPACKET` pair with fixed-size
//! records (`proto.rs`) and hands it exec plans through a shared region (`plan.rs`).
#![allow(unsafe_code)]

pub(crate) mod child;
pub mod fork_server;
pub(crate) mod plan;
pub(crate) mod proto;
pub(crate) mod wait;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result, Stage};
use crate::ns::mount::MountPlan;
use crate::ns::user::IdMap;
use crate::sys::host::SharedRegion;
use crate::sys::{self, Forked};
use proto::{ChildError, Reply, Request};

/// The namespaces every instance gets.
pub const NS_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// A running reaper, as the supervisor holds it.
pub struct Reaper {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub ctrl: OwnedFd,
    pub region: SharedRegion,
    /// The region's address in the reaper (where the exec plan's pointers point).
    pub region_at: usize,
    /// The work directory (an `O_PATH` fd onto the instance's tmpfs).
    pub work: OwnedFd,
    /// The egress proxy's listening sockets inside the instance (HTTP, SOCKS5), when asked for.
    #[cfg_attr(not(feature = "egress"), allow(dead_code))]
    pub listeners: Option<(OwnedFd, OwnedFd)>,
}

/// Settings for one reaper.
pub struct ReaperSpec<'a> {
    pub plan: &'a MountPlan,
    pub landlock: &'a crate::landlock::Plan,
    pub ids: IdMap,
    pub hostname: &'a CStr,
    pub loopback: bool,
    /// Listening sockets for the egress proxy (implies `loopback`).
    pub proxy: bool,
}

/// Turns a child's `(stage, errno)` record into an error naming the mount where there is one.
pub fn setup_error(plan: &MountPlan, err: ChildError) -> Error {
    let detail = match err.stage() {
        Stage::Mount | Stage::MountAttr | Stage::WorkFd => plan
            .ops
            .get(err.detail as usize)
            .map(|op| op.inside.clone())
            .unwrap_or_default(),
        Stage::ProxySocket => format!("127.0.0.1:{}", err.detail),
        _ => String::new(),
    };
    Error::Setup {
        stage: err.stage(),
        detail,
        source: io::Error::from_raw_os_error(err.errno),
    }
}

/// How long the reaper may take to answer a request (start a program, signal): it only forks,
/// so anything near this means it is stuck, and the instance is killed rather than waited on.
pub const REPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one request (with fds) and reads the reaper's reply (and its fds, if any).
pub fn call(
    ctrl: BorrowedFd<'_>,
    req: Request,
    fds: &[BorrowedFd<'_>],
) -> Result<(Reply, Vec<OwnedFd>)> {
    sys::send_with_fds(ctrl, proto::as_bytes(&req), fds).map_err(|_| Error::Gone)?;
    let mut pfd = [libc::pollfd {
        fd: ctrl.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = REPLY_DEADLINE.as_millis() as i32;
    if sys::poll(&mut pfd, ms).map_err(|e| Error::io("waiting for the reaper", None, e))? == 0 {
        return Err(Error::Setup {
            stage: Stage::Reaper,
            detail: String::new(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no answer from the instance's reaper in {}s",
                    REPLY_DEADLINE.as_secs()
                ),
            ),
        });
    }
    recv_reply(ctrl)
}

fn recv_reply(ctrl: BorrowedFd<'_>) -> Result<(Reply, Vec<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let mut fds = [-1; 3];
    let (n, nfds) = sys::recv_with_fds(ctrl, &mut buf, &mut fds).map_err(|_| Error::Gone)?;
    let fds = fds[..nfds]
        .iter()
        // SAFETY: recv_with_fds returned nfds new descriptors that we now own, each taken once.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let reply: Reply = proto::from_bytes(&buf[..n]).ok_or(Error::Gone)?;
    Ok((reply, fds))
}

/// Clones the reaper into fresh namespaces, maps its ids, lets it build the root, and waits
/// until it is ready. On any failure the child is killed and reaped before returning.
pub fn start_reaper(
    spec: &ReaperSpec<'_>,
    cgroup: Option<RawFd>,
    after_clone: &mut dyn FnMut(i32) -> Result<()>,
) -> Result<Reaper> {
    // A memfd only for the fork server, which must map it too; our own clone inherits the
    // mapping (two syscalls fewer).
    let (region, region_fd) = if fork_server::active() {
        SharedRegion::with_fd(plan::REGION_LEN).map(|(r, fd)| (r, Some(fd)))
    } else {
        SharedRegion::new(plan::REGION_LEN).map(|r| (r, None))
    }
    .map_err(|e| Error::io("mapping the exec region", None, e))?;
    let (ctrl, child_ctrl) =
        sys::seqpacket_pair().map_err(|e| Error::io("creating the control socket", None, e))?;
    let served = region_fd.as_ref().and_then(|region_fd| {
        // SAFETY: the cgroup descriptor is the caller's, open for the whole call.
        let cgroup = cgroup.map(|fd| unsafe { sys::borrow(fd) });
        let mut fds = vec![child_ctrl.as_fd(), region_fd.as_fd()];
        fds.extend(cgroup);
        fork_server::clone_reaper(spec, &fds)
    });
    let cloned = match served {
        Some(r) => r,
        None => {
            let args = child::ReaperArgs {
                ctrl: child_ctrl.as_raw_fd(),
                plan: spec.plan,
                landlock: spec.landlock,
                hostname: spec.hostname,
                loopback: spec.loopback || spec.proxy,
                proxy: spec.proxy,
                region: region.as_ptr(),
            };
            // SAFETY: the child branch calls only reaper_main, which follows the child's rule
            // (spawn/child/mod.rs) and never returns.
            match unsafe { sys::clone_fork(NS_FLAGS, cgroup) } {
                Ok(Forked::Child) => child::reaper_main(&args),
                Ok(Forked::Parent { pid, pidfd }) => Ok((pid, pidfd, region.as_ptr() as usize)),
                Err(e) => Err(e),
            }
        }
    };
    let (pid, pidfd, region_at) = match cloned {
        Ok(x) => x,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::ENOSPC) | Some(libc::EUSERS) => Error::Unsupported {
                    feature: "user namespaces",
                    message: format!(
                        "clone3 with new user/mount/pid/net namespaces failed: {e} (check \
                         /proc/sys/user/max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns)"
                    ),
                },
                _ => Error::io("cloning the instance", None, e),
            })
        }
    };
    drop(region_fd);
    drop(child_ctrl);
    let kill_and_reap = |pidfd: &OwnedFd| {
        let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::wait_exit(pidfd.as_fd());
    };
    if let Err(e) = spec.ids.write(pid) {
        kill_and_reap(&pidfd);
        return Err(Error::io(
            "writing the id maps of",
            Some(format!("/proc/{pid}").into()),
            e,
        ));
    }
    if let Err(e) = after_clone(pid) {
        kill_and_reap(&pidfd);
        return Err(e);
    }
    let go = Request {
        op: proto::OP_GO,
        ..Default::default()
    };
    let reply = sys::send_with_fds(ctrl.as_fd(), proto::as_bytes(&go), &[])
        .map_err(|_| Error::Gone)
        .and_then(|_| recv_reply(ctrl.as_fd()));
    let wanted = if spec.proxy { 3 } else { 1 };
    match reply {
        Ok((r, fds)) if r.kind == proto::REPLY_READY && fds.len() == wanted => {
            let mut fds = fds.into_iter();
            let work = fds.next().expect("counted above");
            let listeners = fds.next().zip(fds.next());
            Ok(Reaper {
                pid,
                pidfd,
                ctrl,
                region,
                region_at,
                work,
                listeners,
            })
        }
        Ok((r, _)) if r.kind == proto::REPLY_SETUP_FAILED => {
            kill_and_reap(&pidfd);
            Err(setup_error(spec.plan, r.err))
        }
        _ => {
            kill_and_reap(&pidfd);
            Err(Error::Setup {
                stage: Stage::Reaper,
                detail: String::new(),
                source: io::Error::other("the instance's reaper exited during setup"),
            })
        }
    }
}

/// The supervisor's ends of one program's pipes (or of its terminal).
pub struct ProgramIo {
    /// Where its input goes: a pipe, or with a terminal a copy of the pty's master; `None` when
    /// the caller gave the program a socket of its own as stdin.
    pub stdin: Option<OwnedFd>,
    /// Its output: a pipe, or with a terminal the pty's master (stdout and stderr in one).
    pub stdout: OwnedFd,
    /// `None` with a terminal, whose one stream is `stdout`.
    pub stderr: Option<OwnedFd>,
    pub status: OwnedFd,
    /// The seccomp user-notification listener, when the filter reports violations.
    pub listener: Option<OwnedFd>,
}

/// How a program's fds 0-2 are made.
pub enum StdioPlan {
    /// Three pipes; the supervisor keeps their other ends.
    Pipes,
    /// A pty of the instance's own devpts (a master from [`open_pty`]): its slave is the
    /// program's 0, 1 and 2 and its controlling terminal; the supervisor keeps the master.
    Tty { master: OwnedFd },
    /// The caller's socket as fd 0 (a context's control socket), pipes for 1 and 2.
    Socket(OwnedFd),
}

/// Opens a new pty in the instance's devpts (through the reaper, which is in its mount
/// namespace) and returns its master. The caller holds the exec lock.
pub fn open_pty(reaper: &Reaper) -> Result<OwnedFd> {
    let req = Request {
        op: proto::OP_OPEN_PTY,
        ..Default::default()
    };
    match call(reaper.ctrl.as_fd(), req, &[])? {
        (r, mut fds) if r.kind == proto::REPLY_DONE && fds.len() == 1 => Ok(fds.remove(0)),
        (r, _) => Err(Error::Setup {
            stage: Stage::Pty,
            detail: "/dev/pts/ptmx".into(),
            source: io::Error::from_raw_os_error(r.err.errno),
        }),
    }
}

/// The program's ends of its stdio and the supervisor's: (child's 0, 1, 2; ours: in, out, err).
type Stdio = ([OwnedFd; 3], (Option<OwnedFd>, OwnedFd, Option<OwnedFd>));

fn make_stdio(plan: StdioPlan) -> Result<Stdio> {
    let pipe = || sys::pipe().map_err(|e| Error::io("creating a pipe", None, e));
    match plan {
        StdioPlan::Pipes => {
            let (stdin_r, stdin_w) = pipe()?;
            let (stdout_r, stdout_w) = pipe()?;
            let (stderr_r, stderr_w) = pipe()?;
            Ok((
                [stdin_r, stdout_w, stderr_w],
                (Some(stdin_w), stdout_r, Some(stderr_r)),
            ))
        }
        StdioPlan::Socket(sock) => {
            let (stdout_r, stdout_w) = pipe()?;
            let (stderr_r, stderr_w) = pipe()?;
            Ok(([sock, stdout_w, stderr_w], (None, stdout_r, Some(stderr_r))))
        }
        StdioPlan::Tty { master } => {
            let err = |e| Error::io("opening the pty's slave", None, e);
            let slave = sys::host::pty_slave(master.as_fd()).map_err(err)?;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(err);
            let input = dup(&master)?;
            Ok((
                [dup(&slave)?, dup(&slave)?, slave],
                (Some(input), master, None),
            ))
        }
    }
}

/// Starts the program whose plan was just written into the region. The caller holds the exec
/// lock. Returns the program's pid inside the instance and its pipes.
pub fn start_program(
    reaper: &Reaper,
    program: &str,
    cgroup_fds: &[RawFd],
    stdio: StdioPlan,
) -> Result<(i32, ProgramIo)> {
    let pipe = || sys::pipe().map_err(|e| Error::io("creating a pipe", None, e));
    let (child_stdio, (stdin_w, stdout_r, stderr_r)) = make_stdio(stdio)?;
    // A socket, not a pipe: besides (stage, errno) records it carries the seccomp listener.
    let (err_r, err_w) =
        sys::seqpacket_pair().map_err(|e| Error::io("creating a socket pair", None, e))?;
    let (status_r, status_w) = pipe()?;
    let mut fds: Vec<BorrowedFd<'_>> = child_stdio.iter().map(|f| f.as_fd()).collect();
    fds.extend([err_w.as_fd(), status_w.as_fd()]);
    // SAFETY: the cgroup descriptors are the caller's, open for the whole call.
    fds.extend(cgroup_fds.iter().map(|&fd| unsafe { sys::borrow(fd) }));
    let req = Request {
        op: proto::OP_EXEC,
        ..Default::default()
    };
    let (reply, _) = call(reaper.ctrl.as_fd(), req, &fds)?;
    drop(fds);
    drop((child_stdio, err_w, status_w));
    if reply.kind != proto::REPLY_STARTED {
        return Err(Error::Setup {
            stage: reply.err.stage(),
            detail: String::new(),
            source: io::Error::from_raw_os_error(reply.err.errno),
        });
    }
    // vfork semantics: by the time the reaper replied, the program has exec'd (the socket is at
    // EOF, maybe after handing over its seccomp listener) or failed (a record is waiting).
    let mut listener = None;
    loop {
        let mut buf = [0u8; 64];
        let mut fds = [-1; 1];
        let (n, nfds) = sys::recv_with_fds(err_r.as_fd(), &mut buf, &mut fds)
            .map_err(|e| Error::io("reading the exec status", None, e))?;
        if n == 0 {
            break;
        }
        let err: ChildError = proto::from_bytes(&buf[..n]).unwrap_or_default();
        if err.stage() == Stage::Listener && nfds == 1 {
            // SAFETY: recv_with_fds gave us this new descriptor.
            listener = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            continue;
        }
        let source = io::Error::from_raw_os_error(err.errno);
        return Err(if err.stage() == Stage::Exec {
            Error::Exec {
                program: program.to_string(),
                source,
            }
        } else {
            Error::Setup {
                stage: err.stage(),
                detail: String::new(),
                source,
            }
        });
    }
    Ok((
        reply.pid,
        ProgramIo {
            stdin: stdin_w,
            stdout: stdout_r,
            stderr: stderr_r,
            status: status_r,
            listener,
        },
    ))
}

/// Asks the reaper to signal a program's process group (or, with pid -1, everything).
pub fn signal(reaper: &Reaper, pid: i32, sig: i32) -> Result<()> {
    call(
        reaper.ctrl.as_fd(),
        Request {
            op: proto::OP_KILL,
            pid,
            sig,
            _pad: 0,
        },
        &[],
    )
    .map(drop)
}

/// Kills the reaper (and with it, as pid 1 of its namespace, every process of the instance)
/// and reaps it. When this returns, no process of the instance is left.
pub fn kill_reaper(reaper: &Reaper) {
    let _ = sys::pidfd_send_signal(reaper.pidfd.as_fd(), libc::SIGKILL);
    let _ = sys::wait_exit(reaper.pidfd.as_fd());
}
