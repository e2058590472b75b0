//! The fork server: a small single-threaded process, forked once while its parent is still
//! single-threaded, that clones every later reaper on the parent's behalf.
//!
//! Why: cloning a reaper straight from a busy, multi-threaded daemon copies the daemon's page
//! tables into every instance, makes every page the daemon writes afterwards a copy-on-write
//! fault with a TLB shootdown across all its threads, and copies the whole address space again
//! when the reaper forks each program. Cloned from the fork server, a reaper starts from the
//! server's small address space, the daemon's memory is never shared with an instance, and pid 1
//! of an instance holds no snapshot of other requests' data or of the daemon's token.
//!
//! Protocol, over a `SOCK_SEQPACKET` pair: the parent sends one message per reaper, the JSON of
//! the reaper's settings with two or three descriptors (the reaper's control socket, the exec
//! region's memfd, optionally the cgroup for `CLONE_INTO_CGROUP`), and reads back the reaper's
//! pid, `errno` (0 on success) and the address where the reaper has the region, with the
//! reaper's pidfd. The server ignores SIGCHLD, so the kernel reaps the reapers; the parent waits for them on their pidfds (`sys::wait_exit`). The
//! server exits when its socket reaches end of stream or its parent dies (`PR_SET_PDEATHSIG`).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::landlock::Plan as LandlockPlan;
use crate::ns::mount::MountPlan;
use crate::sys::host::SharedRegion;
use crate::sys::{self, Forked};

use super::{child, plan::REGION_LEN, ReaperSpec, NS_FLAGS};

/// Settings bigger than this (a mount plan of thousands of binds) are cloned directly instead.
const MAX_MSG: usize = 128 << 10;
/// pid (i32), errno (i32), the region's address in the reaper (u64).
const REPLY_LEN: usize = 16;
/// Ignored by the server, reset to the default in each reaper: children are reaped by the
/// kernel, and a terminal's ^C or a SIGTERM to the process group is for the daemon, which drains
/// and then ends the server by closing its socket.
const IGNORED: [i32; 4] = [libc::SIGCHLD, libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

#[derive(serde::Serialize)]
struct SpecRef<'a> {
    plan: &'a MountPlan,
    landlock: &'a LandlockPlan,
    hostname: &'a CStr,
    loopback: bool,
    proxy: bool,
}

#[derive(serde::Deserialize)]
struct Spec {
    plan: MountPlan,
    landlock: LandlockPlan,
    hostname: CString,
    loopback: bool,
    proxy: bool,
}

struct Server {
    /// `None` once stopped: later instances are cloned directly.
    sock: Mutex<Option<OwnedFd>>,
    pidfd: OwnedFd,
}

static SERVER: std::sync::OnceLock<Server> = std::sync::OnceLock::new();

