//! GPUs (NVIDIA): the host's device nodes and driver files, choosing GPUs for instances
//! ([`GpuPool`]), and what an instance with GPUs gets (parent side).
//!
//! An instance granted GPUs gets its own small `/dev` (a tmpfs made read-only once populated)
//! with the usual nodes plus exactly its `/dev/nvidiaN` nodes and the control nodes
//! (`nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-modeset`, where the host has them),
//! bound from the host. Mount points for them in the shared root template would show up in every
//! other instance, so they are not made there. The device controller allows exactly those nodes
//! (v1 `devices.allow`, v2 the BPF program of [`crate::cgroup::devices`]); without one (an
//! unprivileged user) the selection is by mounts only and the report says `mount-only`.
//!
//! Nodes keep their host names (`/dev/nvidia2` stays `/dev/nvidia2`: the driver's libraries open
//! `/dev/nvidia{minor}` for the GPU they are talking to), while CUDA numbers the GPUs it can
//! open from 0: `CUDA_VISIBLE_DEVICES` is set to `0,...,n-1`.
//!
//! Which GPUs an instance gets is decided by a [`GpuPool`]: one per device directory per
//! process, over the GPUs found there, which hands out [`GpuLease`]s (exclusive, or shared with
//! other sharing leases), waiting in FIFO order or failing when not enough are free. For the
//! host's `/dev` every lease also holds an `flock` per GPU (exclusive or shared) in the state
//! directory, so separate processes (`rsandbox run`, a daemon) do not hand out the same GPU.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::cgroup::devices::DeviceRule;
use crate::error::GpuError;

/// NVIDIA's character major: `/dev/nvidiaN` (minor N), `nvidiactl` (255), `nvidia-modeset` (254).
pub const NVIDIA_MAJOR: u32 = 195;

/// Control nodes bound with any GPU, in this order, when the device directory has them.
/// (`nvidia-uvm` and `nvidia-uvm-tools` have a dynamic major.)
pub const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Where the driver's user-space libraries are looked for, besides the loader cache
/// (`ldconfig -p`).
pub const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// Where the driver's tools are looked for (then this process's `PATH`).
pub const TOOL_DIRS: &[&str] = &[
    "/usr/local/nvidia/bin",
    "/usr/bin",
    "/usr/local/bin",
    "/bin",
    "/usr/sbin",
];

/// The tools bound with GPUs.
pub const TOOLS: &[&str] = &["nvidia-smi"];

/// File-name prefixes of the driver's user-space libraries.
const LIBRARY_PREFIXES: &[&str] = &[
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-",
    "libnvcuvid.so",
    "libnvoptix.so",
];

/// Directories the loader searches without `LD_LIBRARY_PATH` on Debian-like systems (its
/// built-in paths and the multiarch ones in `ld.so.conf`).
const LOADER_DIRS: &[&str] = &[
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/i386-linux-gnu",
    "/usr/lib/i386-linux-gnu",
];

/// One device node of the device directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevNode {
    /// Its name in `/dev` (e.g. `nvidia0`), the same inside.
    pub name: String,
    /// The host path it is bound from.
    pub source: PathBuf,
    pub major: u32,
    pub minor: u32,
}

impl DevNode {
    /// The device controller's rule for it: read and write, no mknod.
    pub fn rule(&self) -> DeviceRule {
        DeviceRule::char_rw(self.major, self.minor)
    }
}

/// What a name in the device directory is.
#[derive(Debug, PartialEq, Eq)]
enum NodeName {
    /// `nvidiaN`.
    Gpu(u32),
    /// One of [`CONTROL_NODES`].
    Control,
}

fn classify(name: &str) -> Option<NodeName> {
    if CONTROL_NODES.contains(&name) {
        return Some(NodeName::Control);
    }
    let digits = name.strip_prefix("nvidia")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok().map(NodeName::Gpu)
}

