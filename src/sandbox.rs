//! The builder and the immutable `Sandbox`: a validated policy, its root template and mount
//! plan, shared by every instance made from it (parent side).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use crate::defaults;
use crate::error::{Error, Result};
use crate::gpu::{self, Coverage, DevNode, GpuLease, GpuPool, GpuRequest, GpuSetup};
use crate::instance::Instance;
use crate::interp::{self, Python};
use crate::ns::mount::{
    Entry, MountPlan, PlanBuilder, DEV_ATTRS, DEV_DIR_ATTRS, RO_ATTRS, RW_ATTRS,
};
use crate::ns::template::{self, Template, DEV_DIRS, DEV_LINKS, DEV_NODES, SYSTEM_DIRS};
use crate::ns::user::SANDBOX_ID;
use crate::outcome::{Enforcement, Outcome};

/// Network access of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Net {
    /// A network namespace with no interfaces up: nothing is reachable.
    #[default]
    None,
    /// A private loopback (`lo` up) in the instance's own namespace; the host is not reachable.
    Loopback,
}

impl std::str::FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Net, String> {
        match s {
            "none" => Ok(Net::None),
            "loopback" => Ok(Net::Loopback),
            _ => Err(format!(
                "unknown network mode {s:?} (expected none or loopback)"
            )),
        }
    }
}

/// One bind of a host path into the instance.
#[derive(Clone, Debug)]
pub struct Bind {
    pub host: PathBuf,
    pub inside: PathBuf,
    pub writable: bool,
}

/// Test-only GPU settings: fake device nodes and driver files (see `SandboxBuilder::gpu_dev_dir`).
#[derive(Clone, Debug, Default)]
struct GpuTest {
    dev_dir: Option<PathBuf>,
    driver_dirs: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
    uncontrolled: Vec<String>,
}

/// Size of a GPU instance's own `/dev` tmpfs (a few empty files and links).
const DEV_TMPFS_SIZE: u64 = 64 << 10;

/// Builds a `Sandbox`; every setting has the default of DESIGN.md §4.
#[derive(Clone, Debug)]
pub struct SandboxBuilder {
    timeout: Duration,
    tmp_size: u64,
    shm_size: u64,
    work_size: u64,
    output_limit: u64,
    net: Net,
    binds: Vec<Bind>,
    env: Vec<(String, String)>,
    python: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    seccomp: crate::seccomp::Profile,
    strict: bool,
    limits: crate::cgroup::Limits,
    cpu_time: Option<Duration>,
    warm: usize,
    gpu: GpuRequest,
    gpu_wait: Duration,
    gpu_test: GpuTest,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            timeout: defaults::TIMEOUT,
            tmp_size: defaults::TMP_SIZE,
            shm_size: defaults::SHM_SIZE,
            work_size: defaults::WORK_SIZE,
            output_limit: defaults::OUTPUT_LIMIT,
            net: Net::None,
            binds: Vec::new(),
            env: Vec::new(),
            python: None,
            rootfs: None,
            seccomp: crate::seccomp::Profile::Default,
            strict: false,
            limits: crate::cgroup::Limits {
                cpus: Some(defaults::CPUS),
                memory: Some(defaults::MEMORY),
                pids: Some(defaults::PIDS),
            },
            cpu_time: None,
            warm: 0,
            gpu: GpuRequest::none(),
            gpu_wait: Duration::ZERO,
            gpu_test: GpuTest::default(),
        }
    }
}

