//! Contexts: long-lived interpreters inside an instance whose state persists between cells,
//! as in a notebook. The interpreter side is a small driver program of ours (`driver.py`,
//! embedded), started like any run of the instance (same uid, filters, limits, work dir) with a
//! control socket as its stdin; cells' output stays on the real descriptors 1 and 2.
//!
//! Everything the driver sends is treated as hostile (the cell's code can write to its socket):
//! frames are capped and checked (`frame`), and a bad one ends the context, never the caller.
//! Cells of one context run one at a time (`execute` waits its turn within its own timeout);
//! `interrupt` and `restart` may come from other threads meanwhile.

mod cell;
mod driver;
mod frame;

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cancel::Cancel;
use crate::error::Result;
use crate::instance::Instance;
use driver::Driver;

/// How a context is made.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ContextOptions {
    /// Use IPython (display formatter, `display()`, magics) where the sandbox's Python has it:
    /// `None` decides by whether it is importable, `Some(false)` forces the standard library.
    pub ipython: Option<bool>,
}

impl ContextOptions {
    pub fn ipython(mut self, on: bool) -> ContextOptions {
        self.ipython = Some(on);
        self
    }
}

/// How one cell is run.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CellOptions {
    /// As `python -i` does: every top-level expression statement that is not None prints its
    /// repr to stdout, and the cell has no main result (microsandbox's REPL).
    pub echo: bool,
    /// The main result also carries its value as `application/json` where `json.dumps`
    /// accepts it (AI Computer's `result`).
    pub json_value: bool,
}

impl CellOptions {
    pub fn echo(mut self, on: bool) -> CellOptions {
        self.echo = on;
        self
    }

    pub fn json_value(mut self, on: bool) -> CellOptions {
        self.json_value = on;
        self
    }
}

/// How a cell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CellStatus {
    /// It ran to the end.
    Ok,
    /// It raised (the context lives on).
    Error,
    /// Its timeout interrupted it (the state survives unless `context_restarted`).
    Timeout,
    /// `interrupt()` or a cancelled caller interrupted it.
    Interrupted,
    /// The interpreter died (`os._exit`, a crash, a bad frame); the next cell starts afresh.
    Died,
}

/// One MIME bundle a cell produced: its last expression's value (`main`) or display data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DisplayData {
    pub data: serde_json::Map<String, serde_json::Value>,
    pub main: bool,
}

/// An exception a cell raised, with the traceback as Python prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellError {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// What arrives while a cell runs, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    Result(&'a DisplayData),
    Error(&'a CellError),
}

/// The answer for one cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Execution {
    pub status: CellStatus,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub results: Vec<DisplayData>,
    pub error: Option<CellError>,
    /// The main result's `text/plain`.
    pub text: Option<String>,
    pub execution_count: u64,
    /// The interpreter was started afresh for (or by) this cell: its variables are gone.
    pub context_restarted: bool,
    pub wall_ms: f64,
}

/// How long an interrupted cell has to stop before its processes are killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

/// A stateful interpreter in an instance. Cheap to share between threads (`Arc<Context>`).
pub struct Context {
    inst: Arc<Instance>,
    opts: ContextOptions,
    /// The driver, `None` before the first cell and after it died. Held by the running cell.
    driver: Mutex<Option<Driver>>,
    /// Whether a cell holds the driver; waiters sleep on `turn`.
    busy: Mutex<bool>,
    turn: Condvar,
    /// The running driver's pid in the instance (0: none), for interrupts from other threads.
    pid: AtomicI32,
    /// Set when the driver died or was killed: the next cell reports a restart.
    restarts: AtomicU64,
}

impl Instance {
    /// Starts a stateful Python context in this instance (its interpreter starts now, so a
    /// broken interpreter is reported here rather than at the first cell).
    pub fn context(self: &Arc<Self>, opts: ContextOptions) -> Result<Context> {
        let ctx = Context {
            inst: self.clone(),
            opts,
            driver: Mutex::new(None),
            busy: Mutex::new(false),
            turn: Condvar::new(),
            pid: AtomicI32::new(0),
            restarts: AtomicU64::new(0),
        };
        let d = Driver::start(&ctx.inst, &ctx.opts)?;
        ctx.pid.store(d.pid(), Ordering::SeqCst);
        *ctx.driver.lock().unwrap() = Some(d);
        Ok(ctx)
    }
}

