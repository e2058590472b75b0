//! Streamed answers (`Accept: application/x-ndjson`): the work sends JSON lines as things
//! happen, a keepalive goes out after a few seconds of silence, and the work's own last line
//! ends the body. A client that goes away drops the work's future, which cancels it (a run's
//! `Cancel` fires, a cell is interrupted).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::Response;
use serde_json::json;
use tokio::sync::mpsc;

use super::cells::Utf8Carry;
use super::http::{line, ndjson, Body};
use super::job::Tap;

/// A keepalive after this long without a line.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Where the work sends its lines (from any thread, blocking ones included).
#[derive(Clone)]
pub(crate) struct Lines {
    tx: mpsc::Sender<Bytes>,
    last: Arc<Mutex<Instant>>,
}

impl Lines {
    /// Sends a line from a blocking thread; false once the client has gone.
    pub(crate) fn send_blocking(&self, l: Bytes) -> bool {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.tx.blocking_send(l).is_ok()
    }

    fn idle(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// Answers with an NDJSON stream: `work` gets the line sender and returns the last line.
pub(crate) fn stream<F>(work: impl FnOnce(Lines) -> F) -> Response<Body>
where
    F: Future<Output = Bytes> + Send + 'static,
{
    let keepalive = line(&json!({"type": "keepalive"}));
    stream_with(keepalive, move |lines| {
        let fut = work(lines);
        async move { vec![fut.await] }
    })
}

/// [`stream`] with a facade's own keepalive line, ending with the work's last lines.
pub(crate) fn stream_with<F>(keepalive: Bytes, work: impl FnOnce(Lines) -> F) -> Response<Body>
where
    F: Future<Output = Vec<Bytes>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let lines = Lines {
        tx: tx.clone(),
        last: Arc::new(Mutex::new(Instant::now())),
    };
    let fut = work(lines.clone());
    tokio::spawn(async move {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end = loop {
            tokio::select! {
                l = &mut fut => break l,
                // The client went away: dropping `fut` cancels the work.
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if lines.idle() >= KEEPALIVE {
                        *lines.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                        if tx.send(keepalive.clone()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        for l in end {
            if tx.send(l).await.is_err() {
                return;
            }
        }
    });
    ndjson(rx)
}

/// A tap that streams a run's output as `{"type": "stdout"|"stderr", "text"|"b64"}` lines.
pub(crate) fn output_tap(lines: Lines) -> Tap {
    let carry = Mutex::new([Utf8Carry::default(), Utf8Carry::default()]);
    Tap(Arc::new(move |i, bytes| {
        let mut c = carry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((field, value)) = c[i].take(bytes) {
            let kind = if i == 0 { "stdout" } else { "stderr" };
            lines.send_blocking(line(&json!({"type": kind, field: value})));
        }
    }))
}
