//! Running one cell: send it to the driver, then read its frames and both output pipes until
//! the driver says it is done and each pipe has shown the cell's end marker, interrupting it at
//! its deadline (or when the caller goes away) and killing it when it ignores that.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::driver::Driver;
use super::frame::{self, FrameError};
use super::{CellError, CellStatus, DisplayData, Event, Execution, INTERRUPT_GRACE};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::sys;

/// How long the end markers may trail the driver's `done`: output of a cell that closed its
/// own stdout never gets one.
const MARKER_WAIT: Duration = Duration::from_secs(1);

/// How often an interrupt the driver has not acted on is sent again.
const RESEND: Duration = Duration::from_millis(250);

/// What one poll brought.
pub(super) enum Step {
    Frame(Map<String, Value>),
    /// Output was read (and handed to the output callback).
    Output,
    Deadline,
    Cancelled,
    /// The driver is gone (exited, closed its socket, or sent a bad frame): why.
    Gone(String),
}

struct Stream {
    fd: RawFd,
    open: bool,
    /// Bytes not yet handed on: they may be the start of the end marker.
    pending: Vec<u8>,
    /// The cell's end marker has been seen (or the stream closed).
    ended: bool,
}

/// Polls a driver's control socket, output pipes, exit status and seccomp listener.
pub(super) struct Pump {
    streams: [Stream; 2],
    ctrl: RawFd,
    status: RawFd,
    listener: Option<RawFd>,
    /// The current cell's end marker line, while one runs.
    marker: Option<Vec<u8>>,
    cancel_seen: bool,
    /// The first bytes of stderr, for a driver that fails to start.
    early_stderr: Vec<u8>,
}

impl Pump {
    pub(super) fn new(d: &Driver, marker: Option<String>, _limit: u64) -> Result<Pump> {
        let stream = |fd: BorrowedFd<'_>| Stream {
            fd: fd.as_raw_fd(),
            open: true,
            pending: Vec::new(),
            ended: false,
        };
        Ok(Pump {
            streams: [stream(d.proc.stdout.as_fd()), stream(d.proc.stderr.as_fd())],
            ctrl: d.ctrl.as_raw_fd(),
            status: d.proc.status.as_raw_fd(),
            listener: d.proc.listener.as_ref().map(|l| l.as_raw_fd()),
            marker: marker.map(|m| format!("{m}\n").into_bytes()),
            cancel_seen: false,
            early_stderr: Vec::new(),
        })
    }

    pub(super) fn stderr_so_far(&self) -> Vec<u8> {
        self.early_stderr.clone()
    }

    fn markers_seen(&self) -> bool {
        self.streams.iter().all(|s| s.ended)
    }

    /// Waits until something happens or `until`; output goes to `out(stream, bytes)`.
    pub(super) fn step_with(
        &mut self,
        d: &mut Driver,
        until: Instant,
        cancel: Option<&Cancel>,
        out: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<Step> {
        match d.dec.next() {
            Ok(Some(f)) => return Ok(Step::Frame(f)),
            Ok(None) => {}
            Err(e) => return Ok(Step::Gone(e.to_string())),
        }
        let mut pfds = vec![pollin(self.ctrl), pollin(self.status)];
        let first_stream = pfds.len();
        for s in &self.streams {
            pfds.push(pollin(if s.open && !s.ended { s.fd } else { -1 }));
        }
        pfds.push(pollin(self.listener.unwrap_or(-1)));
        let cancel_fd = cancel
            .filter(|_| !self.cancel_seen)
            .map(|c| c.fd().as_raw_fd());
        pfds.push(pollin(cancel_fd.unwrap_or(-1)));
        let ms = until
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let n = sys::poll(&mut pfds, ms).map_err(|e| Error::io("polling a context", None, e))?;
        if n == 0 {
            return Ok(Step::Deadline);
        }
        let ready = |i: usize| pfds[i].revents != 0;
        for i in 0..2 {
            if ready(first_stream + i) {
                self.read_stream(i, out);
            }
        }
        if ready(first_stream + 2) {
            recv_violation(self.listener.unwrap());
        }
        if ready(0) {
            let mut buf = [0u8; 64 * 1024];
            match (&d.ctrl).read(&mut buf) {
                Ok(0) => return Ok(self.gone("the interpreter closed its control socket", out)),
                Ok(n) => d.dec.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(self.gone(&format!("reading its socket: {e}"), out)),
            }
            match d.dec.next() {
                Ok(Some(f)) => return Ok(Step::Frame(f)),
                Ok(None) => {}
                Err(e) => return Ok(Step::Gone(e.to_string())),
            }
        }
        if ready(1) {
            return Ok(self.gone("the interpreter exited", out));
        }
        if ready(first_stream + 3) {
            self.cancel_seen = true;
            return Ok(Step::Cancelled);
        }
        Ok(Step::Output)
    }

    /// A step during startup: stderr is kept for the error message.
    pub(super) fn step(
        &mut self,
        d: &mut Driver,
        until: Instant,
        cancel: Option<&Cancel>,
    ) -> Result<Step> {
        let mut early = std::mem::take(&mut self.early_stderr);
        let r = self.step_with(d, until, cancel, &mut |i, b| {
            if i == 1 && early.len() < 64 * 1024 {
                early.extend_from_slice(b);
            }
        });
        self.early_stderr = early;
        r
    }

    /// Reads one chunk of stream `i`, handing on what precedes the end marker.
    fn read_stream(&mut self, i: usize, out: &mut dyn FnMut(usize, &[u8])) {
        let s = &mut self.streams[i];
        let mut buf = [0u8; 64 * 1024];
        let n = match sys::read(s.fd, &mut buf) {
            Ok(0) | Err(_) => {
                s.open = false;
                s.ended = true;
                if !s.pending.is_empty() {
                    out(i, &std::mem::take(&mut s.pending));
                }
                return;
            }
            Ok(n) => n,
        };
        s.pending.extend_from_slice(&buf[..n]);
        let Some(marker) = &self.marker else {
            out(i, &std::mem::take(&mut s.pending));
            return;
        };
        if let Some(at) = find(&s.pending, marker) {
            out(i, &s.pending[..at]);
            // What follows the marker was written after the cell: a background thread's.
            s.pending.clear();
            s.ended = true;
            return;
        }
        // Keep back only a tail that is the start of the marker (split across reads).
        let keep = (1..marker.len().min(s.pending.len() + 1))
            .rev()
            .find(|&k| s.pending.ends_with(&marker[..k]))
            .unwrap_or(0);
        let cut = s.pending.len() - keep;
        if cut > 0 {
            out(i, &s.pending[..cut]);
            s.pending.drain(..cut);
        }
    }

    /// The driver is gone: what is still in the pipes is taken for a short while.
    fn gone(&mut self, why: &str, out: &mut dyn FnMut(usize, &[u8])) -> Step {
        let until = Instant::now() + Duration::from_millis(100);
        for i in 0..2 {
            while self.streams[i].open && !self.streams[i].ended && Instant::now() < until {
                let mut p = [pollin(self.streams[i].fd)];
                if sys::poll(&mut p, 10).map_or(true, |n| n == 0) {
                    break;
                }
                self.read_stream(i, out);
            }
        }
        Step::Gone(why.to_string())
    }
}

fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Takes a pending seccomp notification and kills the offender, as a kill-class rule would.
fn recv_violation(listener: RawFd) {
    if let Some((pid, _, _)) = crate::spawn::wait::recv_notification(listener) {
        let _ = sys::kill(pid, libc::SIGKILL);
    }
}

/// A cell's answer, and whether the driver must be replaced.
pub(super) struct Outcome {
    pub(super) exec: Execution,
    pub(super) gone: bool,
}

/// One output stream of a cell, capped.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    truncated: bool,
}

impl Capped {
    /// Keeps what fits under `limit`; returns the part kept.
    fn add<'a>(&mut self, bytes: &'a [u8], limit: u64) -> &'a [u8] {
        let room = (limit as usize).saturating_sub(self.kept.len());
        let take = room.min(bytes.len());
        if take < bytes.len() {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&bytes[..take]);
        &bytes[..take]
    }
}

impl Driver {
    /// Runs one cell to its end (see the module doc).
    pub(super) fn run_cell(
        &mut self,
        code: &str,
        cell: &super::CellOptions,
        deadline: Instant,
        cancel: Option<&Cancel>,
        inst: &Instance,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Outcome> {
        let limit = inst.output_limit();
        let id = self.next_id;
        self.next_id += 1;
        let marker = new_marker()?;
        let mut msg = json!({"op": "execute", "id": id, "code": code, "marker": marker});
        if cell.echo {
            msg["echo"] = json!(true);
        }
        if cell.json_value {
            msg["json_value"] = json!(true);
        }
        let mut pump = Pump::new(self, Some(marker), limit)?;
        let mut streams = [Capped::default(), Capped::default()];
        let mut results: Vec<DisplayData> = Vec::new();
        let mut result_bytes = 0usize;
        let mut error = None;
        let mut done: Option<(Instant, String, u64)> = None;
        let mut interrupting: Option<(Instant, CellStatus)> = None;
        let mut gone = false;
        let mut last_sigint = Instant::now();
        if frame::send(&self.ctrl, &msg).is_err() {
            // The driver is gone (its socket is closed): the cell never ran.
            return Ok(Outcome {
                exec: finish(CellStatus::Died, streams, results, None, 0),
                gone: true,
            });
        }
        loop {
            if done.is_some() && pump.markers_seen() {
                break;
            }
            let until = match (&done, &interrupting) {
                (Some((at, ..)), _) => *at + MARKER_WAIT,
                (None, Some((grace, _))) => (*grace).min(last_sigint + RESEND),
                (None, None) => deadline,
            };
            let mut chunks: Vec<(usize, Vec<u8>)> = Vec::new();
            let step = pump.step_with(self, until, cancel, &mut |i, b| {
                chunks.push((i, b.to_vec()))
            })?;
            for (i, b) in chunks {
                let kept = streams[i].add(&b, limit);
                if !kept.is_empty() {
                    on_event(if i == 0 {
                        Event::Stdout(kept)
                    } else {
                        Event::Stderr(kept)
                    });
                }
            }
            match step {
                Step::Output => {}
                Step::Frame(f) => match f.get("ev").and_then(Value::as_str) {
                    Some("result") => {
                        let mut r = display_data(&f);
                        let size = serde_json::to_vec(&r.data).map_or(0, |v| v.len());
                        if streams[0].kept.len() + result_bytes + size > limit as usize {
                            r.data = over_cap(size);
                            streams[0].truncated = true;
                        } else {
                            result_bytes += size;
                        }
                        on_event(Event::Result(&r));
                        results.push(r);
                    }
                    Some("error") => {
                        let e = cell_error(&f);
                        on_event(Event::Error(&e));
                        error = Some(e);
                    }
                    Some("done") => {
                        let status = f.get("status").and_then(Value::as_str).unwrap_or("ok");
                        let count = f
                            .get("execution_count")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        done = Some((Instant::now(), status.to_string(), count));
                    }
                    Some("ready" | "pong") => {}
                    _ => {
                        gone = true;
                        break;
                    }
                },
                Step::Deadline if done.is_some() => break,
                Step::Deadline => match interrupting {
                    Some((grace, _)) if Instant::now() >= grace => {
                        gone = true;
                        break;
                    }
                    // The driver ignores a SIGINT that lands between cells (or just before
                    // this one started): repeat it until the grace is over.
                    Some(_) => {
                        let _ = inst.signal_pid(self.pid(), libc::SIGINT);
                        last_sigint = Instant::now();
                    }
                    None => {
                        let _ = inst.signal_pid(self.pid(), libc::SIGINT);
                        last_sigint = Instant::now();
                        interrupting = Some((last_sigint + INTERRUPT_GRACE, CellStatus::Timeout));
                    }
                },
                Step::Cancelled => {
                    if interrupting.is_none() && done.is_none() {
                        let _ = inst.signal_pid(self.pid(), libc::SIGINT);
                        last_sigint = Instant::now();
                        interrupting =
                            Some((last_sigint + INTERRUPT_GRACE, CellStatus::Interrupted));
                    }
                }
                Step::Gone(_) => {
                    gone = true;
                    break;
                }
            }
        }
        let status = match (&done, interrupting, gone) {
            (_, Some((_, why)), true) => why,
            (_, None, true) => CellStatus::Died,
            (Some((_, s, _)), Some((_, why)), false) if s == "interrupted" => why,
            (Some((_, s, _)), _, false) => match s.as_str() {
                "error" => CellStatus::Error,
                "interrupted" => CellStatus::Interrupted,
                _ => CellStatus::Ok,
            },
            (None, _, false) => CellStatus::Died,
        };
        let count = done.as_ref().map_or(0, |d| d.2);
        Ok(Outcome {
            exec: finish(status, streams, results, error, count),
            gone,
        })
    }
}

fn finish(
    status: CellStatus,
    streams: [Capped; 2],
    results: Vec<DisplayData>,
    error: Option<CellError>,
    execution_count: u64,
) -> Execution {
    let [out, err] = streams;
    let text = results
        .iter()
        .find(|r| r.main)
        .and_then(|r| r.data.get("text/plain"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Execution {
        status,
        stdout: String::from_utf8_lossy(&out.kept).into_owned(),
        stderr: String::from_utf8_lossy(&err.kept).into_owned(),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        results,
        error,
        text,
        execution_count,
        context_restarted: false,
        wall_ms: 0.0,
    }
}

fn display_data(f: &Map<String, Value>) -> DisplayData {
    let data = match f.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    DisplayData {
        data,
        main: f.get("main").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn over_cap(size: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "text/plain".into(),
        Value::String(format!(
            "[a result of {size} bytes was dropped: it is over the output cap]"
        )),
    );
    m
}

fn cell_error(f: &Map<String, Value>) -> CellError {
    let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    CellError {
        name: s("name"),
        value: s("value"),
        traceback: s("traceback"),
    }
}

/// A fresh end marker: 128 random bits in hex, so no program prints it by chance.
fn new_marker() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("reading", std::path::PathBuf::from("/dev/urandom"), e))?;
    Ok(format!(
        "rsandbox-end-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        crate::error::ContextError::Protocol {
            reason: e.to_string(),
        }
        .into()
    }
}
