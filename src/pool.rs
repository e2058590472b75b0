//! The warm pool (`SandboxBuilder::warm(n)`): instances created ahead of time by a background
//! thread, so that a one-shot run starts in a finished instance, and torn down by the same
//! thread after the report, so that `Sandbox::run` returns as soon as the program is done.
//!
//! A pooled instance is an ordinary instance (the same namespaces, cgroup, record and
//! limits), idle until a run takes it; each is used for exactly one run. The pool keeps at most
//! `warm` idle instances and at most [`MAX_PENDING`] finished ones waiting for teardown (a run
//! that would exceed it tears its instance down itself). Dropping the last clone of the
//! `Sandbox` stops the thread after it has destroyed every instance it holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::instance::Instance;
use crate::policy::Policy;

/// Finished instances waiting for teardown before runs tear down their own.
pub const MAX_PENDING: usize = 4;

#[derive(Default)]
struct State {
    ready: VecDeque<Instance>,
    finished: Vec<Instance>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Idle instances to keep ([`Pool::set_warm`] changes it; at most the size built with).
    warm: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A warm pool's figures ([`crate::Sandbox::pool_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle instances kept now, and the number the pool aims for.
    pub ready: usize,
    pub target: usize,
    /// Runs that found an idle instance, and runs that had to create one.
    pub hits: u64,
    pub misses: u64,
}

pub(crate) struct Pool {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Pool {
    pub fn start(inner: Arc<Policy>, warm: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            warm: AtomicUsize::new(warm),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("rsandbox-pool".into())
            .spawn(move || work(&s, &inner))?;
        Ok(Pool {
            shared,
            worker: Some(worker),
        })
    }

    /// An idle pooled instance, if one is ready.
    pub fn take(&self) -> Option<Instance> {
        let mut st = self.shared.state.lock().unwrap();
        let inst = st.ready.pop_front();
        self.shared.wake.notify_one();
        let counter = match inst {
            Some(_) => &self.shared.hits,
            None => &self.shared.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        inst
    }

    /// Changes how many idle instances the pool keeps; the thread destroys any beyond it.
    pub fn set_warm(&self, n: usize) {
        self.shared.warm.store(n, Ordering::Relaxed);
        let _st = self.shared.state.lock().unwrap();
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> PoolStats {
        let ready = self.shared.state.lock().unwrap().ready.len();
        PoolStats {
            ready,
            target: self.shared.warm.load(Ordering::Relaxed),
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
        }
    }

    /// Hands a used instance to the pool's thread for teardown; tears it down here when the
    /// thread is behind.
    pub fn finish(&self, inst: Instance) {
        let mut st = self.shared.state.lock().unwrap();
        if st.finished.len() >= MAX_PENDING || st.shutdown {
            drop(st);
            drop(inst);
            return;
        }
        st.finished.push(inst);
        self.shared.wake.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The pool's thread: teardown first (it frees resources), then refill, else sleep.
fn work(shared: &Shared, inner: &Arc<Policy>) {
    let mut failures = 0u32;
    let mut st = shared.state.lock().unwrap();
    loop {
        if let Some(inst) = st.finished.pop() {
            drop(st);
            drop(inst);
            st = shared.state.lock().unwrap();
            continue;
        }
        if st.shutdown {
            let idle: Vec<Instance> = st.ready.drain(..).collect();
            drop(st);
            drop(idle);
            return;
        }
        let warm = shared.warm.load(Ordering::Relaxed);
        if st.ready.len() > warm {
            let extra = st.ready.pop_back();
            drop(st);
            drop(extra);
            st = shared.state.lock().unwrap();
            continue;
        }
        if st.ready.len() < warm {
            drop(st);
            let made = Instance::create(inner.clone(), None);
            st = shared.state.lock().unwrap();
            match made {
                Ok(inst) => {
                    failures = 0;
                    st.ready.push_back(inst);
                }
                // Runs create their own instance meanwhile (and report the error); back off.
                Err(_) => {
                    failures = (failures + 1).min(8);
                    let pause = Duration::from_millis(10 << failures);
                    st = shared.wake.wait_timeout(st, pause).unwrap().0;
                }
            }
            continue;
        }
        st = shared.wake.wait(st).unwrap();
    }
}