impl SandboxBuilder {
    /// Wall-clock timeout of each run (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Size of `/tmp` in bytes (default 256 MiB).
    pub fn tmp_size(mut self, bytes: u64) -> Self {
        self.tmp_size = bytes;
        self
    }
    /// Size of `/dev/shm` in bytes (default 64 MiB).
    pub fn shm_size(mut self, bytes: u64) -> Self {
        self.shm_size = bytes;
        self
    }
    /// Size of the work dir in bytes (default 256 MiB).
    pub fn work_size(mut self, bytes: u64) -> Self {
        self.work_size = bytes;
        self
    }
    /// Output kept per stream in bytes (default 1 MiB); the rest is counted and dropped.
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.output_limit = bytes;
        self
    }
    pub fn net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }
    /// Bind host path `host` read-only at `inside` (default: the same path).
    pub fn ro(mut self, host: impl Into<PathBuf>, inside: Option<PathBuf>) -> Self {
        let host = host.into();
        self.binds.push(Bind {
            inside: inside.unwrap_or_else(|| host.clone()),
            host,
            writable: false,
        });
        self
    }
    /// Bind host path `host` read-write at `inside` (default: the same path).
    pub fn rw(mut self, host: impl Into<PathBuf>, inside: Option<PathBuf>) -> Self {
        let host = host.into();
        self.binds.push(Bind {
            inside: inside.unwrap_or_else(|| host.clone()),
            host,
            writable: true,
        });
        self
    }
    /// Adds or overrides an environment variable of every program.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// The Python interpreter (a real one, a pyenv shim or a virtualenv's python).
    pub fn python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = Some(path.into());
        self
    }
    /// Take system directories from this tree (e.g. made by debootstrap) instead of the host.
    pub fn rootfs(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rootfs = Some(dir.into());
        self
    }

    /// The seccomp profile (default: `seccomp-profiles/default.json`).
    pub fn seccomp(mut self, profile: crate::seccomp::Profile) -> Self {
        self.seccomp = profile;
        self
    }

    /// CPU quota in CPUs (default 1; e.g. 0.5 for half a CPU). Programs are also pinned to
    /// `ceil(cpus)` CPUs so thread pools size themselves to it.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.limits.cpus = Some(cpus);
        self
    }
    /// Memory limit in bytes, swap excluded (default 512 MiB).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.limits.memory = Some(bytes);
        self
    }
    /// Maximum processes and threads (default 256).
    pub fn pids(mut self, n: u64) -> Self {
        self.limits.pids = Some(n);
        self
    }
    /// CPU time limit of each run (all its processes together); none by default.
    pub fn cpu_time(mut self, t: Duration) -> Self {
        self.cpu_time = Some(t);
        self
    }

    /// GPUs per instance (default 0: no GPU node at all). Each instance gets `n` of the host's
    /// GPUs that no other instance holds (see [`GpuPool`]; [`SandboxBuilder::gpu_share`]
    /// relaxes that), bound into its `/dev` with the control nodes, allowed by the device
    /// controller, numbered `0..n` for CUDA (`CUDA_VISIBLE_DEVICES`). Replaces `gpu_devices`.
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpu = GpuRequest::count(n).share(self.gpu.is_shared());
        self
    }
    /// These host GPUs (the N of `/dev/nvidiaN`) for every instance. Replaces `gpus`.
    pub fn gpu_devices(mut self, indices: &[u32]) -> Self {
        self.gpu = GpuRequest::devices(indices).share(self.gpu.is_shared());
        self
    }
    /// Let an instance hold its GPUs together with other sharing instances (never with an
    /// exclusive one). Default: exclusive.
    pub fn gpu_share(mut self, on: bool) -> Self {
        self.gpu = self.gpu.share(on);
        self
    }
    /// How long `create` and `run` wait (in FIFO order) for enough free GPUs before failing
    /// with [`crate::GpuError::NotFree`]. Default 0: fail at once.
    pub fn gpu_wait(mut self, t: Duration) -> Self {
        self.gpu_wait = t;
        self
    }
    /// Test-only: take the NVIDIA nodes from `dir` (fake nodes made with mknod) instead of
    /// `/dev`. The environment variable `RSANDBOX_GPU_DEV_DIR` does the same for the CLI.
    #[doc(hidden)]
    pub fn gpu_dev_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.gpu_test.dev_dir = Some(dir.into());
        self
    }
    /// Test-only: look for the driver's libraries and tools only in these directories (no
    /// loader cache).
    #[doc(hidden)]
    pub fn gpu_driver_dirs(mut self, libraries: Vec<PathBuf>, tools: Vec<PathBuf>) -> Self {
        self.gpu_test.driver_dirs = Some((libraries, tools));
        self
    }
    /// Test-only: also bind these nodes of the device directory into `/dev` and grant them in
    /// Landlock, but leave them out of the device controller's allow list, so that a test can
    /// show the controller is what denies them.
    #[doc(hidden)]
    pub fn gpu_uncontrolled_nodes(mut self, names: &[&str]) -> Self {
        self.gpu_test.uncontrolled = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Fail at `build` instead of degrading when the kernel cannot enforce a layer (Landlock,
    /// seccomp). Default: best effort, with the report's `enforcement` saying what held.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Keeps `n` instances created ahead of time for [`Sandbox::run`] (default 0: none), and
    /// tears used ones down after the report, both on a background thread (see the README's
    /// "Speed"). The instances and the thread go when the last clone of the `Sandbox` is
    /// dropped. At most 64.
    pub fn warm(mut self, n: usize) -> Self {
        self.warm = n;
        self
    }

    /// Validates everything once, prepares the root template and the mount plan.
    pub fn build(self) -> Result<Sandbox> {
        validate_env(&self.env)?;
        if self.warm > 0 && !self.gpu.is_empty() {
            return Err(Error::invalid(
                "warm pool",
                "cannot be combined with GPUs: idle instances would hold their GPUs",
            ));
        }
        if self.warm > 64 {
            return Err(Error::invalid(
                "warm pool",
                format!("{} instances is above the maximum of 64", self.warm),
            ));
        }
        for (field, v) in [
            ("tmp size", self.tmp_size),
            ("work size", self.work_size),
            ("shm size", self.shm_size),
        ] {
            if v < 4096 {
                return Err(Error::invalid(
                    field,
                    format!("{v} bytes is below the minimum of 4096"),
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be greater than zero"));
        }
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if let Some(c) = self.limits.cpus {
            if !(c >= 0.01 && c <= ncpu as f64) {
                return Err(Error::invalid(
                    "cpus",
                    format!("{c} is outside 0.01..={ncpu} (this host's CPUs)"),
                ));
            }
        }
        if let Some(m) = self.limits.memory {
            if m < (8 << 20) {
                return Err(Error::invalid(
                    "memory",
                    format!("{} MiB is below the minimum of 8 MiB", m >> 20),
                ));
            }
        }
        if self.limits.pids == Some(0) {
            return Err(Error::invalid("pids", "must be at least 1"));
        }
        if self.cpu_time.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid("cpu time", "must be greater than zero"));
        }
        let probe = crate::probe::host();
        if !probe.userns {
            return Err(Error::Unsupported {
                feature: "user namespaces",
                message: probe.userns_note.clone().unwrap_or_default(),
            });
        }
        let source = match &self.rootfs {
            None => PathBuf::from("/"),
            Some(r) => {
                let c = std::fs::canonicalize(r)
                    .map_err(|e| Error::invalid("rootfs", format!("{}: {e}", r.display())))?;
                if !c.join("usr").is_dir() {
                    return Err(Error::invalid(
                        "rootfs",
                        format!("{} has no usr directory", c.display()),
                    ));
                }
                c
            }
        };
        let python = match &self.python {
            Some(p) => Some(interp::resolve_python(p, &source)?),
            None => interp::default_python(&source),
        };

        let seccomp = crate::seccomp::load(&self.seccomp)?;
        let template = template::ensure(&source)?;
        let state_dir = crate::state::open_dir()?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            crate::state::sweep(&state_dir);
        });

        let mut binds = Vec::new();
        if let Some(py) = &python {
            for b in &py.binds {
                binds.push(Bind {
                    host: b.clone(),
                    inside: b.clone(),
                    writable: false,
                });
            }
        }
        for b in &self.binds {
            let host = std::fs::canonicalize(&b.host).map_err(|e| {
                Error::invalid(
                    if b.writable { "rw" } else { "ro" },
                    format!("{}: {e}", b.host.display()),
                )
            })?;
            template::check_inside(&b.inside).map_err(|m| {
                Error::invalid(
                    if b.writable { "rw" } else { "ro" },
                    format!("inside path {}: {m}", b.inside.display()),
                )
            })?;
            binds.push(Bind {
                host,
                inside: b.inside.clone(),
                writable: b.writable,
            });
        }
        let mut env = Vec::new();
        let gpu = if self.gpu.is_empty() {
            None
        } else {
            Some(self.prepare_gpus(&source, &template, &mut binds, &mut env)?)
        };
        env.extend(self.env.iter().cloned());
        // Parents before children, so nested binds land on their parent's contents.
        binds.sort_by_key(|b| b.inside.components().count());
        for b in &binds {
            // Under /tmp the instance's own tmpfs hides the template: the reaper creates those.
            if !in_instance_tmpfs(&b.inside) {
                template.ensure_mount_point(&b.inside, b.host.is_dir())?;
            } else if !b.host.is_dir() {
                return Err(Error::invalid(
                    "bind",
                    format!(
                        "{}: only directories can be bound under /tmp",
                        b.inside.display()
                    ),
                ));
            }
        }
        let plan_spec = PlanSpec {
            source: source.clone(),
            shm_size: self.shm_size,
            tmp_size: self.tmp_size,
            work_size: self.work_size,
            binds,
        };
        let plan = mount_plan(&template, &plan_spec, None);
        let mut writable = vec![
            defaults::WORK_DIR.to_string(),
            "/tmp".into(),
            "/dev/shm".into(),
        ];
        writable.extend(
            plan_spec
                .binds
                .iter()
                .filter(|b| b.writable)
                .map(|b| b.inside.display().to_string()),
        );
        let mut devices: Vec<String> = DEV_NODES.iter().map(|n| format!("/dev/{n}")).collect();
        devices.extend(gpu.iter().flat_map(|g| g.landlock_paths()));
        let landlock = crate::landlock::plan(
            probe.landlock_abi,
            &writable,
            &devices,
            self.net == Net::None,
        );
        if self.strict {
            if landlock.abi == 0 {
                return Err(Error::Unsupported {
                    feature: "Landlock",
                    message: "--strict asks for Landlock and this kernel has none".into(),
                });
            }
            if seccomp.is_some() && !probe.seccomp {
                return Err(Error::Unsupported {
                    feature: "seccomp",
                    message: "--strict asks for a seccomp filter and this kernel has none".into(),
                });
            }
        }
        let cgroups = crate::cgroup::setup();
        if let (true, Err(why)) = (self.strict, cgroups) {
            return Err(Error::Unsupported {
                feature: "cgroups",
                message: format!("--strict asks for cgroup limits: {why}"),
            });
        }
        let (memory, cpu, pids, devices) = match cgroups {
            Ok(s) => {
                let devices = match s {
                    crate::cgroup::Setup::V2 { .. } if crate::sys::ids().0 == 0 => "bpf",
                    crate::cgroup::Setup::V1 { bases }
                        if bases.iter().any(|(c, _)| *c == "devices") =>
                    {
                        "cgroup1"
                    }
                    _ => "mount-only",
                };
                (s.name(), s.name(), s.name(), devices)
            }
            // Without cgroups: pids by RLIMIT_NPROC (counted per user namespace), memory by
            // the supervisor's watchdog, CPU time by RLIMIT_CPU plus the watchdog; the CPU
            // quota only as affinity.
            Err(_) => ("watchdog", "none", "rlimit", "mount-only"),
        };
        let enforcement = Enforcement {
            memory: memory.into(),
            cpu: cpu.into(),
            pids: pids.into(),
            devices: devices.into(),
            wall: "supervisor".into(),
            landlock: crate::landlock::describe(&landlock),
            seccomp: seccomp.as_ref().map_or("none".into(), |c| c.name.clone()),
        };
        let inner = Arc::new(Inner {
            timeout: self.timeout,
            output_limit: self.output_limit,
            env,
            python,
            template,
            plan,
            plan_spec,
            gpu,
            state_dir,
            net: self.net,
            hostname: CString::new(defaults::HOSTNAME).unwrap(),
            enforcement,
            seccomp,
            landlock,
            limits: self.limits,
            cpu_time: self.cpu_time,
            ncpu,
            strict: self.strict,
        });
        let pool = match self.warm {
            0 => None,
            n => Some(Arc::new(
                crate::pool::Pool::start(inner.clone(), n)
                    .map_err(|e| Error::io("starting the warm pool's thread", PathBuf::new(), e))?,
            )),
        };
        Ok(Sandbox { inner, pool })
    }
}

