//! The concurrency limit and the bounded queue in front of it, the registry of runs in flight
//! (for cancellation at shutdown), and the counters `/metrics` shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::Cancel;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Why a request got no slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is full: answer 503 with Retry-After.
    QueueFull,
    /// The daemon is shutting down.
    Closed,
}

/// The run slots (a semaphore), the count of requests waiting for one, the cancel handles of the
/// runs holding one, and the outcome counters and latency histograms.
pub(crate) struct Pool {
    slots: Arc<Semaphore>,
    pub(crate) size: usize,
    pub(crate) queue_cap: usize,
    queued: AtomicUsize,
    /// Slots held; watched so that shutdown can wait for none without polling.
    running: Arc<watch::Sender<usize>>,
    next_id: AtomicU64,
    inflight: Mutex<HashMap<u64, Cancel>>,
    runs: Mutex<BTreeMap<String, u64>>,
    hist: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    queue_hist: Mutex<([u64; BUCKETS.len()], u64, f64)>,
}

/// A request's place in the queue; dropping it (the client went away) leaves the queue.
struct QueueSpot<'a>(&'a AtomicUsize);

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A slot held by a run; the run's thread keeps it until its instance is destroyed.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Arc<watch::Sender<usize>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n -= 1);
    }
}

fn observe(h: &Mutex<([u64; BUCKETS.len()], u64, f64)>, secs: f64) {
    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            h.0[i] += 1;
        }
    }
    h.1 += 1;
    h.2 += secs;
}

impl Pool {
    pub(crate) fn new(size: usize, queue_cap: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(size)),
            size,
            queue_cap,
            queued: AtomicUsize::new(0),
            running: Arc::new(watch::Sender::new(0)),
            next_id: AtomicU64::new(1),
            inflight: Mutex::new(HashMap::new()),
            runs: Mutex::new(BTreeMap::new()),
            hist: Mutex::new(Default::default()),
            queue_hist: Mutex::new(Default::default()),
        }
    }

    /// Waits for a slot, unless the queue is already full. Cancel-safe: a request dropped while
    /// waiting leaves the queue.
    pub(crate) async fn acquire(&self) -> Result<Slot, Refused> {
        if self.slots.is_closed() {
            return Err(Refused::Closed);
        }
        // Only requests that actually have to wait count against the queue.
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(self.slot(p));
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue_cap {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::QueueFull);
        }
        let spot = QueueSpot(&self.queued);
        let permit = self.slots.clone().acquire_owned().await;
        drop(spot);
        permit.map(|p| self.slot(p)).map_err(|_| Refused::Closed)
    }

    fn slot(&self, p: OwnedSemaphorePermit) -> Slot {
        self.running.send_modify(|n| *n += 1);
        Slot {
            _permit: p,
            running: self.running.clone(),
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub(crate) fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Resolves once no slot is held (at once when none is).
    pub(crate) async fn idle(&self) {
        let mut running = self.running.subscribe();
        // The pool holds the sender, so the wait ends only at zero.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Registers a run's cancel handle; returns its id for `finished`.
    pub(crate) fn started(&self, c: &Cancel) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, c.clone());
        id
    }

    pub(crate) fn finished(&self, id: u64) {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Shutdown: no new slots; every run in flight is cancelled.
    pub(crate) fn close_and_cancel(&self) {
        self.slots.close();
        for c in self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            c.cancel();
        }
    }

    /// Counts one finished request by outcome (`ok`, `exit`, ..., `error`, `cancelled`,
    /// `rejected`), with its latency and time in the queue.
    pub(crate) fn record(&self, status: &str, total: Option<Duration>, queued: Option<Duration>) {
        *self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status.to_string())
            .or_default() += 1;
        if let Some(t) = total {
            observe(&self.hist, t.as_secs_f64());
        }
        if let Some(q) = queued {
            observe(&self.queue_hist, q.as_secs_f64());
        }
    }

    /// The Prometheus text of the pool's figures.
    pub(crate) fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP rsandbox_runs_total Requests that reached the run queue, by outcome (the report's status, error, cancelled, rejected).\n# TYPE rsandbox_runs_total counter"
        );
        for (k, v) in self.runs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "rsandbox_runs_total{{status=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP rsandbox_queue_length Requests waiting for a slot.\n# TYPE rsandbox_queue_length gauge\nrsandbox_queue_length {}", self.queued());
        let _ = writeln!(out, "# HELP rsandbox_queue_capacity Requests that may wait before 503.\n# TYPE rsandbox_queue_capacity gauge\nrsandbox_queue_capacity {}", self.queue_cap);
        let _ = writeln!(out, "# HELP rsandbox_running Runs holding a slot.\n# TYPE rsandbox_running gauge\nrsandbox_running {}", self.running());
        let _ = writeln!(out, "# HELP rsandbox_slots Runs allowed at once.\n# TYPE rsandbox_slots gauge\nrsandbox_slots {}", self.size);
        for (name, help, h) in [
            (
                "rsandbox_request_duration_seconds",
                "Time from a request's arrival to its answer, queue included.",
                &self.hist,
            ),
            (
                "rsandbox_queue_wait_seconds",
                "Time a request waited for a slot.",
                &self.queue_hist,
            ),
        ] {
            let h = h.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", h.0[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.1);
            let _ = writeln!(out, "{name}_sum {}", h.2);
            let _ = writeln!(out, "{name}_count {}", h.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_and_a_dropped_waiter_leaves_it() {
        let pool = Pool::new(1, 1);
        let held = pool.acquire().await.unwrap();
        assert_eq!(pool.running(), 1);
        // One may wait...
        let mut waiter = Box::pin(pool.acquire());
        assert!(futures_poll(&mut waiter).is_none());
        assert_eq!(pool.queued(), 1);
        // ...a second is refused.
        assert_eq!(pool.acquire().await.err(), Some(Refused::QueueFull));
        drop(waiter);
        assert_eq!(pool.queued(), 0);
        let mut idle = Box::pin(pool.idle());
        assert!(futures_poll(&mut idle).is_none());
        drop(held);
        assert_eq!(pool.running(), 0);
        assert!(futures_poll(&mut idle).is_some());
        let s = pool.acquire().await.unwrap();
        pool.close_and_cancel();
        drop(s);
        assert_eq!(pool.acquire().await.err(), Some(Refused::Closed));
    }

    /// Polls a future once.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Noop));
        let mut cx = std::task::Context::from_waker(&waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
