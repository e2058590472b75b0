//! `SandboxBuilder`: the settings of a sandbox with the defaults of DESIGN.md §4, and `build`,
//! which validates them and prepares the policy its instances share (filters, template, mount
//! plan, GPUs, what enforces each limit, the warm pool).

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use super::gpus::GpuTest;
use super::Sandbox;
use crate::command::validate_env;
use crate::defaults;
use crate::error::{Error, Result};
use crate::gpu::{GpuRequest, GpuSetup};
use crate::interp::{self, Python};
use crate::ns::template::{self, Template, DEV_NODES};
use crate::outcome::{Enforcement, LandlockAbi, Mechanism};
use crate::policy::{in_instance_tmpfs, mount_plan, Bind, Net, PlanSpec, Policy};
use crate::pool::Pool;
use crate::probe::HostProbe;

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
    max_ptys: u32,
    pub(super) gpu: GpuRequest,
    pub(super) gpu_wait: Duration,
    pub(super) gpu_test: GpuTest,
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
            max_ptys: defaults::MAX_PTYS,
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
    /// Ptys each instance's own devpts may hold at once (default 64; 1 to 1024): one more
    /// fails inside with `ENOSPC`.
    pub fn max_ptys(mut self, n: u32) -> Self {
        self.max_ptys = n;
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
        let ncpu = self.validate()?;
        let probe = crate::probe::host();
        if !probe.userns {
            return Err(Error::Unsupported {
                feature: "user namespaces",
                message: probe.userns_note.clone().unwrap_or_default(),
            });
        }
        let source = self.source()?;
        let python = match &self.python {
            Some(p) => Some(interp::resolve_python(p, &source)?),
            None => interp::default_python(&source),
        };
        let seccomp = crate::seccomp::load(&self.seccomp)?;
        let template = template::ensure(&source)?;
        let state_dir = open_state_dir()?;
        let mut binds = self.binds(python.as_ref())?;
        let mut env = Vec::new();
        let gpu = if self.gpu.is_empty() {
            None
        } else {
            Some(self.prepare_gpus(&source, &template, &mut binds, &mut env)?)
        };
        env.extend(self.env.iter().cloned());
        mount_points(&template, &mut binds)?;
        let plan_spec = PlanSpec {
            source,
            shm_size: self.shm_size,
            tmp_size: self.tmp_size,
            work_size: self.work_size,
            binds,
            max_ptys: self.max_ptys,
        };
        let plan = mount_plan(&template, &plan_spec, None);
        let landlock = self.landlock(probe, &plan_spec, gpu.as_ref());
        self.check_strict(probe, &landlock, seccomp.is_some())?;
        let enforcement = Enforcement {
            seccomp: seccomp.as_ref().map_or("none".into(), |c| c.name.clone()),
            ..self.limit_mechanisms(&landlock)?
        };
        let inner = Arc::new(Policy {
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
            n => Some(Arc::new(Pool::start(inner.clone(), n).map_err(|e| {
                Error::io("starting the warm pool's thread", PathBuf::new(), e)
            })?)),
        };
        Ok(Sandbox { inner, pool })
    }

    /// Checks the settings against each other and this host; returns the host's CPU count.
    fn validate(&self) -> Result<usize> {
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
        if !(1..=defaults::MAX_PTYS_LIMIT).contains(&self.max_ptys) {
            return Err(Error::invalid(
                "max ptys",
                format!(
                    "{} is outside 1..={}",
                    self.max_ptys,
                    defaults::MAX_PTYS_LIMIT
                ),
            ));
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
        Ok(ncpu)
    }

    /// Where the system directories come from: the host, or the `rootfs` tree (which must
    /// have a `usr`).
    fn source(&self) -> Result<PathBuf> {
        let Some(r) = &self.rootfs else {
            return Ok(PathBuf::from("/"));
        };
        let c = std::fs::canonicalize(r)
            .map_err(|e| Error::invalid("rootfs", format!("{}: {e}", r.display())))?;
        if !c.join("usr").is_dir() {
            return Err(Error::invalid(
                "rootfs",
                format!("{} has no usr directory", c.display()),
            ));
        }
        Ok(c)
    }

    /// The interpreter's directories, then the caller's binds, each host path resolved and each
    /// inside path checked.
    fn binds(&self, python: Option<&Python>) -> Result<Vec<Bind>> {
        let mut binds = Vec::new();
        if let Some(py) = python {
            for b in &py.binds {
                binds.push(Bind {
                    host: b.clone(),
                    inside: b.clone(),
                    writable: false,
                });
            }
        }
        for b in &self.binds {
            let field = if b.writable { "rw" } else { "ro" };
            let host = std::fs::canonicalize(&b.host)
                .map_err(|e| Error::invalid(field, format!("{}: {e}", b.host.display())))?;
            template::check_inside(&b.inside).map_err(|m| {
                Error::invalid(field, format!("inside path {}: {m}", b.inside.display()))
            })?;
            binds.push(Bind {
                host,
                inside: b.inside.clone(),
                writable: b.writable,
            });
        }
        Ok(binds)
    }

    /// The Landlock plan: the writable places (work dir, `/tmp`, `/dev/shm`, `rw` binds) and
    /// the device nodes (GPUs' included); TCP closed when the network is.
    fn landlock(
        &self,
        probe: &HostProbe,
        plan_spec: &PlanSpec,
        gpu: Option<&GpuSetup>,
    ) -> crate::landlock::Plan {
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
        // The instance's own devpts: its ptmx and the ptys opened through it.
        devices.push("/dev/pts".into());
        devices.extend(gpu.iter().flat_map(|g| g.landlock_paths()));
        crate::landlock::plan(
            probe.landlock_abi,
            &writable,
            &devices,
            self.net == Net::None,
        )
    }

    /// Under `strict`, a layer this kernel cannot enforce (Landlock, seccomp) is an error.
    fn check_strict(
        &self,
        probe: &HostProbe,
        landlock: &crate::landlock::Plan,
        filtered: bool,
    ) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        if landlock.abi == 0 {
            return Err(Error::Unsupported {
                feature: "Landlock",
                message: "--strict asks for Landlock and this kernel has none".into(),
            });
        }
        if filtered && !probe.seccomp {
            return Err(Error::Unsupported {
                feature: "seccomp",
                message: "--strict asks for a seccomp filter and this kernel has none".into(),
            });
        }
        Ok(())
    }

    /// What will enforce each limit (the seccomp profile's name is left `none`): the cgroup
    /// version in use, or without cgroups the fallbacks (an error under `strict`).
    fn limit_mechanisms(&self, landlock: &crate::landlock::Plan) -> Result<Enforcement> {
        let mut e = Enforcement {
            memory: Mechanism::None,
            cpu: Mechanism::None,
            pids: Mechanism::None,
            devices: Mechanism::MountOnly,
            wall: Mechanism::Supervisor,
            landlock: LandlockAbi::from_abi(landlock.abi),
            seccomp: "none".into(),
        };
        match crate::cgroup::setup() {
            Ok(setup) => {
                let (limits, devices) = cgroup_mechanisms(setup);
                (e.memory, e.cpu, e.pids, e.devices) = (limits, limits, limits, devices);
            }
            Err(why) if self.strict => {
                return Err(Error::Unsupported {
                    feature: "cgroups",
                    message: format!("--strict asks for cgroup limits: {why}"),
                })
            }
            Err(_) => e.without_cgroups(),
        }
        Ok(e)
    }
}