impl SandboxBuilder {
    /// Checks the GPU request against the host and prepares what its instances need: the
    /// driver's directories to bind (added to `binds`), their environment (added to `env`).
    fn prepare_gpus(
        &self,
        source: &Path,
        template: &Template,
        binds: &mut Vec<Bind>,
        env: &mut Vec<(String, String)>,
    ) -> Result<GpuSetup> {
        let dev_dir = self
            .gpu_test
            .dev_dir
            .clone()
            .or_else(|| std::env::var_os("RSANDBOX_GPU_DEV_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/dev"));
        let host = gpu::HostGpus::scan(&dev_dir);
        let pool = GpuPool::for_dev_dir(&dev_dir)
            .map_err(|e| Error::io("preparing the GPU locks for", dev_dir.clone(), e))?;
        pool.check(&self.gpu, &dev_dir)?;
        let mut uncontrolled = Vec::new();
        for name in &self.gpu_test.uncontrolled {
            let node = host
                .control
                .iter()
                .chain(host.gpus.values())
                .find(|n| &n.name == name)
                .cloned();
            uncontrolled.push(node.ok_or_else(|| {
                Error::invalid(
                    "gpu test node",
                    format!("{name}: no such NVIDIA node in {}", dev_dir.display()),
                )
            })?);
        }

        let files = match &self.gpu_test.driver_dirs {
            Some((libs, tools)) => gpu::DriverFiles::scan(libs, tools),
            None => gpu::DriverFiles::host().clone(),
        };
        let from_host = source == Path::new("/");
        let coverage = |d: &Path| {
            let managed = [
                "/proc",
                "/dev",
                "/sys",
                "/etc",
                "/var/tmp",
                defaults::WORK_DIR,
            ];
            if d == Path::new("/") || managed.iter().any(|m| d.starts_with(m)) {
                return Coverage::Skip;
            }
            if SYSTEM_DIRS
                .iter()
                .any(|s| d.starts_with(Path::new("/").join(s)))
            {
                // With --rootfs the system directories are that tree's: its own driver files.
                return if from_host {
                    Coverage::Visible
                } else {
                    Coverage::Skip
                };
            }
            if binds
                .iter()
                .any(|b| b.host == b.inside && d.starts_with(&b.host))
            {
                return Coverage::Visible;
            }
            Coverage::Bind
        };
        let driver = gpu::driver_plan(&files, coverage);
        for d in &driver.bind_dirs {
            binds.push(Bind {
                host: d.clone(),
                inside: d.clone(),
                writable: false,
            });
        }
        // The host's current loader cache: the template's copy may predate the driver.
        let cache = Path::new("/etc/ld.so.cache");
        if from_host && cache.is_file() && template.root.join("etc/ld.so.cache").is_file() {
            binds.push(Bind {
                host: cache.to_path_buf(),
                inside: cache.to_path_buf(),
                writable: false,
            });
        }

        let join = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        env.push((
            "CUDA_VISIBLE_DEVICES".into(),
            gpu::cuda_visible_devices(self.gpu.len()),
        ));
        if !driver.library_path.is_empty() {
            env.push(("LD_LIBRARY_PATH".into(), join(&driver.library_path)));
        }
        if !driver.path.is_empty() {
            env.push((
                "PATH".into(),
                format!("{}:{}", defaults::PATH, join(&driver.path)),
            ));
        }
        Ok(GpuSetup {
            request: self.gpu.clone(),
            pool,
            host,
            wait: self.gpu_wait,
            uncontrolled,
        })
    }
}

