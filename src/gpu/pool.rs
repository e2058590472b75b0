//! [`GpuPool`]: which GPUs each instance gets, exclusive or shared, waiting in FIFO order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::lease::GpuLease;
use super::locks;
use super::nodes::HostGpus;
use super::request::{GpuRequest, Select};
use crate::error::GpuError;

/// How often a waiting request looks again at GPUs held by other processes (their release
/// wakes nobody here).
const POLL: Duration = Duration::from_millis(50);

/// How long a waiting request with no deadline and no lock directory sleeps between looks: a
/// release in this process wakes it sooner, and nothing else can free a GPU.
const IDLE: Duration = Duration::from_secs(3600);

/// Hands out GPUs to instances: exclusive leases (no one else holds the GPU) and shared ones
/// (only other shared leases hold it). A request waits, in FIFO order, up to the time it allows,
/// or fails at once when it allows none; a request that can never be met (more GPUs than the pool
/// has, an unknown index) fails at once either way. Leases release on drop.
///
/// A daemon holds one pool over the host's GPUs ([`GpuPool::for_dev_dir`] or the one a
/// [`crate::Sandbox`] reports) and either lets `Sandbox::create` allocate (waiting up to
/// `SandboxBuilder::gpu_wait`; call it where blocking is fine, e.g. `spawn_blocking`), or
/// allocates itself and passes the lease to `Sandbox::create_with_gpus`.
pub struct GpuPool {
    gpus: Vec<u32>,
    /// Where per-GPU lock files are `flock`ed (cross-process exclusion); none: in-process only.
    lock_dir: Option<PathBuf>,
    state: Mutex<PoolState>,
    cv: Condvar,
}

/// What this process's leases hold, and who is waiting.
#[derive(Debug, Default)]
struct PoolState {
    holders: BTreeMap<u32, Hold>,
    /// Tickets of waiting requests, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// Holders of one GPU in a pool.
#[derive(Clone, Copy, Debug, Default)]
struct Hold {
    exclusive: bool,
    shared: u32,
}

/// GPUs taken for a new lease, with their lock files (none without a lock directory).
#[derive(Default)]
struct Taken {
    indices: Vec<u32>,
    locks: Vec<File>,
}

impl PoolState {
    /// Puts a new request at the back of the queue; its ticket.
    fn enqueue(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(ticket);
        ticket
    }

    /// Whether GPU `i` can be given to a new lease (`share`: a shared one), in-process view.
    fn compatible(&self, i: u32, share: bool) -> bool {
        match self.holders.get(&i) {
            None => true,
            Some(h) => share && !h.exclusive,
        }
    }

    /// How many shared leases hold GPU `i`.
    fn shared_by(&self, i: u32) -> u32 {
        self.holders.get(&i).map_or(0, |h| h.shared)
    }

    fn hold(&mut self, indices: &[u32], share: bool) {
        for i in indices {
            let h = self.holders.entry(*i).or_default();
            if share {
                h.shared += 1;
            } else {
                h.exclusive = true;
            }
        }
    }

    fn unhold(&mut self, indices: &[u32], share: bool) {
        for i in indices {
            if let Some(h) = self.holders.get_mut(i) {
                if share {
                    h.shared = h.shared.saturating_sub(1);
                } else {
                    h.exclusive = false;
                }
                if !h.exclusive && h.shared == 0 {
                    self.holders.remove(i);
                }
            }
        }
    }
}

impl fmt::Debug for GpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuPool")
            .field("gpus", &self.gpus)
            .field("lock_dir", &self.lock_dir)
            .field("state", &*self.lock())
            .finish()
    }
}

impl GpuPool {
    /// A pool over `gpus` (indices), for this process only.
    pub fn new(gpus: impl IntoIterator<Item = u32>) -> Arc<GpuPool> {
        GpuPool::build(gpus, None)
    }

    /// A pool over `gpus` whose leases also `flock` `lock_dir/gpu-N.lock` (exclusive or shared),
    /// so that pools of other processes over the same directory respect them.
    pub fn with_lock_dir(
        gpus: impl IntoIterator<Item = u32>,
        lock_dir: impl Into<PathBuf>,
    ) -> Arc<GpuPool> {
        GpuPool::build(gpus, Some(lock_dir.into()))
    }

    fn build(gpus: impl IntoIterator<Item = u32>, lock_dir: Option<PathBuf>) -> Arc<GpuPool> {
        let mut gpus: Vec<u32> = gpus.into_iter().collect();
        gpus.sort_unstable();
        gpus.dedup();
        Arc::new(GpuPool {
            gpus,
            lock_dir,
            state: Mutex::new(PoolState::default()),
            cv: Condvar::new(),
        })
    }