/// Number of threads of this process, from `/proc/self/status`.
fn threads() -> io::Result<usize> {
    let status = sys::host::read_small("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Starts the fork server. Call it while this process has one thread (first thing in `main`)
/// and from the thread that lives longest: the server dies with it (`PR_SET_PDEATHSIG`). Once
/// per process: after [`stop`], instances are cloned directly.
pub fn start() -> io::Result<()> {
    if SERVER.get().is_some() {
        return Ok(());
    }
    let n = threads()?;
    if n != 1 {
        return Err(io::Error::other(format!(
            "the fork server must be started while the process has one thread (it has {n})"
        )));
    }
    let (ours, theirs) = sys::seqpacket_pair()?;
    let parent = std::process::id() as i32;
    // SAFETY: this process has a single thread, so the child may run ordinary Rust code
    // (nobody else can hold a lock it inherits); it ends in serve, which never returns.
    match unsafe { sys::clone_fork(0, None) }? {
        Forked::Child => {
            drop(ours);
            serve(theirs, parent)
        }
        Forked::Parent { pidfd, .. } => {
            drop(theirs);
            let _ = SERVER.set(Server {
                sock: Mutex::new(Some(ours)),
                pidfd,
            });
            Ok(())
        }
    }
}

/// Ends the fork server and waits for it; instances still running are not affected.
pub fn stop() {
    if let Some(s) = SERVER.get() {
        let sock = s.sock.lock().unwrap_or_else(|p| p.into_inner()).take();
        if sock.is_some() {
            drop(sock);
            let _ = sys::wait_exit(s.pidfd.as_fd());
        }
    }
}

/// Whether instances of this process are cloned by a fork server.
pub(super) fn active() -> bool {
    SERVER
        .get()
        .is_some_and(|s| s.sock.lock().unwrap_or_else(|p| p.into_inner()).is_some())
}

/// Clones a reaper through the fork server: `Some((pid, pidfd, region address in the reaper))`
/// or the clone's error; `None` when there is no server (not started, stopped, gone, or the
/// settings are too large), and the caller clones directly.
pub(super) fn clone_reaper(
    spec: &ReaperSpec<'_>,
    fds: &[BorrowedFd<'_>],
) -> Option<io::Result<(i32, OwnedFd, usize)>> {
    let server = SERVER.get()?;
    let msg = serde_json::to_vec(&SpecRef {
        plan: spec.plan,
        landlock: spec.landlock,
        hostname: spec.hostname,
        loopback: spec.loopback || spec.proxy,
        proxy: spec.proxy,
    })
    .ok()?;
    if msg.len() > MAX_MSG {
        return None;
    }
    let mut guard = server.sock.lock().unwrap_or_else(|p| p.into_inner());
    let sock = guard.as_ref()?.as_fd();
    let mut reply = [0u8; REPLY_LEN];
    let mut got = [-1; 1];
    let answer = sys::send_with_fds(sock, &msg, fds)
        .and_then(|_| sys::recv_with_fds(sock, &mut reply, &mut got));
    match answer {
        Ok((REPLY_LEN, nfds)) => {
            // SAFETY: recv_with_fds handed us nfds new descriptors.
            let pidfd = (nfds == 1).then(|| unsafe { OwnedFd::from_raw_fd(got[0]) });
            let pid = i32::from_ne_bytes(reply[..4].try_into().unwrap());
            let errno = i32::from_ne_bytes(reply[4..8].try_into().unwrap());
            let at = u64::from_ne_bytes(reply[8..].try_into().unwrap()) as usize;
            Some(match pidfd {
                Some(fd) if errno == 0 => Ok((pid, fd, at)),
                _ => Err(io::Error::from_raw_os_error(if errno == 0 {
                    libc::EPROTO
                } else {
                    errno
                })),
            })
        }
        _ => {
            // The server is gone (or answered nonsense): clone directly from now on.
            eprintln!("rsandbox: the fork server stopped answering; cloning instances directly");
            guard.take();
            let _ = sys::pidfd_send_signal(server.pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::wait_exit(server.pidfd.as_fd());
            None
        }
    }
}

/// The server's loop. Never returns.
fn serve(sock: OwnedFd, parent: i32) -> ! {
    // This process is single-threaded (forked while its parent was): ordinary Rust is fine here.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    if sys::parent_pid() != parent {
        sys::exit(0);
    }
    sys::set_name(c"rsandbox-fork");
    for sig in IGNORED {
        sys::ignore_signal(sig);
    }
    // Keep the socket (as fd 3) and stderr; nothing of the parent's stays open in here.
    const SOCK: RawFd = 3;
    let fd = sock.into_raw_fd();
    if fd != SOCK && sys::dup_to(fd, SOCK, true).is_err() {
        sys::exit(1);
    }
    sys::close_range(4, u32::MAX, 0).ok();
    if let Ok(null) = sys::open(c"/dev/null", libc::O_RDWR, 0) {
        let _ = sys::dup_to(null, 0, false);
        let _ = sys::dup_to(null, 1, false);
        sys::close(null);
    }
    // SAFETY: SOCK was made the socket above and stays open until this process exits.
    let sock = unsafe { sys::borrow(SOCK) };
    let mut buf = vec![0u8; MAX_MSG + 1];
    loop {
        let mut raw = [-1; 4];
        let (n, nfds) = match sys::recv_with_fds(sock, &mut buf, &mut raw) {
            Ok((0, _)) | Err(_) => sys::exit(0),
            Ok(x) => x,
        };
        let fds: Vec<OwnedFd> = raw[..nfds]
            .iter()
            // SAFETY: recv_with_fds handed us nfds new descriptors, each taken once here.
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        let (pid, errno, pidfd, at) = match clone_one(&buf[..n], &fds) {
            Ok((pid, pidfd, at)) => (pid, 0, Some(pidfd), at),
            Err(e) => (0, e.raw_os_error().unwrap_or(libc::EINVAL), None, 0),
        };
        drop(fds);
        let mut reply = [0u8; REPLY_LEN];
        reply[..4].copy_from_slice(&pid.to_ne_bytes());
        reply[4..8].copy_from_slice(&errno.to_ne_bytes());
        reply[8..].copy_from_slice(&(at as u64).to_ne_bytes());
        let pass: Vec<BorrowedFd<'_>> = pidfd.iter().map(|f| f.as_fd()).collect();
        if sys::send_with_fds(sock, &reply, &pass).is_err() {
            sys::exit(0);
        }
    }
}

/// Clones one reaper from a request: `[ctrl, region, cgroup?]` and the settings.
fn clone_one(msg: &[u8], fds: &[OwnedFd]) -> io::Result<(i32, OwnedFd, usize)> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    if msg.len() > MAX_MSG || !(2..=3).contains(&fds.len()) {
        return Err(einval());
    }
    let spec: Spec = serde_json::from_slice(msg).map_err(|_| einval())?;
    let region = SharedRegion::map(fds[1].as_fd(), REGION_LEN)?;
    let args = child::ReaperArgs {
        ctrl: fds[0].as_raw_fd(),
        plan: &spec.plan,
        landlock: &spec.landlock,
        hostname: &spec.hostname,
        loopback: spec.loopback,
        proxy: spec.proxy,
        region: region.as_ptr(),
    };
    // SAFETY: the child resets the signals this server changed and runs reaper_main, which
    // follows the child's rule (spawn/child/mod.rs) and never returns.
    match unsafe { sys::clone_fork(NS_FLAGS, fds.get(2).map(|f| f.as_raw_fd())) }? {
        Forked::Child => {
            for sig in IGNORED {
                sys::default_signal(sig);
            }
            child::reaper_main(&args)
        }
        Forked::Parent { pid, pidfd } => Ok((pid, pidfd, region.as_ptr() as usize)),
    }
}