fn validate_env(env: &[(String, String)]) -> Result<()> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Error::invalid(
                "env",
                format!("{k:?}: names must be non-empty without '=' or NUL, values without NUL"),
            ));
        }
    }
    Ok(())
}

/// What the mount plan is made from (kept to make GPU instances' plans, which differ in `/dev`).
pub(crate) struct PlanSpec {
    source: PathBuf,
    shm_size: u64,
    tmp_size: u64,
    work_size: u64,
    /// Sorted parents first.
    binds: Vec<Bind>,
}

/// The mount plan of DESIGN.md §3 step 6, as data. `gpu_nodes`: an instance with GPUs, which
/// gets a `/dev` of its own (a tmpfs made read-only once populated) with these nodes bound
/// besides the usual ones; mount points for them in the shared template would show up in every
/// instance.
pub(crate) fn mount_plan(t: &Template, s: &PlanSpec, gpu_nodes: Option<&[DevNode]>) -> MountPlan {
    let mut p = PlanBuilder::new(&t.root);
    for d in SYSTEM_DIRS {
        let src = s.source.join(d);
        if std::fs::symlink_metadata(&src)
            .map(|m| m.is_dir())
            .unwrap_or(false)
            && t.root.join(d).is_dir()
        {
            p.bind(&src, &Path::new("/").join(d), true, RO_ATTRS);
        }
    }
    p.proc(Path::new("/proc"));
    let dev = Path::new("/dev");
    if let Some(nodes) = gpu_nodes {
        p.tmpfs(dev, DEV_TMPFS_SIZE, 0o755, Some(SANDBOX_ID), false);
        let mut entries: Vec<(&str, Entry)> = DEV_DIRS.iter().map(|d| (*d, Entry::Dir)).collect();
        entries.extend(DEV_NODES.iter().map(|n| (*n, Entry::File)));
        entries.extend(nodes.iter().map(|n| (n.name.as_str(), Entry::File)));
        entries.extend(
            DEV_LINKS
                .iter()
                .map(|(n, target)| (*n, Entry::Symlink(CString::new(*target).expect("no NUL")))),
        );
        p.populate(dev, entries);
    }
    for n in DEV_NODES {
        p.bind(&dev.join(n), &dev.join(n), false, DEV_ATTRS);
    }
    if let Some(nodes) = gpu_nodes {
        for n in nodes {
            p.bind(&n.source, &dev.join(&n.name), false, DEV_ATTRS);
        }
        p.setattr(dev, DEV_DIR_ATTRS);
    }
    p.tmpfs(Path::new("/dev/shm"), s.shm_size, 0o1777, None, false);
    p.tmpfs(Path::new("/tmp"), s.tmp_size, 0o1777, None, false);
    p.tmpfs(
        Path::new(defaults::WORK_DIR),
        s.work_size,
        0o755,
        Some(SANDBOX_ID),
        true,
    );
    for bind in &s.binds {
        if in_instance_tmpfs(&bind.inside) {
            p.mkdir_p(&bind.inside);
        }
        p.bind(
            &bind.host,
            &bind.inside,
            true,
            if bind.writable { RW_ATTRS } else { RO_ATTRS },
        );
    }
    p.finish()
}

