//! Supervising one running program: feed stdin, drain stdout and stderr while it runs (never
//! wait for exit first: a full pipe would deadlock), cap what is kept, count the rest, and
//! enforce the wall deadline (parent side).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::proto::{self, ExitRecord};
use super::ProgramIo;
use crate::outcome::Captured;
use crate::sys;

/// Where stdin comes from.
pub enum StdinSource {
    Null,
    Bytes(Vec<u8>),
    File(File),
}

/// A callback that sees output as it arrives: (stream, 0 stdout or 1 stderr; the bytes).
pub type TapFn = dyn Fn(usize, &[u8]) + Send + Sync;

/// What happens to output as it arrives.
#[derive(Clone, Copy)]
pub enum Sink<'a> {
    /// Keep up to the cap in memory; with a tap, also hand each kept chunk to it as it
    /// arrives (stream 0 stdout, 1 stderr).
    Capture(Option<&'a TapFn>),
    /// Copy up to the cap to the supervisor's own stdout/stderr as it arrives.
    Inherit,
}

/// What the supervisor saw.
pub struct Supervised {
    /// `None` when the reaper vanished (the instance was killed) before reporting.
    pub exit: Option<ExitRecord>,
    pub timed_out: bool,
    pub wall: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
    /// A kill-class seccomp rule fired: (AUDIT_ARCH, syscall number) of the first one.
    pub violation: Option<(u32, i32)>,
    /// A polled limit (CPU time, watchdog memory) was exceeded and the run killed.
    pub watched: Option<crate::outcome::Limit>,
    /// The run was cancelled (its `Cancel` fd became readable) and killed.
    pub cancelled: bool,
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}
const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;

/// Takes one pending notification: (host pid, arch, nr).
pub(crate) fn recv_notification(listener: RawFd) -> Option<(i32, u32, i32)> {
    let mut n = SeccompNotif::default();
    // SAFETY: a zeroed, correctly sized seccomp_notif for the kernel to fill.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::ioctl(
            listener,
            SECCOMP_IOCTL_NOTIF_RECV,
            &mut n as *mut SeccompNotif,
        )
    };
    (r == 0).then_some((n.pid as i32, n.arch, n.nr))
}

struct Stream {
    fd: Option<OwnedFd>,
    out: Captured,
    target: i32,
}

impl Stream {
    /// Reads what is available; false at EOF or error (the stream is then closed).
    fn pump(&mut self, buf: &mut [u8], limit: u64, sink: Sink) -> bool {
        let Some(fd) = &self.fd else { return false };
        loop {
            match sys::read(fd.as_raw_fd(), buf) {
                Ok(0) => {
                    self.fd = None;
                    return false;
                }
                Ok(n) => {
                    let kept = self.out.total.min(limit);
                    let room = (limit - kept) as usize;
                    let take = room.min(n);
                    if take > 0 {
                        match sink {
                            Sink::Capture(tap) => {
                                self.out.data.extend_from_slice(&buf[..take]);
                                if let Some(tap) = tap {
                                    tap(self.target as usize - 1, &buf[..take]);
                                }
                            }
                            Sink::Inherit => {
                                let _ = sys::write_all(self.target, &buf[..take]);
                            }
                        }
                    }
                    if take < n {
                        self.out.truncated = true;
                    }
                    self.out.total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => {
                    self.fd = None;
                    return false;
                }
            }
        }
    }
}

/// Where stdin goes: a pipe (closed at the end: EOF), or a terminal's master, which is shared
/// with the non-blocking reader and stays open (a terminal has no EOF but the typed `^D`).
struct Input {
    fd: OwnedFd,
    tty: bool,
}

impl Input {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.tty {
            crate::terminal::write_all_polling(self.fd.as_fd(), bytes, &|| false)
        } else {
            sys::write_all(self.fd.as_raw_fd(), bytes)
        }
    }
}