impl Context {
    /// Runs one cell. `timeout` (default: the sandbox's) first interrupts the cell, then kills
    /// it; `on_event` sees output, results and errors as they happen; `cancel` interrupts it
    /// (a client that went away). A cell that waits for an earlier one waits within its own
    /// timeout, and gets `Timeout` without running if that passes first.
    pub fn execute(
        &self,
        code: &str,
        timeout: Option<Duration>,
        cancel: Option<&Cancel>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Execution> {
        self.execute_with(code, &CellOptions::default(), timeout, cancel, on_event)
    }

    /// [`Context::execute`] with the cell's options.
    pub fn execute_with(
        &self,
        code: &str,
        cell: &CellOptions,
        timeout: Option<Duration>,
        cancel: Option<&Cancel>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Execution> {
        let start = Instant::now();
        let timeout = timeout.unwrap_or(self.inst.default_timeout());
        let deadline = start + timeout;
        let Some(_turn) = self.wait_turn(deadline) else {
            return Ok(Execution::without_running(CellStatus::Timeout, start));
        };
        let mut slot = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        let mut restarted = self.restarts.swap(0, Ordering::SeqCst) > 0;
        if slot.is_none() {
            let d = Driver::start(&self.inst, &self.opts)?;
            self.pid.store(d.pid(), Ordering::SeqCst);
            *slot = Some(d);
            restarted = true;
        }
        let d = slot.as_mut().unwrap();
        let mut out = d.run_cell(code, cell, deadline, cancel, &self.inst, on_event)?;
        out.exec.context_restarted |= restarted;
        if out.gone {
            // Dead, or killed after ignoring its interrupt: the next cell starts afresh. A
            // cell that timed out that way restarts the context now, as its answer says.
            let d = slot.take().unwrap();
            self.pid.store(0, Ordering::SeqCst);
            d.kill(&self.inst);
            if out.exec.status == CellStatus::Timeout {
                let d = Driver::start(&self.inst, &self.opts)?;
                self.pid.store(d.pid(), Ordering::SeqCst);
                *slot = Some(d);
                out.exec.context_restarted = true;
            } else {
                self.restarts.fetch_add(1, Ordering::SeqCst);
            }
        }
        out.exec.wall_ms = start.elapsed().as_secs_f64() * 1000.0;
        Ok(out.exec)
    }

    /// Interrupts the running cell (`KeyboardInterrupt`); false when none was running.
    pub fn interrupt(&self) -> Result<bool> {
        let running = *self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let pid = self.pid.load(Ordering::SeqCst);
        if !running || pid == 0 {
            return Ok(false);
        }
        self.inst.signal_pid(pid, libc::SIGINT)?;
        Ok(true)
    }

    /// Starts the interpreter afresh: a running cell is interrupted, then killed after a short
    /// grace; every process the context started ends; its variables are gone.
    pub fn restart(&self) -> Result<()> {
        let deadline = Instant::now() + INTERRUPT_GRACE;
        let _ = self.interrupt();
        let turn = match self.wait_turn(deadline) {
            Some(t) => t,
            None => {
                let pid = self.pid.load(Ordering::SeqCst);
                if pid != 0 {
                    let _ = self.inst.signal_pid(pid, libc::SIGKILL);
                }
                self.wait_turn(Instant::now() + Duration::from_secs(30))
                    .ok_or(crate::error::Error::Gone)?
            }
        };
        let mut slot = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.take() {
            d.kill(&self.inst);
        }
        self.restarts.store(0, Ordering::SeqCst);
        let d = Driver::start(&self.inst, &self.opts)?;
        self.pid.store(d.pid(), Ordering::SeqCst);
        *slot = Some(d);
        drop(turn);
        Ok(())
    }

    /// Whether a cell is running.
    pub fn is_busy(&self) -> bool {
        *self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the context's turn, waiting until `deadline` for a running cell to finish.
    fn wait_turn(&self, deadline: Instant) -> Option<Turn<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self
                .turn
                .wait_timeout(busy, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *busy = true;
        Some(Turn(self))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(d) = self
            .driver
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            d.kill(&self.inst);
        }
    }
}

/// The right to use the driver; dropping it lets the next cell in.
struct Turn<'a>(&'a Context);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.turn.notify_one();
    }
}

impl Execution {
    fn without_running(status: CellStatus, start: Instant) -> Execution {
        Execution {
            status,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            results: Vec::new(),
            error: None,
            text: None,
            execution_count: 0,
            context_restarted: false,
            wall_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }
}
