//! Descriptors, pipes, sockets and descriptor passing, files and directories, waiting.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{cvt, cvt_long};

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A close-on-exec `SOCK_SEQPACKET` unix socket pair (message boundaries are kept).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A close-on-exec TCP socket listening on `127.0.0.1:port` in the caller's network namespace
/// (`SO_REUSEADDR`, so a port freed by an earlier instance is taken at once). The caller owns
/// the descriptor. No allocation: rustix encodes the address on the stack.
pub fn listen_loopback(port: u16, backlog: i32) -> io::Result<RawFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd.into_raw_fd())
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use rustix::fs::OFlags;
    let mut flags = rustix::fs::fcntl_getfl(fd)?;
    flags.set(OFlags::NONBLOCK, on);
    Ok(rustix::fs::fcntl_setfl(fd, flags)?)
}

/// The most descriptors one message carries (`send_with_fds`, `recv_with_fds`).
pub const MAX_FDS: usize = 16;
/// Room for a control message carrying `MAX_FDS` descriptors, plus alignment slack.
const CMSG_BUF: usize = rustix::cmsg_space!(ScmRights(MAX_FDS)) + 8;

/// Sends `data` with up to `MAX_FDS` descriptors attached (`SCM_RIGHTS`), retrying on EINTR.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_BUF];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let iov = [IoSlice::new(data)];
    loop {
        match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf` and up to `fds.len()` descriptors (close-on-exec), which
/// the caller then owns; descriptors beyond that are closed. Returns (bytes, descriptors);
/// `Ok((0, 0))` at end of stream.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut [RawFd],
) -> io::Result<(usize, usize)> {
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_BUF];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let n = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    let mut got = 0;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            for fd in received {
                if got < fds.len() {
                    fds[got] = fd.into_raw_fd();
                    got += 1;
                } // else dropped here: closed
            }
        }
    }
    Ok((n, got))
}

/// Reads into `buf`, retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a live writable slice of the given length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all of `buf`, retrying on EINTR and short writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a live slice of the given length.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[r as usize..];
    }
    Ok(())
}

/// `poll(2)` over `fds`, retrying on EINTR; `timeout_ms` < 0 waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    loop {
        // SAFETY: fds is a live, writable slice of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `open(2)` of `path`, close-on-exec added; the caller owns (and closes) the descriptor.
pub fn open(path: &CStr, flags: i32, mode: u32) -> io::Result<RawFd> {
    // SAFETY: a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })
}

/// `close(2)` of a descriptor the caller owns; errors are ignored (the descriptor is gone
/// either way).
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns fd and does not use it again.
    unsafe { libc::close(fd) };
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` numbered `min` or above.
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC touches only the descriptor table.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// `dup3(2)` (`cloexec`) or `dup2(2)` (not): `fd` also as `to`.
pub fn dup_to(fd: RawFd, to: RawFd, cloexec: bool) -> io::Result<()> {
    // SAFETY: both touch only the descriptor table.
    let r = unsafe {
        if cloexec {
            libc::dup3(fd, to, libc::O_CLOEXEC)
        } else {
            libc::dup2(fd, to)
        }
    };
    cvt(r).map(drop)
}

/// `close_range(2)`.
pub fn close_range(first: u32, last: u32, flags: u32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt_long(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// `mkdir(2)`.
pub fn mkdir(path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
}

/// `symlink(2)`: `path` pointing at `target`.
pub fn symlink(target: &CStr, path: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call.
    cvt(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }).map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `openat2(2)` resolve flags.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(2)`: open `path` relative to `dir` with the given resolve restrictions
/// (close-on-exec), retrying on EINTR.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let flags = OFlags::from_bits_retain((flags | libc::O_CLOEXEC) as _);
    let resolve = ResolveFlags::from_bits_retain(resolve);
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::from_raw_mode(mode), resolve) {
            Err(rustix::io::Errno::INTR) => {}
            r => return Ok(r?),
        }
    }
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(
        dir,
        name,
        rustix::fs::Mode::from_raw_mode(mode),
    )?)
}

/// `unlinkat(2)`: removes `name` in `dir` (a directory with `libc::AT_REMOVEDIR`). Never
/// follows a symlink: a link named is removed itself.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    let flags = rustix::fs::AtFlags::from_bits_retain(flags as _);
    Ok(rustix::fs::unlinkat(dir, name, flags)?)
}

/// `getdents64(2)`: fills `buf` with `linux_dirent64` records of the directory `dir` from its
/// current offset; 0 at the end. (rustix offers only an iterator over the records, `RawDir`.)
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a live writable slice of the given length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    cvt_long(r).map(|n| n as usize)
}

/// `fchmod(2)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(
        fd,
        rustix::fs::Mode::from_raw_mode(mode),
    )?)
}

/// `flock(2)` with `libc::LOCK_SH`, `LOCK_EX` or `LOCK_UN`, optionally `| LOCK_NB`; retries
/// on EINTR.
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    use rustix::fs::FlockOperation as Op;
    let nb = op & libc::LOCK_NB != 0;
    let op = match (op & !libc::LOCK_NB, nb) {
        (libc::LOCK_SH, false) => Op::LockShared,
        (libc::LOCK_SH, true) => Op::NonBlockingLockShared,
        (libc::LOCK_EX, false) => Op::LockExclusive,
        (libc::LOCK_EX, true) => Op::NonBlockingLockExclusive,
        (libc::LOCK_UN, false) => Op::Unlock,
        (libc::LOCK_UN, true) => Op::NonBlockingUnlock,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    loop {
        match rustix::fs::flock(fd, op) {
            Err(rustix::io::Errno::INTR) => {}
            r => return Ok(r?),
        }
    }
}

/// The effective uid and gid of this process.
pub fn ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// `kill(2)`: any pid (a negative one names a process group, -1 every process the caller
/// may signal) and any signal number, which rustix's typed `kill_process` cannot express.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Sends `sig` through a pidfd (no pid-reuse race).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

/// Waits for (and reaps) the child behind `pidfd`; returns its raw wait status.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<i32> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD (3) with a valid pidfd and a valid siginfo pointer.
        let r =
            unsafe { libc::waitid(3, pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
        if r == 0 {
            // SAFETY: waitid filled si_code/si_status for an exited child.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            return Ok(if code == libc::CLD_EXITED {
                (status & 0xff) << 8
            } else {
                status & 0x7f
            });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until the process behind `pidfd` has exited: reaps it when it is our child, else
/// (a child of the fork server, which reaps its own) polls the pidfd, which becomes readable
/// once the process and, for a pid namespace's init, every process of the namespace are gone.
pub fn wait_exit(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    match waitid_pidfd(pidfd) {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
            let mut pfd = [libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            while poll(&mut pfd, -1)? == 0 {}
            Ok(())
        }
        r => r.map(drop),
    }
}

/// `wait4(2)`: (pid, raw status, resource usage) of a child that changed state; pid 0 with
/// `WNOHANG` when none has.
pub fn wait4(pid: libc::pid_t, flags: i32) -> io::Result<(libc::pid_t, i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pointers to live locals of the right types.
    let r = cvt(unsafe { libc::wait4(pid, &mut status, flags, &mut ru) })?;
    Ok((r, status, ru))
}

/// A close-on-exec, non-blocking `eventfd(2)` with counter 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds 1 to an eventfd's counter (making it readable).
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        Ok(_) => Ok(()),
        // EAGAIN: the counter is at its maximum, which is readable all the same.
        Err(rustix::io::Errno::AGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Borrows a descriptor number the caller owns for as long as the borrow is used.
///
/// # Safety
/// `fd` must stay open while the returned value is alive.
pub unsafe fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller keeps fd open for the borrow's use.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