/// The NVIDIA nodes of a device directory: the host's `/dev`, or a test's directory of fake
/// nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGpus {
    pub dev_dir: PathBuf,
    /// `nvidiaN` by N.
    pub gpus: BTreeMap<u32, DevNode>,
    /// The control nodes present, in [`CONTROL_NODES`] order.
    pub control: Vec<DevNode>,
}

/// The node at `path` if it is a character device (following symlinks).
fn char_node(name: &str, path: &Path) -> Option<DevNode> {
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let rdev = m.rdev();
    Some(DevNode {
        name: name.to_string(),
        source: path.to_path_buf(),
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    })
}

impl HostGpus {
    /// Lists the `nvidiaN` character devices and control nodes in `dev_dir`.
    pub fn scan(dev_dir: &Path) -> HostGpus {
        let mut gpus = BTreeMap::new();
        let mut control = Vec::new();
        for e in std::fs::read_dir(dev_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match classify(&name) {
                Some(NodeName::Gpu(n)) => {
                    if let Some(node) = char_node(&name, &e.path()) {
                        gpus.insert(n, node);
                    }
                }
                Some(NodeName::Control) => control.extend(char_node(&name, &e.path())),
                None => {}
            }
        }
        control.sort_by_key(|n: &DevNode| CONTROL_NODES.iter().position(|c| *c == n.name));
        HostGpus {
            dev_dir: dev_dir.to_path_buf(),
            gpus,
            control,
        }
    }

    /// The GPU indices (the N of `nvidiaN`), ascending.
    pub fn indices(&self) -> Vec<u32> {
        self.gpus.keys().copied().collect()
    }
}

/// The driver's user-space files: libraries (`libcuda`, `libnvidia-*`, ...) and tools
/// (`nvidia-smi`), as found on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverFiles {
    pub libraries: Vec<PathBuf>,
    pub tools: Vec<PathBuf>,
}

fn is_driver_library(name: &str) -> bool {
    LIBRARY_PREFIXES.iter().any(|p| name.starts_with(p)) && name.contains(".so")
}

/// Driver libraries in the loader cache: the `=> PATH` of `ldconfig -p` lines.
fn ldconfig_libraries() -> Vec<PathBuf> {
    let Some(ldconfig) = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        return Vec::new();
    };
    let Ok(out) = std::process::Command::new(ldconfig)
        .arg("-p")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, path) = l.trim().split_once(" => ")?;
            let name = name.split_whitespace().next()?;
            is_driver_library(name).then(|| PathBuf::from(path.trim()))
        })
        .collect()
}

impl DriverFiles {
    /// The host's driver files: libraries from the loader cache and [`LIBRARY_DIRS`], tools
    /// from [`TOOL_DIRS`] and `PATH`. Looked up once per process.
    pub fn host() -> &'static DriverFiles {
        static HOST: OnceLock<DriverFiles> = OnceLock::new();
        HOST.get_or_init(|| {
            let mut tool_dirs: Vec<PathBuf> = TOOL_DIRS.iter().map(PathBuf::from).collect();
            if let Some(path) = std::env::var_os("PATH") {
                tool_dirs.extend(std::env::split_paths(&path).filter(|d| d.is_absolute()));
            }
            let lib_dirs: Vec<PathBuf> = LIBRARY_DIRS.iter().map(PathBuf::from).collect();
            let mut found = DriverFiles::scan(&lib_dirs, &tool_dirs);
            for lib in ldconfig_libraries() {
                if lib.exists() && !found.libraries.contains(&lib) {
                    found.libraries.push(lib);
                }
            }
            found
        })
    }

    /// The driver files in these directories (no loader cache).
    pub fn scan(lib_dirs: &[PathBuf], tool_dirs: &[PathBuf]) -> DriverFiles {
        let mut found = DriverFiles::default();
        for d in lib_dirs {
            let mut names: Vec<String> = std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_driver_library(n))
                .collect();
            names.sort();
            for n in names {
                let p = d.join(n);
                if !found.libraries.contains(&p) {
                    found.libraries.push(p);
                }
            }
        }
        for t in TOOLS {
            if let Some(p) = tool_dirs.iter().map(|d| d.join(t)).find(|p| p.is_file()) {
                found.tools.push(p);
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.libraries.is_empty() && self.tools.is_empty()
    }
}

