//! The child side: the instance's reaper (pid 1) and the start of each program.
//!
//! THE RULE OF THIS MODULE: everything here runs after `clone` in a copy of a process that may
//! have had other threads. Only async-signal-safe code may run: raw syscalls (`crate::sys`, never
//! `sys::host`), reads of memory prepared by the parent, stack buffers. No allocation (no
//! `String`, `Vec`, `format!`, `Box`), no locks, no logging, no panics that unwind (a failure is
//! a fixed-size `ChildError` record sent to the supervisor, then `_exit`). Data comes from the
//! parent as plain structures: the mount plan (`MountPlan`), the Landlock plan and the exec plan
//! in the shared region (`ExecPlan`). `CheckedAlloc` aborts on any allocation while `IN_CHILD`
//! is set.
//!
//! `reaper.rs` is pid 1 (setup, then its loop); `root.rs` mounts the plan and pivots into it;
//! `program.rs` is one program from its fork to `execve`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, RawFd};

use super::proto::{self, ChildError, Reply};
use crate::error::Stage;
use crate::ns::mount::MountPlan;
use crate::sys;

/// Ends the reaper's setup with a `(stage, errno, detail)` record unless `$e` is `Ok`, whose
/// value it yields.
macro_rules! check {
    ($e:expr, $stage:expr) => {
        check!($e, $stage, 0)
    };
    ($e:expr, $stage:expr, $detail:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $crate::spawn::child::fail_setup($stage, $crate::sys::errno_of(&e), $detail as u32)
            }
        }
    };
}

mod program;
mod reaper;
mod root;

pub use reaper::reaper_main;

/// True in a cloned child (reaper or starting program); read by `crate::in_sandbox_child`
/// so a debug allocator can abort on any allocation there.
pub static IN_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The control socket's fixed number in the reaper.
const CTRL: RawFd = 3;

/// Everything the reaper needs, prepared by the parent before `clone`.
pub struct ReaperArgs<'a> {
    pub ctrl: RawFd,
    pub plan: &'a MountPlan,
    pub landlock: &'a crate::landlock::Plan,
    pub hostname: &'a CStr,
    pub loopback: bool,
    /// Create the egress proxy's listening sockets (`127.0.0.1:3128` and `:1080`, after `lo` is
    /// up) and hand them over with the ready reply.
    pub proxy: bool,
    /// Base of the shared region holding `ExecPlan`s.
    pub region: *const u8,
}

/// The control socket, as the reaper holds it.
fn ctrl() -> BorrowedFd<'static> {
    // SAFETY: reaper_main makes CTRL the control socket before anything else and keeps it open
    // until the process exits.
    unsafe { sys::borrow(CTRL) }
}

/// Sends one record to the supervisor with up to three descriptors attached. Best effort: a
/// supervisor that is gone reads nothing.
fn send_reply(kind: u32, pid: i32, err: ChildError, fds: &[RawFd]) {
    let r = Reply { kind, pid, err };
    let mut borrowed = [ctrl(); 3];
    let n = fds.len().min(borrowed.len());
    for (slot, &fd) in borrowed.iter_mut().zip(&fds[..n]) {
        // SAFETY: fd is a descriptor of this process, open until after the call.
        *slot = unsafe { sys::borrow(fd) };
    }
    let _ = sys::send_with_fds(ctrl(), proto::as_bytes(&r), &borrowed[..n]);
}

/// Reports a setup failure to the supervisor and exits.
fn fail_setup(stage: Stage, errno: i32, detail: u32) -> ! {
    let err = ChildError::new(stage, errno, detail);
    send_reply(proto::REPLY_SETUP_FAILED, 0, err, &[]);
    sys::exit(125)
}
