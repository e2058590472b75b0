//! The proxy's counters: per instance (a run's report takes the difference over the run) and
//! per process (the daemon's `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::outcome::NetworkStats;

/// Decisions and bytes, counted as they happen.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// Every proxy of this process since it started.
static TOTALS: Counters = Counters {
    allowed: AtomicU64::new(0),
    denied: AtomicU64::new(0),
    bytes_up: AtomicU64::new(0),
    bytes_down: AtomicU64::new(0),
};

/// What every egress proxy of this process has done so far.
pub fn totals() -> NetworkStats {
    TOTALS.snapshot()
}

#[cfg_attr(not(feature = "egress"), allow(dead_code))]
impl Counters {
    pub fn snapshot(&self) -> NetworkStats {
        NetworkStats {
            allowed: self.allowed.load(Relaxed),
            denied: self.denied.load(Relaxed),
            bytes_up: self.bytes_up.load(Relaxed),
            bytes_down: self.bytes_down.load(Relaxed),
        }
    }

    pub fn allowed(&self) {
        self.allowed.fetch_add(1, Relaxed);
        TOTALS.allowed.fetch_add(1, Relaxed);
    }

    pub fn denied(&self) {
        self.denied.fetch_add(1, Relaxed);
        TOTALS.denied.fetch_add(1, Relaxed);
    }

    pub fn up(&self, n: usize) {
        self.bytes_up.fetch_add(n as u64, Relaxed);
        TOTALS.bytes_up.fetch_add(n as u64, Relaxed);
    }

    pub fn down(&self, n: usize) {
        self.bytes_down.fetch_add(n as u64, Relaxed);
        TOTALS.bytes_down.fetch_add(n as u64, Relaxed);
    }
}