/// The state directory, swept of dead supervisors' leftovers once per process.
fn open_state_dir() -> Result<PathBuf> {
    let state_dir = crate::state::open_dir()?;
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        crate::state::sweep(&state_dir);
    });
    Ok(state_dir)
}

/// Sorts the binds parents first, so nested binds land on their parent's contents, and makes
/// their mount points in the template.
fn mount_points(template: &Template, binds: &mut [Bind]) -> Result<()> {
    binds.sort_by_key(|b| b.inside.components().count());
    for b in binds.iter() {
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
    Ok(())
}

/// What a cgroup setup enforces limits with, and devices with: the eBPF program on v2 (as
/// root), the v1 devices controller where it is mounted, else the mount plan alone.
fn cgroup_mechanisms(setup: &crate::cgroup::Setup) -> (Mechanism, Mechanism) {
    let devices = setup.device_control(crate::sys::ids().0);
    (setup.mechanism(), devices.unwrap_or(Mechanism::MountOnly))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's Landlock value covers every ABI the plan can ask for.
    #[test]
    fn landlock_abi_covers_the_highest_known() {
        let top = crate::landlock::plan(u32::MAX, &[], &[], true);
        assert_eq!(top.abi, crate::landlock::MAX_ABI);
        assert_eq!(
            LandlockAbi::from_abi(top.abi).abi(),
            crate::landlock::MAX_ABI
        );
        let none = crate::landlock::plan(0, &[], &[], true);
        assert_eq!(LandlockAbi::from_abi(none.abi), LandlockAbi::None);
        assert_eq!(
            LandlockAbi::from_abi(top.abi).as_str(),
            crate::landlock::describe(&top)
        );
    }

    /// The builder's own checks come before anything touches the host.
    #[test]
    fn invalid_settings_are_refused_by_name() {
        let field = |b: SandboxBuilder| match b.validate() {
            Err(Error::Invalid { field, .. }) => field,
            r => panic!("not refused: {r:?}"),
        };
        let b = SandboxBuilder::default;
        assert_eq!(field(b().warm(65)), "warm pool");
        assert_eq!(field(b().warm(1).gpus(1)), "warm pool");
        assert_eq!(field(b().tmp_size(4095)), "tmp size");
        assert_eq!(field(b().work_size(0)), "work size");
        assert_eq!(field(b().shm_size(1)), "shm size");
        assert_eq!(field(b().timeout(Duration::ZERO)), "timeout");
        assert_eq!(field(b().cpus(0.0)), "cpus");
        assert_eq!(field(b().memory(1 << 20)), "memory");
        assert_eq!(field(b().pids(0)), "pids");
        assert_eq!(field(b().cpu_time(Duration::ZERO)), "cpu time");
        assert_eq!(field(b().env("A=B", "c")), "env");
        assert!(b().validate().is_ok());
    }
}