/// Whether a host directory is visible inside an instance at the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Already bound (a system directory, an interpreter or `--ro`/`--rw` bind).
    Visible,
    /// Not visible: bind it read-only at the same path.
    Bind,
    /// Not bindable (a path rsandbox manages, or a system directory taken from `--rootfs`).
    Skip,
}

/// What an instance with GPUs needs for the driver's files: directories to bind read-only at
/// their own path, and directories for `LD_LIBRARY_PATH` and `PATH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DriverPlan {
    pub bind_dirs: Vec<PathBuf>,
    pub library_path: Vec<PathBuf>,
    pub path: Vec<PathBuf>,
}

/// The plan for `files`, given which directories are visible inside. Directories are taken
/// canonical (symlinks resolved), so they name the same files inside once bound; a file behind
/// a symlink needs both the link's directory and the target's.
pub(crate) fn driver_plan(files: &DriverFiles, coverage: impl Fn(&Path) -> Coverage) -> DriverPlan {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut plan = DriverPlan::default();
    let push = |v: &mut Vec<PathBuf>, d: PathBuf| {
        if !v.contains(&d) {
            v.push(d);
        }
    };
    let default_path: Vec<&str> = crate::defaults::PATH.split(':').collect();
    for (file, is_tool) in files
        .libraries
        .iter()
        .map(|f| (f, false))
        .chain(files.tools.iter().map(|f| (f, true)))
    {
        let Some(parent) = file.parent() else {
            continue;
        };
        let dir = canon(parent);
        let target_dir = canon(file).parent().map(Path::to_path_buf);
        let mut usable = true;
        for d in std::iter::once(dir.clone()).chain(target_dir) {
            match coverage(&d) {
                Coverage::Visible => {}
                Coverage::Bind => push(&mut plan.bind_dirs, d),
                Coverage::Skip => usable = false,
            }
        }
        if !usable {
            continue;
        }
        let s = dir.to_string_lossy();
        if is_tool && !default_path.contains(&s.as_ref()) {
            push(&mut plan.path, dir);
        } else if !is_tool && !LOADER_DIRS.contains(&s.as_ref()) {
            push(&mut plan.library_path, dir);
        }
    }
    plan
}

/// A GPU request: none, a number of GPUs (chosen among the free ones), or these host GPUs
/// (the N of `/dev/nvidiaN`); exclusive unless shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuRequest {
    select: Select,
    share: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Select {
    #[default]
    None,
    Count(u32),
    Devices(Vec<u32>),
}

