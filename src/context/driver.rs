//! The interpreter side of a context: `driver.py`, embedded in the binary and started with
//! `python -c` in the instance, its control socket as stdin. Starting it and ending it.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::cell::{Pump, Step};
use super::frame::Decoder;
use super::ContextOptions;
use crate::command::Command;
use crate::error::{ContextError, Error, Result};
use crate::instance::{Instance, Process};

/// The driver's source (standard library only; IPython and matplotlib when a cell needs them).
const SOURCE: &str = include_str!("driver.py");

/// How long a new interpreter has to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running driver.
pub(super) struct Driver {
    pub(super) proc: Process,
    pub(super) ctrl: UnixStream,
    pub(super) dec: Decoder,
    pub(super) next_id: u64,
}

impl Driver {
    /// Starts the interpreter and waits for its `ready` frame.
    pub(super) fn start(inst: &Instance, opts: &ContextOptions) -> Result<Driver> {
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| Error::io("creating a context's control socket", None, e))?;
        let mut cmd = Command::python(SOURCE).env("MPLBACKEND", "Agg");
        if opts.ipython == Some(false) {
            cmd = cmd.env("RSANDBOX_CONTEXT_IPYTHON", "0");
        }
        let proc = inst.start_process(&cmd, OwnedFd::from(theirs))?;
        let mut d = Driver {
            proc,
            ctrl: ours,
            dec: Decoder::default(),
            next_id: 1,
        };
        match d.await_ready(inst.output_limit()) {
            Ok(()) => Ok(d),
            Err(e) => {
                d.kill(inst);
                Err(e)
            }
        }
    }

    fn await_ready(&mut self, limit: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pump = Pump::new(self, None, limit)?;
        loop {
            match pump.step(self, deadline, None)? {
                Step::Frame(f) if f.get("ev").and_then(|v| v.as_str()) == Some("ready") => {
                    return Ok(())
                }
                Step::Frame(_) | Step::Output | Step::Cancelled => {}
                Step::Deadline => {
                    return Err(ContextError::Start {
                        reason: "the interpreter did not get ready within 30 s".into(),
                    }
                    .into())
                }
                Step::Gone(why) => {
                    let stderr = String::from_utf8_lossy(&pump.stderr_so_far()).into_owned();
                    return Err(ContextError::Start {
                        reason: format!("{why}; its stderr: {}", stderr.trim_end()),
                    }
                    .into());
                }
            }
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.proc.pid
    }

    /// Ends the interpreter and every process it started.
    pub(super) fn kill(self, inst: &Instance) {
        drop(self.ctrl);
        inst.kill_process(self.proc);
    }
}
