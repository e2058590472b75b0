//! A terminal run's handle: typed input and the window size of the pty a run gets with
//! `Command::terminal` (or `Command::tty`), usable from any thread while the run goes on.
//!
//! The pty belongs to the instance's own devpts: the program has its slave as stdin, stdout,
//! stderr and controlling terminal; the supervisor holds the master, reads the one output stream
//! from it, and this handle writes to it and sets its size.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys;

/// The size a terminal run starts with unless told otherwise (rows, columns).
pub const DEFAULT_SIZE: (u16, u16) = (24, 80);

/// Input and window size of one terminal run. Cheap to clone (clones share the run); give it to
/// `Command::terminal`, then write and resize from another thread while `exec` runs. Input
/// written before the program starts is queued and typed when it does.
#[derive(Clone, Debug, Default)]
pub struct Terminal {
    shared: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// A copy of the master while the run goes on.
    master: Option<Arc<OwnedFd>>,
    /// Rows and columns (0 until set: [`DEFAULT_SIZE`]).
    size: (u16, u16),
    /// Typed before the program started.
    pending: Vec<u8>,
    /// The run has ended: input goes nowhere.
    ended: bool,
}

impl Terminal {
    /// A terminal of `rows` x `cols`.
    pub fn new(rows: u16, cols: u16) -> Terminal {
        let t = Terminal::default();
        t.state().size = (rows, cols);
        t
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows and columns.
    pub fn size(&self) -> (u16, u16) {
        match self.state().size {
            (0, 0) => DEFAULT_SIZE,
            s => s,
        }
    }

    /// Types `bytes` into the terminal, as a user at its keyboard would (`\x03` is Ctrl-C,
    /// `\x04` end of input on an empty line, `\x1a` Ctrl-Z: the pty's line discipline turns
    /// them into signals or EOF). Waits while the pty's input buffer is full. After the run
    /// ended: `BrokenPipe`.
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let master = {
            let mut st = self.state();
            if st.ended {
                return Err(ended());
            }
            match &st.master {
                Some(m) => m.clone(),
                None => {
                    st.pending.extend_from_slice(bytes);
                    return Ok(());
                }
            }
        };
        let shared = self.shared.clone();
        write_all_polling(master.as_fd(), bytes, &move || {
            shared.lock().map_or(true, |s| s.ended)
        })
    }

    /// Sets the window size (the program gets `SIGWINCH` when it changes).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let mut st = self.state();
        st.size = (rows, cols);
        match &st.master {
            Some(m) => sys::host::set_window_size(m.as_fd(), rows, cols),
            None => Ok(()),
        }
    }

    /// The run started on the pty whose master is `master`: later input goes there, and what
    /// was typed before is typed now.
    pub(crate) fn attach(&self, master: BorrowedFd<'_>) -> io::Result<()> {
        let master = Arc::new(master.try_clone_to_owned()?);
        let pending = {
            let mut st = self.state();
            st.master = Some(master);
            std::mem::take(&mut st.pending)
        };
        if pending.is_empty() {
            Ok(())
        } else {
            self.write(&pending)
        }
    }

    /// The run is over: the master copy is closed (so the pty is freed) and input refused.
    pub(crate) fn detach(&self) {
        let mut st = self.state();
        st.ended = true;
        st.master = None;
    }
}

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the terminal run has ended")
}

/// Writes all of `bytes` to a pty master that may be non-blocking (the supervisor reads the
/// same open file without blocking): waits for room in 100 ms slices, checking `stop` between
/// them. A pty whose every slave is closed answers `EIO` or `POLLHUP`: the run is over.
pub(crate) fn write_all_polling(
    fd: BorrowedFd<'_>,
    mut bytes: &[u8],
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::AGAIN) => {
                if stop() {
                    return Err(ended());
                }
                let mut pfd = [libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                }];
                sys::poll(&mut pfd, Duration::from_millis(100).as_millis() as i32)?;
                if pfd[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                    return Err(ended());
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::IO) => return Err(ended()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_defaults_and_input_before_the_start_is_queued() {
        let t = Terminal::default();
        assert_eq!(t.size(), DEFAULT_SIZE);
        t.write(b"ls\n").unwrap();
        t.resize(40, 120).unwrap();
        assert_eq!(t.size(), (40, 120));
        assert_eq!(t.state().pending, b"ls\n");
        t.detach();
        assert_eq!(t.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn attach_types_what_was_queued() {
        let master =
            rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
                .unwrap();
        let slave = sys::host::pty_slave(master.as_fd()).unwrap();
        let t = Terminal::new(30, 100);
        t.write(b"hello\n").unwrap();
        t.attach(master.as_fd()).unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        t.resize(50, 132).unwrap();
        let ws = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((ws.ws_row, ws.ws_col), (50, 132));
        t.detach();
    }
}