/// Whether `inside` lies in a tmpfs each instance mounts fresh (so its mount point must be made
/// there, not in the template). Only interpreter binds can be there: `--ro`/`--rw` refuse it.
fn in_instance_tmpfs(inside: &Path) -> bool {
    inside.starts_with("/tmp") || inside.starts_with("/dev/shm")
}

/// Everything a `Sandbox` shares with its instances.
pub(crate) struct Inner {
    pub timeout: Duration,
    pub output_limit: u64,
    pub env: Vec<(String, String)>,
    pub python: Option<Python>,
    pub template: Template,
    /// The plan of instances without GPUs (those with GPUs get one of their own).
    pub plan: MountPlan,
    pub plan_spec: PlanSpec,
    pub gpu: Option<GpuSetup>,
    pub state_dir: PathBuf,
    pub net: Net,
    pub hostname: CString,
    pub enforcement: Enforcement,
    pub seccomp: Option<crate::seccomp::Compiled>,
    pub landlock: crate::landlock::Plan,
    pub limits: crate::cgroup::Limits,
    pub cpu_time: Option<Duration>,
    pub ncpu: usize,
    pub strict: bool,
}

/// A validated, immutable sandbox policy. Cheap to clone, `Send + Sync`: run it from as many
/// threads as you like.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
    pool: Option<Arc<crate::pool::Pool>>,
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// One-shot run: create an instance, copy the command's files in, run it, destroy
    /// everything. On timeout the whole instance is killed. With a warm pool
    /// ([`SandboxBuilder::warm`]) the instance comes from the pool when one is ready, and is
    /// destroyed by the pool's thread after this returns.
    pub fn run(&self, cmd: &Command) -> Result<Outcome> {
        if let Some(c) = &cmd.cancel {
            c.check()?;
        }
        let inst = self.instance()?;
        let out = inst.exec_inner(cmd, true);
        self.retire(inst)?;
        out
    }

    /// A fresh instance for one job (files in, runs, files out): from the warm pool when one is
    /// ready, else created now. Give it back with [`Sandbox::retire`].
    pub fn instance(&self) -> Result<Instance> {
        match self.pool.as_ref().and_then(|p| p.take()) {
            Some(i) => Ok(i),
            None => self.create(),
        }
    }

    /// Destroys a used instance: on the warm pool's thread when this sandbox has a pool (so the
    /// caller does not wait for the teardown), else here.
    pub fn retire(&self, inst: Instance) -> Result<()> {
        match &self.pool {
            Some(p) => {
                p.finish(inst);
                Ok(())
            }
            None => inst.destroy(),
        }
    }

    /// Changes how many idle instances the warm pool keeps (at most 64; 0 destroys the idle
    /// ones and keeps the thread for teardown). No effect on a sandbox built without a pool.
    pub fn set_warm(&self, n: usize) {
        if let Some(p) = &self.pool {
            p.set_warm(n.min(64));
        }
    }

    /// The warm pool's figures (None: no pool).
    pub fn pool_stats(&self) -> Option<crate::PoolStats> {
        self.pool.as_ref().map(|p| p.stats())
    }

    /// Creates a live instance for many `exec`s (a session). With GPUs, its lease comes from
    /// [`Sandbox::gpu_pool`], waiting up to `gpu_wait` for enough free GPUs.
    pub fn create(&self) -> Result<Instance> {
        Instance::create(self.inner.clone(), None)
    }

    /// Creates an instance holding GPUs its caller allocated from [`Sandbox::gpu_pool`] (a
    /// daemon queueing requests itself); the lease must match [`Sandbox::gpu_request`]. It is
    /// released when the instance is destroyed.
    pub fn create_with_gpus(&self, lease: GpuLease) -> Result<Instance> {
        Instance::create(self.inner.clone(), Some(lease))
    }

    /// The pool this sandbox's instances take their GPUs from (None: it asks for no GPU).
    pub fn gpu_pool(&self) -> Option<&Arc<GpuPool>> {
        self.inner.gpu.as_ref().map(|g| &g.pool)
    }

    /// What each instance asks its GPU pool for.
    pub fn gpu_request(&self) -> GpuRequest {
        self.inner
            .gpu
            .as_ref()
            .map_or_else(GpuRequest::none, |g| g.request.clone())
    }

    /// What enforces each limit in instances of this sandbox.
    pub fn enforcement(&self) -> &Enforcement {
        &self.inner.enforcement
    }

    /// The root template directory in use.
    pub fn template_dir(&self) -> &Path {
        &self.inner.template.root
    }

    /// The state directory in use.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }
}

