//! Async-signal-safe system calls: the only kind the child side of `spawn` may make.
//!
//! THE RULE OF THIS MODULE: every function here is one or a few system calls on memory the
//! caller passes. None allocates, none takes a lock, none logs, and errors are
//! `io::Error::from_raw_os_error` values (no heap), so the child may call any of them between
//! `clone` and `execve`. Calls that `rustix` offers go through it (its `linux_raw` backend makes
//! the syscall itself and, given `&CStr` paths and caller-owned buffers, allocates nothing); the
//! rest are `libc` calls, each unsafe block with the reason it is sound. A rustix call does not
//! set `errno`: read a failure's errno from its `io::Error` (`errno_of`), never from `errno()`.
#![allow(unsafe_code)]

mod fd;
mod mount;
mod task;

pub use fd::*;
pub use mount::*;
pub use task::*;

use std::io;

/// Turns a libc-style return value into `io::Result`, reading `errno` on -1.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `cvt` for `syscall(2)`, which returns `c_long`.
pub fn cvt_long(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The current `errno` as a plain integer (0 if none); meaningful only right after a `libc`
/// call that failed.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno an `io::Error` of this module carries (0 if it has none).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// `_exit(2)`: ends the process without running atexit handlers or flushing anything.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe, touches no memory of ours and never returns.
    unsafe { libc::_exit(code) }
}