/// Feeds stdin from its own thread (a file may block, and the program may never read it).
fn feed_stdin(mut input: Input, source: StdinSource) {
    match source {
        StdinSource::Null => drop(input),
        StdinSource::Bytes(bytes) => {
            if bytes.is_empty() {
                return;
            }
            std::thread::spawn(move || {
                let _ = input.write_all(&bytes);
            });
        }
        StdinSource::File(mut file) => {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 || input.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// Supervises until the program exits (or the deadline passes, or `cancel` becomes readable,
/// and `on_timeout` has killed it). `on_timeout` must make the program exit: kill its group, or
/// the whole instance. `terminal`: the handle of a terminal run, attached to its master while
/// the run goes on.
#[allow(clippy::too_many_arguments)]
pub fn supervise(
    io: ProgramIo,
    stdin: StdinSource,
    timeout: Duration,
    limit: u64,
    sink: Sink,
    cancel: Option<BorrowedFd<'_>>,
    terminal: Option<&crate::terminal::Terminal>,
    on_timeout: &mut dyn FnMut(),
    watch: &mut dyn FnMut() -> Option<crate::outcome::Limit>,
) -> Supervised {
    let start = Instant::now();
    let deadline = start + timeout;
    // A terminal run has one stream, the pty's master, and no stderr.
    let tty = io.stderr.is_none();
    if let Some(fd) = io.stdin {
        feed_stdin(Input { fd, tty }, stdin);
    }
    for fd in [Some(&io.stdout), io.stderr.as_ref(), Some(&io.status)]
        .into_iter()
        .flatten()
    {
        let _ = sys::set_nonblocking(fd.as_fd(), true);
    }
    if let Some(t) = terminal {
        let _ = t.attach(io.stdout.as_fd());
    }
    let mut streams = [
        Stream {
            fd: Some(io.stdout),
            out: Captured::default(),
            target: 1,
        },
        Stream {
            fd: io.stderr,
            out: Captured::default(),
            target: 2,
        },
    ];
    let mut status = Some(io.status);
    let mut listener = io.listener;
    let mut violation = None;
    let mut exit = None;
    let mut wall = None;
    let mut timed_out = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut rec = [0u8; std::mem::size_of::<ExitRecord>()];
    let mut rec_len = 0;
    // After a kill, wait at most this long for the reaper's report and the pipes' EOF.
    let mut hard_stop: Option<Instant> = None;
    // Limits checked by polling (CPU time, memory without cgroups): every 20 ms.
    const WATCH: Duration = Duration::from_millis(20);
    let mut next_watch = start + WATCH;
    let mut watched = None;
    let mut cancelled = false;

    while let Some(st) = &status {
        let now = Instant::now();
        if !timed_out && now >= deadline {
            timed_out = true;
            on_timeout();
            hard_stop = Some(Instant::now() + Duration::from_secs(5));
        }
        if hard_stop.is_some_and(|h| now >= h) {
            break;
        }
        if watched.is_none() && now >= next_watch {
            next_watch = now + WATCH;
            if let Some(l) = watch() {
                watched = Some(l);
                hard_stop.get_or_insert(Instant::now() + Duration::from_secs(5));
            }
        }
        let wait_until = hard_stop.unwrap_or(deadline).min(if watched.is_none() {
            next_watch
        } else {
            deadline
        });
        let ms = wait_until
            .saturating_duration_since(now)
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let mut pfds = vec![libc::pollfd {
            fd: st.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for s in &streams {
            if let Some(fd) = &s.fd {
                pfds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let li = pfds.len();
        if let Some(l) = &listener {
            pfds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ci = pfds.len();
        if let Some(c) = cancel.filter(|_| !cancelled) {
            pfds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if sys::poll(&mut pfds, ms.max(1)).is_err() {
            break;
        }
        if pfds.get(ci).is_some_and(|p| p.revents != 0) {
            cancelled = true;
            on_timeout();
            hard_stop.get_or_insert(Instant::now() + Duration::from_secs(5));
        }
        for s in streams.iter_mut() {
            s.pump(&mut buf, limit, sink);
        }
        if listener.is_some() && pfds.get(li).is_some_and(|p| p.revents != 0) {
            let l = listener.as_ref().unwrap();
            match recv_notification(l.as_raw_fd()) {
                Some((pid, arch, nr)) => {
                    violation.get_or_insert((arch, nr));
                    // What SCMP_ACT_KILL_PROCESS would have done, now that the call is named.
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                None if pfds[li].revents & (libc::POLLHUP | libc::POLLERR) != 0 => listener = None,
                None => {}
            }
        }
        if pfds[0].revents != 0 {
            match sys::read(st.as_raw_fd(), &mut rec[rec_len..]) {
                Ok(0) => status = None,
                Ok(n) => {
                    rec_len += n;
                    if rec_len == rec.len() {
                        exit = proto::from_bytes::<ExitRecord>(&rec);
                        wall = Some(start.elapsed());
                        status = None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => status = None,
            }
        }
    }
    let wall = wall.unwrap_or_else(|| start.elapsed());
    // The program is gone; take what is still buffered. Processes it left behind may keep the
    // pipes open (and writing), so this is bounded in time rather than waiting for EOF.
    let drain_until = Instant::now() + Duration::from_millis(100);
    if let Some(t) = terminal {
        t.detach();
    }
    for s in streams.iter_mut() {
        while s.pump(&mut buf, limit, sink) && Instant::now() < drain_until {
            let mut pfd = [libc::pollfd {
                fd: s.fd.as_ref().unwrap().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if sys::poll(&mut pfd, 0).map_or(true, |n| n == 0) {
                break;
            }
        }
    }
    let [out, err] = streams;
    Supervised {
        exit,
        timed_out,
        wall,
        stdout: out.out,
        stderr: err.out,
        violation,
        watched,
        cancelled,
    }
}