/// Where a program's stdin comes from.
#[derive(Clone, Debug, Default)]
pub enum Stdin {
    /// End of file at once.
    #[default]
    Null,
    Bytes(Vec<u8>),
    /// A host file (or `/dev/stdin`), streamed.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub(crate) enum Program {
    Argv(Vec<OsString>),
    PythonCode(String),
    PythonScript(String, Vec<OsString>),
}

/// A program to run in an instance, with its files, environment, stdin and timeout.
#[derive(Clone, Debug)]
pub struct Command {
    pub(crate) program: Program,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdin: Stdin,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pass_through: bool,
    pub(crate) files: Vec<(String, Vec<u8>, u32)>,
    pub(crate) cancel: Option<crate::Cancel>,
}

impl Command {
    fn with(program: Program) -> Command {
        Command {
            program,
            env: Vec::new(),
            stdin: Stdin::Null,
            timeout: None,
            pass_through: false,
            files: Vec::new(),
            cancel: None,
        }
    }
    /// A program looked up on the instance's PATH (or a path inside it).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::with(Program::Argv(vec![program.as_ref().to_os_string()]))
    }
    /// Python code, run as `python -c CODE` with the sandbox's interpreter.
    pub fn python(code: impl Into<String>) -> Command {
        Command::with(Program::PythonCode(code.into()))
    }
    /// A Python script in the work dir, run with the sandbox's interpreter.
    pub fn python_script(path: impl Into<String>) -> Command {
        Command::with(Program::PythonScript(path.into(), Vec::new()))
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Command {
        match &mut self.program {
            Program::Argv(v) | Program::PythonScript(_, v) => v.push(a.as_ref().to_os_string()),
            Program::PythonCode(_) => {}
        }
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Command {
        for a in args {
            self = self.arg(a);
        }
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn stdin(mut self, s: Stdin) -> Command {
        self.stdin = s;
        self
    }
    /// Overrides the sandbox's wall timeout for this run.
    pub fn timeout(mut self, t: Duration) -> Command {
        self.timeout = Some(t);
        self
    }
    /// Copy output to this process's stdout/stderr as it arrives (still capped) instead of
    /// capturing it in the `Outcome`.
    pub fn pass_through(mut self, on: bool) -> Command {
        self.pass_through = on;
        self
    }
    /// A file copied into the work dir (path relative to it) before the program starts.
    pub fn file(mut self, path: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Command {
        self.files.push((path.into(), data.into(), mode));
        self
    }

    /// Cancels this run when `cancel` is cancelled: before it starts, it is not started;
    /// while it runs, it is killed (as on a timeout). The run then returns `Err(Cancelled)`.
    pub fn cancel_on(mut self, cancel: &crate::Cancel) -> Command {
        self.cancel = Some(cancel.clone());
        self
    }

    /// argv[0] as given, for messages.
    pub(crate) fn name(&self) -> String {
        match &self.program {
            Program::Argv(v) => v[0].to_string_lossy().into_owned(),
            Program::PythonCode(_) | Program::PythonScript(..) => "python".into(),
        }
    }
}

/// Turns a command into argv, envp and candidate executable paths.
pub(crate) fn resolve(
    inner: &Inner,
    cmd: &Command,
) -> Result<(Vec<CString>, Vec<CString>, Vec<CString>)> {
    validate_env(&cmd.env)?;
    let cs = |b: &[u8], what: &'static str| {
        CString::new(b).map_err(|_| Error::invalid(what, "contains a NUL byte"))
    };
    let python = || {
        inner.python.as_ref().ok_or_else(|| {
            Error::invalid(
                "python",
                "no python3 found in /usr/bin or /usr/local/bin; pass --python PATH",
            )
        })
    };
    let argv: Vec<CString> = match &cmd.program {
        Program::Argv(v) => v
            .iter()
            .map(|a| cs(a.as_bytes(), "argument"))
            .collect::<Result<_>>()?,
        Program::PythonCode(code) => {
            let py = python()?;
            vec![
                cs(py.exe.as_os_str().as_bytes(), "python")?,
                CString::new("-c").unwrap(),
                cs(code.as_bytes(), "code")?,
            ]
        }
        Program::PythonScript(path, args) => {
            let py = python()?;
            let mut v = vec![
                cs(py.exe.as_os_str().as_bytes(), "python")?,
                cs(path.as_bytes(), "script")?,
            ];
            for a in args {
                v.push(cs(a.as_bytes(), "argument")?);
            }
            v
        }
    };
    if argv.is_empty() || argv[0].as_bytes().is_empty() {
        return Err(Error::invalid("command", "empty program name"));
    }
    let mut env = defaults::environment();
    for (k, v) in inner.env.iter().chain(&cmd.env) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let envp = env
        .iter()
        .map(|(k, v)| cs(format!("{k}={v}").as_bytes(), "env"))
        .collect::<Result<Vec<_>>>()?;
    let arg0 = argv[0].as_bytes();
    let paths = if arg0.contains(&b'/') {
        vec![argv[0].clone()]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| {
                let mut b = d.trim_end_matches('/').as_bytes().to_vec();
                b.push(b'/');
                b.extend_from_slice(arg0);
                cs(&b, "path")
            })
            .collect::<Result<Vec<_>>>()?
    };
    Ok((argv, envp, paths))
}
