//! The terminal relay of `rsandbox run --tty` (and of any command that wants one, such as a
//! REPL): this process's terminal in raw mode while a terminal run goes on, its keystrokes typed
//! into the run's pty, its window size copied at the start and on `SIGWINCH`, and the terminal
//! restored on every way out (return, panic, a signal, a timeout).
//!
//! Ctrl-C and Ctrl-Z are bytes in raw mode: they reach the run's pty, whose line discipline
//! turns them into `SIGINT` and `SIGTSTP` for the program. A `SIGINT`, `SIGTERM`, `SIGHUP` or
//! `SIGQUIT` sent to rsandbox itself restores the terminal and cancels the run.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context};
use rsandbox::{Cancel, Terminal};
use rustix::termios::{self, OptionalActions, Termios};

/// How long the relay's threads wait between looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// What a relayed run returned, and the signal that ended it early, if one did.
pub struct Relayed<T> {
    pub value: T,
    /// A signal rsandbox received (the run was cancelled): exit with 128 + it.
    pub signal: Option<i32>,
}

/// Refuses unless stdin is a terminal.
pub fn require_terminal() -> anyhow::Result<()> {
    if !termios::isatty(io::stdin().as_fd()) {
        bail!(
            "--tty needs a terminal on rsandbox's stdin, and stdin is not one (run it from an \
             interactive shell, or drop --tty)"
        );
    }
    Ok(())
}

/// The user's terminal settings, put back when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(RawMode { saved })
    }

    fn restore(saved: &Termios) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), OptionalActions::Now, saved);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        RawMode::restore(&self.saved);
    }
}

/// Runs `work` (which starts a run with `Command::terminal(term)` and `cancel_on(cancel)`) with
/// this process's terminal relayed to the run's pty.
pub fn relay<T>(work: impl FnOnce(&Terminal, &Cancel) -> T) -> anyhow::Result<Relayed<T>> {
    require_terminal()?;
    let stdin = io::stdin();
    let term = match termios::tcgetwinsize(stdin.as_fd()) {
        Ok(ws) if ws.ws_row > 0 && ws.ws_col > 0 => Terminal::new(ws.ws_row, ws.ws_col),
        _ => Terminal::default(),
    };
    let cancel = Cancel::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's settings")?;
    let signals = spawn_signal_thread(&term, &cancel, &stop, &signal, saved)?;
    let raw = RawMode::enter()?;
    let input = spawn_input_thread(&term, &stop);
    let value = work(&term, &cancel);
    stop.store(true, Ordering::Relaxed);
    let _ = input.join();
    let _ = signals.join();
    drop(raw);
    let sig = signal.load(Ordering::Relaxed);
    Ok(Relayed {
        value,
        signal: (sig != 0).then_some(sig),
    })
}

/// Copies keystrokes to the run's pty until the run ends (or stdin does).
fn spawn_input_thread(term: &Terminal, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (term, stop) = (term.clone(), stop.clone());
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            // Poll, not a blocking read: once the run is over, keys belong to the user's shell.
            let mut pfd = [rustix::event::PollFd::new(
                &stdin,
                rustix::event::PollFlags::IN,
            )];
            let tick = rustix::event::Timespec::try_from(TICK).expect("a short duration");
            match rustix::event::poll(&mut pfd, Some(&tick)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return,
            }
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if term.write(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Waits for `SIGWINCH` (copies the window size) and for the signals that end rsandbox
/// (restores the terminal, cancels the run); returns once the handlers are in place.
fn spawn_signal_thread(
    term: &Terminal,
    cancel: &Cancel,
    stop: &Arc<AtomicBool>,
    signal: &Arc<AtomicI32>,
    saved: Termios,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use tokio::signal::unix::{signal as listen, SignalKind};
    let (term, cancel, stop, signal) = (term.clone(), cancel.clone(), stop.clone(), signal.clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return drop(ready_tx.send(Err(e))),
        };
        rt.block_on(async move {
            let listeners = (|| {
                Ok::<_, io::Error>([
                    listen(SignalKind::window_change())?,
                    listen(SignalKind::interrupt())?,
                    listen(SignalKind::terminate())?,
                    listen(SignalKind::hangup())?,
                    listen(SignalKind::quit())?,
                ])
            })();
            let [mut winch, mut int, mut term_sig, mut hup, mut quit] = match listeners {
                Ok(l) => l,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            while !stop.load(Ordering::Relaxed) {
                let ending = tokio::select! {
                    _ = winch.recv() => {
                        if let Ok(ws) = termios::tcgetwinsize(io::stdin().as_fd()) {
                            let _ = term.resize(ws.ws_row, ws.ws_col);
                        }
                        None
                    }
                    _ = int.recv() => Some(libc::SIGINT),
                    _ = term_sig.recv() => Some(libc::SIGTERM),
                    _ = hup.recv() => Some(libc::SIGHUP),
                    _ = quit.recv() => Some(libc::SIGQUIT),
                    _ = tokio::time::sleep(TICK) => None,
                };
                if let Some(sig) = ending {
                    signal.store(sig, Ordering::Relaxed);
                    RawMode::restore(&saved);
                    cancel.cancel();
                }
            }
        });
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e).context("listening for signals"),
        Err(_) => bail!("the signal thread ended early"),
    }
}
