//! Parent-only helpers: they allocate, map memory, or change per-thread credentials, so the
//! child side of `spawn` never calls them (it has `sys::raw`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;

/// Reads a small kernel file (procfs, cgroupfs) whole: `open`, `read` into one page-sized
/// buffer until EOF, `close`. `fs::read_to_string` also asks `statx` and `lseek` for a size
/// these files do not have and probes with short reads, several syscalls more on the run's
/// path.
pub fn read_small(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut out, mut page) = (Vec::new(), [0u8; 4096]);
    loop {
        match f.read(&mut page) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&page[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The start time (clock ticks since boot) of `pid`, from `/proc/PID/stat`; identifies a process
/// across pid reuse.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = read_small(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for /proc's CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// An anonymous memory file (`memfd_create`, close-on-exec).
pub fn memfd(name: &str) -> io::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// Anonymous shared memory of `len` bytes, reserved lazily (pages are touched only when written).
pub struct SharedRegion {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain memory; all access goes through raw pointers under the owner's lock.
unsafe impl Send for SharedRegion {}
// SAFETY: as above; `Instance` serialises writers with a mutex.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps `len` bytes `MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE`.
    pub fn new(len: usize) -> io::Result<SharedRegion> {
        SharedRegion::mmap(-1, libc::MAP_ANONYMOUS, len)
    }
    /// Maps `len` bytes of a fresh memfd `MAP_SHARED`, and returns the fd too, so that a
    /// process that is not our fork (the fork server) can map the same pages.
    pub fn with_fd(len: usize) -> io::Result<(SharedRegion, OwnedFd)> {
        let file = memfd("rsandbox-region")?;
        file.set_len(len as u64)?;
        let fd = OwnedFd::from(file);
        Ok((SharedRegion::map(fd.as_fd(), len)?, fd))
    }
    /// Maps `len` bytes of the file `fd` `MAP_SHARED | MAP_NORESERVE`.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedRegion> {
        SharedRegion::mmap(fd.as_raw_fd(), 0, len)
    }
    fn mmap(fd: RawFd, flags: libc::c_int, len: usize) -> io::Result<SharedRegion> {
        // SAFETY: a shared mapping (anonymous, or of a valid fd) with no address hint; the
        // result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE | flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedRegion { ptr: p.cast(), len })
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to it after drop.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// While alive, this thread's filesystem uid and gid are another user's (per-thread in
/// Linux: `setfsuid(2)` changes only the calling thread's credentials). Restored on drop.
pub struct FsIdGuard {
    uid: u32,
    gid: u32,
}

/// Makes this thread act, for file access, as `uid`/`gid`. Returns `None` when that failed
/// (the caller lacks CAP_SETUID), leaving the ids unchanged.
pub fn act_as(uid: u32, gid: u32) -> Option<FsIdGuard> {
    // SAFETY: setfsuid/setfsgid only change this thread's credentials; they report the
    // previous value, and a second call with -1 reads the current one back.
    unsafe {
        let old_gid = libc::setfsgid(gid) as u32;
        let old_uid = libc::setfsuid(uid) as u32;
        let guard = FsIdGuard {
            uid: old_uid,
            gid: old_gid,
        };
        if libc::setfsuid(u32::MAX) as u32 != uid || libc::setfsgid(u32::MAX) as u32 != gid {
            drop(guard);
            return None;
        }
        Some(guard)
    }
}

impl Drop for FsIdGuard {
    fn drop(&mut self) {
        // SAFETY: restores this thread's previous filesystem ids.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
    }
}

/// Takes ownership of a descriptor this process inherited (socket activation's fds 3, 4, ...),
/// after checking that it is open; marks it close-on-exec.
#[cfg(feature = "daemon")]
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor table.
    let flags = super::cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: F_SETFD on a descriptor just checked to be open.
    super::cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open and was handed to this process for it to own; the caller
    // takes it once (socket activation names each fd once).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_DOMAIN` of a socket (`AF_UNIX`, `AF_INET`, `AF_INET6`).
#[cfg(feature = "daemon")]
pub fn socket_domain(fd: BorrowedFd<'_>) -> io::Result<i32> {
    Ok(rustix::net::sockopt::socket_domain(fd)?.as_raw().into())
}

/// Unlocks the pty whose master is `master` and opens its slave through the master
/// (`TIOCGPTPEER`: no path lookup, so the slave is the one of the master's own devpts, wherever
/// that is mounted). The slave is not made anyone's controlling terminal here.
pub fn pty_slave(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use rustix::pty::OpenptFlags;
    rustix::pty::unlockpt(master)?;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    Ok(rustix::pty::ioctl_tiocgptpeer(master, flags)?)
}

/// `TIOCSWINSZ`: the window size of the terminal on `fd` (the pty sends `SIGWINCH` to its
/// foreground process group when it changes).
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, ws)?)
}