impl GpuRequest {
    /// No GPU.
    pub fn none() -> GpuRequest {
        GpuRequest::default()
    }
    /// `n` GPUs, whichever are free.
    pub fn count(n: u32) -> GpuRequest {
        GpuRequest {
            select: if n == 0 {
                Select::None
            } else {
                Select::Count(n)
            },
            share: false,
        }
    }
    /// These host GPUs.
    pub fn devices(indices: &[u32]) -> GpuRequest {
        GpuRequest {
            select: if indices.is_empty() {
                Select::None
            } else {
                Select::Devices(indices.to_vec())
            },
            share: false,
        }
    }
    /// Shared: the GPUs may also be held by other shared leases (never by an exclusive one).
    pub fn share(mut self, on: bool) -> GpuRequest {
        self.share = on;
        self
    }
    /// How many GPUs it asks for.
    pub fn len(&self) -> usize {
        match &self.select {
            Select::None => 0,
            Select::Count(n) => *n as usize,
            Select::Devices(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_shared(&self) -> bool {
        self.share
    }
    /// The host GPUs asked for by index, if it names them.
    pub fn indices(&self) -> Option<&[u32]> {
        match &self.select {
            Select::Devices(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for GpuRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.select {
            Select::None => write!(f, "no GPU")?,
            Select::Count(1) => write!(f, "1 GPU")?,
            Select::Count(n) => write!(f, "{n} GPUs")?,
            Select::Devices(v) => write!(f, "GPU {}", crate::error::list_gpus(v))?,
        }
        if self.share {
            write!(f, " (shared)")?;
        }
        Ok(())
    }
}

/// Holders of one GPU in a pool.
#[derive(Clone, Copy, Debug, Default)]
struct Hold {
    exclusive: bool,
    shared: u32,
}

#[derive(Debug, Default)]
struct PoolState {
    holders: BTreeMap<u32, Hold>,
    /// Tickets of waiting requests, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// How often a waiting request looks again at GPUs held by other processes (their release
/// wakes nobody here).
const POLL: Duration = Duration::from_millis(50);

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
            let dir = crate::paths::state_dir()
                .parent()
                .map(|p| p.join("gpus"))
                .unwrap_or_else(|| PathBuf::from("/run/rsandbox/gpus"));
            crate::paths::private_dir(&dir, 0o755)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Some(dir)
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
            .filter(|i| compatible(&st, *i, share))
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
            Select::Devices(v) => {
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
        }
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
            return Ok(GpuLease {
                pool: self.clone(),
                indices: Vec::new(),
                share: req.share,
                _locks: Vec::new(),
            });
        }
        let start = Instant::now();
        let deadline = start.checked_add(wait);
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(ticket);
        loop {
            if st.queue.front() == Some(&ticket) {
                if let Some((indices, locks)) = self.pick(&mut st, req) {
                    st.queue.pop_front();
                    // The next in line may fit in what is left.
                    self.cv.notify_all();
                    return Ok(GpuLease {
                        pool: self.clone(),
                        indices,
                        share: req.share,
                        _locks: locks,
                    });
                }
            }
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left == Some(Duration::ZERO) {
                let ahead = st.queue.iter().position(|t| *t == ticket).unwrap_or(0);
                st.queue.retain(|t| *t != ticket);
                self.cv.notify_all();
                let (free, busy) = self.usage(&st, req.share);
                return Err(GpuError::NotFree {
                    requested: req.to_string(),
                    free,
                    busy,
                    queued_ahead: ahead,
                    waited: if wait.is_zero() {
                        Duration::ZERO
                    } else {
                        now - start
                    },
                });
            }
            let step = match (left, &self.lock_dir) {
                (Some(l), Some(_)) => l.min(POLL),
                (None, Some(_)) => POLL,
                (Some(l), None) => l,
                (None, None) => Duration::from_secs(3600),
            };
            st = self
                .cv
                .wait_timeout(st, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The lock of GPU `i` for a lease (`Ok(None)` without a lock dir); `Err` when another
    /// process holds it in a conflicting way (or the lock file cannot be opened).
    fn lock_gpu(&self, i: u32, share: bool) -> Result<Option<File>, ()> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(format!("gpu-{i}.lock")))
            .map_err(drop)?;
        let op = if share { libc::LOCK_SH } else { libc::LOCK_EX };
        crate::sys::flock(f.as_fd(), op | libc::LOCK_NB).map_err(drop)?;
        Ok(Some(f))
    }

    /// Takes the GPUs for `req` if enough are free now.
    fn pick(&self, st: &mut PoolState, req: &GpuRequest) -> Option<(Vec<u32>, Vec<File>)> {
        let candidates: Vec<u32> = match &req.select {
            Select::None => Vec::new(),
            Select::Devices(v) => v.clone(),
            Select::Count(_) => {
                let mut c: Vec<u32> = self
                    .gpus
                    .iter()
                    .copied()
                    .filter(|i| compatible(st, *i, req.share))
                    .collect();
                // Shared leases spread over the least shared GPUs.
                c.sort_by_key(|i| (st.holders.get(i).map_or(0, |h| h.shared), *i));
                c
            }
        };
        let mut taken = Vec::new();
        let mut locks = Vec::new();
        for i in candidates {
            if taken.len() == req.len() {
                break;
            }
            let got = compatible(st, i, req.share)
                .then(|| self.lock_gpu(i, req.share).ok())
                .flatten();
            match got {
                Some(lock) => {
                    taken.push(i);
                    locks.extend(lock);
                }
                // A named GPU that is busy: the request cannot be met now.
                None if req.indices().is_some() => return None,
                None => {}
            }
        }
        if taken.len() < req.len() {
            return None;
        }
        for i in &taken {
            let h = st.holders.entry(*i).or_default();
            if req.share {
                h.shared += 1;
            } else {
                h.exclusive = true;
            }
        }
        taken.sort_unstable();
        Some((taken, locks))
    }

    /// (free, busy) for a request of this kind, counting other processes' locks.
    fn usage(&self, st: &PoolState, share: bool) -> (Vec<u32>, Vec<u32>) {
        self.gpus
            .iter()
            .partition(|i| compatible(st, **i, share) && self.lock_gpu(**i, share).is_ok())
    }

    fn release(&self, indices: &[u32], share: bool) {
        let mut st = self.lock();
        for i in indices {
            if let Some(h) = st.holders.get_mut(i) {
                if share {
                    h.shared = h.shared.saturating_sub(1);
                } else {
                    h.exclusive = false;
                }
                if !h.exclusive && h.shared == 0 {
                    st.holders.remove(i);
                }
            }
        }
        self.cv.notify_all();
    }
}

/// Whether GPU `i` can be given to a new lease (`share`: a shared one), in-process view.
fn compatible(st: &PoolState, i: u32, share: bool) -> bool {
    match st.holders.get(&i) {
        None => true,
        Some(h) => share && !h.exclusive,
    }
}

/// GPUs held for one instance; released (and their locks dropped) on drop.
pub struct GpuLease {
    pool: Arc<GpuPool>,
    indices: Vec<u32>,
    share: bool,
    _locks: Vec<File>,
}

impl GpuLease {
    /// The host GPUs held (the N of `/dev/nvidiaN`), ascending.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    pub fn is_shared(&self) -> bool {
        self.share
    }
    /// The pool it came from.
    pub fn pool(&self) -> &Arc<GpuPool> {
        &self.pool
    }
}

impl fmt::Debug for GpuLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuLease")
            .field("indices", &self.indices)
            .field("share", &self.share)
            .finish()
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        // In-process holders first, then (with `_locks`, dropped after this) the flocks.
        self.pool.release(&self.indices, self.share);
    }
}

/// `CUDA_VISIBLE_DEVICES` for an instance with `n` GPUs: inside, CUDA enumerates only the GPUs
/// whose nodes it can open, from 0.
pub fn cuda_visible_devices(n: usize) -> String {
    (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// The GPU part of a sandbox's policy, prepared at `build` (crate-internal).
pub(crate) struct GpuSetup {
    pub request: GpuRequest,
    pub pool: Arc<GpuPool>,
    pub host: HostGpus,
    /// How long `create` waits for free GPUs.
    pub wait: Duration,
    /// Test-only: nodes bound and granted by Landlock but left out of the device controller.
    pub uncontrolled: Vec<DevNode>,
}

impl GpuSetup {
    /// Nodes an instance holding `lease` binds into its `/dev`.
    pub fn nodes(&self, lease: &GpuLease) -> Vec<DevNode> {
        let mut v: Vec<DevNode> = lease
            .indices()
            .iter()
            .filter_map(|i| self.host.gpus.get(i).cloned())
            .collect();
        v.extend(self.host.control.iter().cloned());
        v.extend(self.uncontrolled.iter().cloned());
        v
    }

    /// What the device controller allows it besides the minimal set.
    pub fn rules(&self, lease: &GpuLease) -> Vec<DeviceRule> {
        lease
            .indices()
            .iter()
            .filter_map(|i| self.host.gpus.get(i))
            .chain(&self.host.control)
            .map(DevNode::rule)
            .collect()
    }

    /// Inside paths of every node an instance of this sandbox may have (Landlock grants them;
    /// a path an instance lacks is skipped there).
    pub fn landlock_paths(&self) -> Vec<String> {
        self.host
            .gpus
            .values()
            .chain(&self.host.control)
            .chain(&self.uncontrolled)
            .map(|n| format!("/dev/{}", n.name))
            .collect()
    }

    /// A lease for a new instance: `given` (checked against the request), or one from the pool.
    pub fn lease(&self, given: Option<GpuLease>) -> crate::Result<GpuLease> {
        let Some(lease) = given else {
            return Ok(self.pool.allocate(&self.request, self.wait)?);
        };
        let fits = Arc::ptr_eq(&lease.pool, &self.pool)
            && lease.share == self.request.share
            && match self.request.indices() {
                Some(v) => {
                    let mut want = v.to_vec();
                    want.sort_unstable();
                    want == lease.indices
                }
                None => lease.indices.len() == self.request.len(),
            };
        if !fits {
            return Err(crate::Error::invalid(
                "GPU lease",
                format!(
                    "{lease:?} does not match this sandbox's request ({}) or comes from another pool",
                    self.request
                ),
            ));
        }
        Ok(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn node_names_are_classified() {
        assert_eq!(classify("nvidia0"), Some(NodeName::Gpu(0)));
        assert_eq!(classify("nvidia12"), Some(NodeName::Gpu(12)));
        assert_eq!(classify("nvidiactl"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-uvm"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-uvm-tools"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-modeset"), Some(NodeName::Control));
        for other in [
            "nvidia",
            "nvidia01",
            "nvidia-caps",
            "nvidiafoo",
            "nvidia0a",
            "null",
            "nvme0",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn scan_takes_character_devices_only() {
        let d = tempfile::tempdir().unwrap();
        // Symlinks to /dev/null are character devices (1:3) once followed.
        std::os::unix::fs::symlink("/dev/null", d.path().join("nvidia1")).unwrap();
        std::os::unix::fs::symlink("/dev/null", d.path().join("nvidia-uvm")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("nvidiactl")).unwrap();
        std::fs::write(d.path().join("nvidia0"), b"").unwrap(); // a file, not a device
        std::fs::create_dir(d.path().join("nvidia-caps")).unwrap();
        let h = HostGpus::scan(d.path());
        assert_eq!(h.indices(), [1]);
        assert_eq!((h.gpus[&1].major, h.gpus[&1].minor), (1, 3));
        let names: Vec<&str> = h.control.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["nvidiactl", "nvidia-uvm"]);
        assert_eq!(h.control[0].rule(), DeviceRule::char_rw(1, 5));
        assert!(HostGpus::scan(Path::new("/nonexistent")).gpus.is_empty());
    }

    #[test]
    fn driver_files_and_plan() {
        let d = tempfile::tempdir().unwrap();
        let lib = d.path().join("lib");
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for f in [
            "libcuda.so.535.1",
            "libnvidia-ml.so.535.1",
            "libc.so.6",
            "libnvidia-notes.txt",
        ] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        std::os::unix::fs::symlink("libcuda.so.535.1", lib.join("libcuda.so.1")).unwrap();
        std::fs::write(bin.join("nvidia-smi"), b"").unwrap();
        let files = DriverFiles::scan(
            std::slice::from_ref(&lib),
            &[PathBuf::from("/nonexistent"), bin.clone()],
        );
        let names: Vec<String> = files
            .libraries
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["libcuda.so.1", "libcuda.so.535.1", "libnvidia-ml.so.535.1"]
        );
        assert_eq!(files.tools, [bin.join("nvidia-smi")]);

        let canon_lib = std::fs::canonicalize(&lib).unwrap();
        let canon_bin = std::fs::canonicalize(&bin).unwrap();
        let plan = driver_plan(&files, |_| Coverage::Bind);
        assert_eq!(plan.bind_dirs, [canon_lib.clone(), canon_bin.clone()]);
        assert_eq!(plan.library_path, std::slice::from_ref(&canon_lib));
        assert_eq!(plan.path, std::slice::from_ref(&canon_bin));
        // Visible where they are: nothing to bind, still on the search paths.
        let plan = driver_plan(&files, |_| Coverage::Visible);
        assert!(plan.bind_dirs.is_empty());
        assert_eq!(plan.library_path, [canon_lib]);
        // Not bindable (e.g. a system dir of another rootfs): neither bound nor searched.
        assert_eq!(
            driver_plan(&files, |_| Coverage::Skip),
            DriverPlan::default()
        );
        // In the loader's and PATH's own directories: nothing to add.
        let std_files = DriverFiles {
            libraries: vec![PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1")],
            tools: vec![PathBuf::from("/usr/bin/nvidia-smi")],
        };
        assert_eq!(
            driver_plan(&std_files, |_| Coverage::Visible),
            DriverPlan::default()
        );
    }

    #[test]
    fn requests_describe_themselves() {
        assert_eq!(GpuRequest::count(0), GpuRequest::none());
        assert_eq!(GpuRequest::devices(&[]), GpuRequest::none());
        assert_eq!(GpuRequest::count(2).to_string(), "2 GPUs");
        assert_eq!(
            GpuRequest::devices(&[0, 2]).share(true).to_string(),
            "GPU 0, 2 (shared)"
        );
        assert_eq!(GpuRequest::devices(&[3, 1]).len(), 2);
        assert_eq!(cuda_visible_devices(3), "0,1,2");
        assert_eq!(cuda_visible_devices(0), "");
    }

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

    #[test]
    fn locks_exclude_pools_of_other_processes() {
        // Two pools over one lock directory stand for two processes: flock locks belong to
        // open file descriptions, so they conflict within one process just the same.
        let dir = tempfile::tempdir().unwrap();
        let p1 = GpuPool::with_lock_dir([0, 1], dir.path());
        let p2 = GpuPool::with_lock_dir([0, 1], dir.path());
        let a = p1.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!(a.indices(), [0]);
        // p2 knows nothing of `a` in-process, yet skips GPU 0.
        let b = p2.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!(b.indices(), [1]);
        let e = p2.try_allocate(&GpuRequest::count(1)).unwrap_err();
        assert!(e.to_string().contains("free none, in use 0, 1"), "{e}");
        // Shared locks coexist across pools; an exclusive one waits for them.
        drop((a, b));
        let s1 = p1
            .try_allocate(&GpuRequest::devices(&[0]).share(true))
            .unwrap();
        let s2 = p2
            .try_allocate(&GpuRequest::devices(&[0]).share(true))
            .unwrap();
        assert!(p2.try_allocate(&GpuRequest::devices(&[0])).is_err());
        drop(s1);
        let p = p2.clone();
        let waiter = std::thread::spawn(move || {
            p.allocate(&GpuRequest::devices(&[0]), Duration::from_secs(20))
                .map(|l| l.indices().to_vec())
        });
        std::thread::sleep(Duration::from_millis(120));
        drop(s2); // released in p2's own process view too: the poll or the wake-up sees it
        assert_eq!(waiter.join().unwrap().unwrap(), [0]);
    }
}