    /// This process's pool for the GPUs of `dev_dir` (one per directory, remade if the GPUs
    /// found there changed). For the host's `/dev` leases are also locked across processes, in
    /// `gpus/` beside the state directory; other directories (tests' fake nodes) are in-process.
    pub fn for_dev_dir(dev_dir: &Path) -> std::io::Result<Arc<GpuPool>> {
        static POOLS: OnceLock<Mutex<HashMap<PathBuf, Arc<GpuPool>>>> = OnceLock::new();
        let gpus = HostGpus::scan(dev_dir).indices();
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(dev_dir) {
            if p.gpus == gpus {
                return Ok(p.clone());
            }
        }
        let lock_dir = if dev_dir == Path::new("/dev") && !gpus.is_empty() {
            Some(locks::host_lock_dir()?)
        } else {
            None
        };
        let pool = GpuPool::build(gpus, lock_dir);
        pools.insert(dev_dir.to_path_buf(), pool.clone());
        Ok(pool)
    }

    /// The GPU indices of this pool.
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }

    /// GPUs a new lease could get now, as far as this process knows (`share`: for a shared one).
    pub fn free(&self, share: bool) -> Vec<u32> {
        let st = self.lock();
        self.gpus
            .iter()
            .copied()
            .filter(|i| st.compatible(*i, share))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails when `req` can never be met by this pool: no GPU at all, more than it has, an
    /// unknown or repeated index. `dev_dir` names the pool's source in the messages.
    pub fn check(&self, req: &GpuRequest, dev_dir: &Path) -> Result<(), GpuError> {
        if req.is_empty() {
            return Ok(());
        }
        if self.gpus.is_empty() {
            return Err(GpuError::NoGpu {
                dev_dir: dev_dir.to_path_buf(),
                requested: req.to_string(),
            });
        }
        match &req.select {
            Select::None => Ok(()),
            Select::Count(n) if *n as usize > self.gpus.len() => Err(GpuError::TooMany {
                requested: *n as usize,
                available: self.gpus.clone(),
            }),
            Select::Count(_) => Ok(()),
            Select::Devices(v) => self.check_indices(v),
        }
    }

    /// Fails at the first index this pool lacks or that `v` lists twice.
    fn check_indices(&self, v: &[u32]) -> Result<(), GpuError> {
        for (k, i) in v.iter().enumerate() {
            if !self.gpus.contains(i) {
                return Err(GpuError::UnknownIndex {
                    index: *i,
                    available: self.gpus.clone(),
                });
            }
            if v[..k].contains(i) {
                return Err(GpuError::Duplicate { index: *i });
            }
        }
        Ok(())
    }

    /// A lease for `req` now, or an error at once ([`GpuPool::allocate`] without waiting).
    pub fn try_allocate(self: &Arc<Self>, req: &GpuRequest) -> Result<GpuLease, GpuError> {
        self.allocate(req, Duration::ZERO)
    }

    /// A lease for `req`, waiting up to `wait` behind earlier waiting requests (FIFO: a large
    /// request is not starved by smaller ones arriving later) for enough GPUs to be free.
    pub fn allocate(
        self: &Arc<Self>,
        req: &GpuRequest,
        wait: Duration,
    ) -> Result<GpuLease, GpuError> {
        self.check(req, Path::new("this pool"))?;
        if req.is_empty() {
            return Ok(self.lease(req, Taken::default()));
        }
        let start = Instant::now();
        let deadline = start.checked_add(wait);
        let mut st = self.lock();
        let ticket = st.enqueue();
        loop {
            if st.queue.front() == Some(&ticket) {
                if let Some(taken) = self.pick(&mut st, req) {
                    st.queue.pop_front();
                    // The next in line may fit in what is left.
                    self.cv.notify_all();
                    return Ok(self.lease(req, taken));
                }
            }
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left == Some(Duration::ZERO) {
                let waited = if wait.is_zero() {
                    Duration::ZERO
                } else {
                    now - start
                };
                return Err(self.give_up(&mut st, ticket, req, waited));
            }
            st = self
                .cv
                .wait_timeout(st, self.wait_step(left))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lease(self: &Arc<Self>, req: &GpuRequest, taken: Taken) -> GpuLease {
        GpuLease::new(self.clone(), taken.indices, req.share, taken.locks)
    }

    /// How long a waiting request sleeps before it looks again, `left` before its deadline:
    /// with a lock directory it polls, since other processes' releases wake nobody here.
    fn wait_step(&self, left: Option<Duration>) -> Duration {
        match (left, &self.lock_dir) {
            (Some(l), Some(_)) => l.min(POLL),
            (None, Some(_)) => POLL,
            (Some(l), None) => l,
            (None, None) => IDLE,
        }
    }

    /// Takes `ticket` out of the queue (waking those behind it) and says why `req` failed.
    fn give_up(
        &self,
        st: &mut PoolState,
        ticket: u64,
        req: &GpuRequest,
        waited: Duration,
    ) -> GpuError {
        let ahead = st.queue.iter().position(|t| *t == ticket).unwrap_or(0);
        st.queue.retain(|t| *t != ticket);
        self.cv.notify_all();
        let (free, busy) = self.usage(st, req.share);
        GpuError::NotFree {
            requested: req.to_string(),
            free,
            busy,
            queued_ahead: ahead,
            waited,
        }
    }

    /// The lock of GPU `i` for a lease (`Ok(None)` without a lock dir); `Err` when another
    /// process holds it in a conflicting way (or the lock file cannot be opened).
    fn lock_gpu(&self, i: u32, share: bool) -> std::io::Result<Option<File>> {
        match &self.lock_dir {
            None => Ok(None),
            Some(dir) => locks::lock_gpu(dir, i, share).map(Some),
        }
    }

    /// The GPUs to try for `req`, in order: the named ones, or for a count every GPU this
    /// process could give, the least shared first (shared leases spread out).
    fn candidates(&self, st: &PoolState, req: &GpuRequest) -> Vec<u32> {
        match &req.select {
            Select::None => Vec::new(),
            Select::Devices(v) => v.clone(),
            Select::Count(_) => {
                let mut c: Vec<u32> = self
                    .gpus
                    .iter()
                    .copied()
                    .filter(|i| st.compatible(*i, req.share))
                    .collect();
                c.sort_by_key(|i| (st.shared_by(*i), *i));
                c
            }
        }
    }

    /// GPU `i`'s lock file (if the pool has a lock directory) when a new lease (`share`: a
    /// shared one) can have it: free in this process and in the others.
    fn try_take(&self, st: &PoolState, i: u32, share: bool) -> Option<Option<File>> {
        if !st.compatible(i, share) {
            return None;
        }
        self.lock_gpu(i, share).ok()
    }

    /// Takes the GPUs for `req` if enough are free now.
    fn pick(&self, st: &mut PoolState, req: &GpuRequest) -> Option<Taken> {
        let mut taken = Taken::default();
        for i in self.candidates(st, req) {
            if taken.indices.len() == req.len() {
                break;
            }
            match self.try_take(st, i, req.share) {
                Some(lock) => {
                    taken.indices.push(i);
                    taken.locks.extend(lock);
                }
                // A named GPU that is busy: the request cannot be met now.
                None if req.indices().is_some() => return None,
                None => {}
            }
        }
        if taken.indices.len() < req.len() {
            return None;
        }
        st.hold(&taken.indices, req.share);
        taken.indices.sort_unstable();
        Some(taken)
    }

    /// (free, busy) for a request of this kind, counting other processes' locks.
    fn usage(&self, st: &PoolState, share: bool) -> (Vec<u32>, Vec<u32>) {
        self.gpus
            .iter()
            .partition(|i| st.compatible(**i, share) && self.lock_gpu(**i, share).is_ok())
    }

    /// Gives back what a lease held (its lock files are the lease's to drop) and wakes waiters.
    pub(super) fn release(&self, indices: &[u32], share: bool) {
        let mut st = self.lock();
        st.unhold(indices, share);
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn unsatisfiable_requests_fail_at_once_with_their_reason() {
        let pool = GpuPool::new([0, 1, 2, 3]);
        let dev = Path::new("/dev");
        let e = pool.check(&GpuRequest::count(5), dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "5 GPUs asked for, but this host has only 4 (GPU 0, 1, 2, 3)"
        );
        assert!(!e.is_retryable());
        let e = pool
            .try_allocate(&GpuRequest::devices(&[1, 7]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no GPU 7 on this host (it has GPU 0, 1, 2, 3)"
        );
        let e = pool.check(&GpuRequest::devices(&[1, 1]), dev).unwrap_err();
        assert_eq!(e, GpuError::Duplicate { index: 1 });
        // Waiting does not help a request that can never be met.
        let t = Instant::now();
        assert!(pool
            .allocate(&GpuRequest::count(9), Duration::from_secs(5))
            .is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        let none = GpuPool::new([]);
        let e = none.check(&GpuRequest::count(1), dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no GPU on this host: /dev has no nvidiaN device, so 1 GPU cannot be granted"
        );
        assert!(none.check(&GpuRequest::count(0), dev).is_ok());
        assert!(none
            .try_allocate(&GpuRequest::none())
            .unwrap()
            .indices()
            .is_empty());
    }

    #[test]
    fn exclusive_leases_never_share_a_gpu() {
        let pool = GpuPool::new([0, 1, 2, 3]);
        let a = pool.try_allocate(&GpuRequest::count(2)).unwrap();
        let b = pool.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!((a.indices(), b.indices()), (&[0, 1][..], &[2][..]));
        let e = pool.try_allocate(&GpuRequest::count(2)).unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "not enough free GPUs for 2 GPUs: free 3, in use 0, 1, 2 (not waiting)"
        );
        // A named GPU in use, even alone.
        assert!(pool.try_allocate(&GpuRequest::devices(&[1])).is_err());
        assert!(pool
            .try_allocate(&GpuRequest::devices(&[1]).share(true))
            .is_err());
        let c = pool.try_allocate(&GpuRequest::devices(&[3])).unwrap();
        assert_eq!(pool.free(false), Vec::<u32>::new());
        drop(a);
        assert_eq!(pool.free(false), [0, 1]);
        let d = pool.try_allocate(&GpuRequest::count(2)).unwrap();
        assert_eq!(d.indices(), [0, 1]);
        drop((b, c, d));
        assert_eq!(pool.free(false), [0, 1, 2, 3]);
    }

    #[test]
    fn shared_leases_share_only_with_each_other() {
        let pool = GpuPool::new([0, 1]);
        let s1 = pool
            .try_allocate(&GpuRequest::count(1).share(true))
            .unwrap();
        let s2 = pool
            .try_allocate(&GpuRequest::count(1).share(true))
            .unwrap();
        // Spread over the least shared GPUs first.
        assert_eq!((s1.indices(), s2.indices()), (&[0][..], &[1][..]));
        let s3 = pool
            .try_allocate(&GpuRequest::count(2).share(true))
            .unwrap();
        assert_eq!(s3.indices(), [0, 1]);
        // No exclusive lease while shared ones hold them.
        assert!(pool.try_allocate(&GpuRequest::count(1)).is_err());
        assert_eq!(pool.free(true), [0, 1]);
        drop((s1, s3));
        let x = pool.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!(x.indices(), [0]);
        // ...and no shared lease on an exclusively held GPU.
        let s4 = pool
            .try_allocate(&GpuRequest::devices(&[1]).share(true))
            .unwrap();
        assert!(pool
            .try_allocate(&GpuRequest::devices(&[0]).share(true))
            .is_err());
        drop((s2, s4, x));
        assert_eq!(pool.free(false), [0, 1]);
    }

    #[test]
    fn waiting_requests_get_gpus_in_fifo_order() {
        let pool = GpuPool::new([0, 1]);
        let held = pool.try_allocate(&GpuRequest::count(2)).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        // The big request queues first; the small one after it must not overtake it.
        for (name, n) in [("big", 2), ("small", 1)] {
            let (pool, order, go) = (pool.clone(), order.clone(), started.clone());
            threads.push(std::thread::spawn(move || {
                go.fetch_add(1, Ordering::SeqCst);
                let lease = pool
                    .allocate(&GpuRequest::count(n), Duration::from_secs(20))
                    .unwrap();
                order.lock().unwrap().push(name);
                std::thread::sleep(Duration::from_millis(50));
                drop(lease);
            }));
            while started.load(Ordering::SeqCst) < threads.len() {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // A request that does not wait fails while others queue, though none would fit anyway.
        let e = pool.try_allocate(&GpuRequest::count(1)).unwrap_err();
        assert!(
            matches!(
                e,
                GpuError::NotFree {
                    queued_ahead: 2,
                    ..
                }
            ),
            "{e}"
        );
        drop(held);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["big", "small"]);
    }

    #[test]
    fn a_wait_ends_at_its_deadline_and_leaves_the_queue() {
        let pool = GpuPool::new([0]);
        let held = pool.try_allocate(&GpuRequest::count(1)).unwrap();
        let t = Instant::now();
        let e = pool
            .allocate(&GpuRequest::count(1), Duration::from_millis(150))
            .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert!(
            matches!(&e, GpuError::NotFree { queued_ahead: 0, waited, .. } if *waited >= Duration::from_millis(150)),
            "{e:?}"
        );
        assert!(e.to_string().contains("(waited 0."), "{e}");
        drop(held);
        // Nothing is left queued: a new request succeeds at once.
        assert_eq!(
            pool.try_allocate(&GpuRequest::count(1)).unwrap().indices(),
            [0]
        );
    }

    #[test]
    fn a_release_wakes_a_waiter() {
        let pool = GpuPool::new([0]);
        let held = pool.try_allocate(&GpuRequest::count(1)).unwrap();
        let p = pool.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let l = p.allocate(&GpuRequest::count(1), Duration::from_secs(20));
            (l.map(|l| l.indices().to_vec()), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let (got, waited) = waiter.join().unwrap();
        assert_eq!(got.unwrap(), [0]);
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }
}
