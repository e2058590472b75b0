//! Cancelling a run from another thread: an eventfd the supervisor polls beside the program's
//! pipes, so a cancel wakes it at once and it kills the run as it would on a timeout.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sys;

/// A cancellation handle. Give a clone to a `Command` (`Command::cancel_on`) and call
/// `cancel()` from anywhere: a run not started yet is refused, a running one is killed (the
/// whole instance for a one-shot run), and either way the run returns `Err(Error::Cancelled)`.
#[derive(Clone, Debug)]
pub struct Cancel {
    fd: Arc<OwnedFd>,
}

impl Cancel {
    pub fn new() -> Result<Cancel> {
        let fd = sys::eventfd().map_err(|e| Error::io("creating a cancel eventfd", None, e))?;
        Ok(Cancel { fd: Arc::new(fd) })
    }

    /// Cancels every run that holds this handle, now or later. Idempotent.
    pub fn cancel(&self) {
        let _ = sys::eventfd_signal(self.fd.as_fd());
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        let mut pfd = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&*self.fd),
            events: libc::POLLIN,
            revents: 0,
        }];
        sys::poll(&mut pfd, 0).is_ok_and(|n| n > 0)
    }

    /// The descriptor that becomes readable on cancel (for the supervisor's poll).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `Err(Cancelled)` once cancelled.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cancel;

    #[test]
    fn a_cancel_is_seen_by_every_clone_and_stays() {
        let c = Cancel::new().unwrap();
        let d = c.clone();
        assert!(!d.is_cancelled());
        c.cancel();
        c.cancel();
        assert!(d.is_cancelled() && c.is_cancelled());
        assert!(d.check().is_err());
    }
}
