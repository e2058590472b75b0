//! The builder and the immutable `Sandbox`: a validated policy, its root template and mount
//! plan, shared by every instance made from it (parent side).

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use crate::defaults;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::interp::{self, Python};
use crate::ns::mount::{MountPlan, PlanBuilder, DEV_ATTRS, RO_ATTRS, RW_ATTRS};
use crate::ns::template::{self, Template, DEV_NODES, SYSTEM_DIRS};
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

    /// Fail at `build` instead of degrading when the kernel cannot enforce a layer (Landlock,
    /// seccomp). Default: best effort, with the report's `enforcement` saying what held.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Validates everything once, prepares the root template and the mount plan.
    pub fn build(self) -> Result<Sandbox> {
        validate_env(&self.env)?;
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
        let plan = mount_plan(&template, &source, &self, &binds);
        let mut writable = vec![
            defaults::WORK_DIR.to_string(),
            "/tmp".into(),
            "/dev/shm".into(),
        ];
        writable.extend(
            binds
                .iter()
                .filter(|b| b.writable)
                .map(|b| b.inside.display().to_string()),
        );
        let devices: Vec<String> = DEV_NODES.iter().map(|n| format!("/dev/{n}")).collect();
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
        Ok(Sandbox {
            inner: Arc::new(Inner {
                timeout: self.timeout,
                output_limit: self.output_limit,
                env: self.env,
                python,
                template,
                plan,
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
            }),
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

/// The mount plan of DESIGN.md §3 step 6, as data.
fn mount_plan(t: &Template, source: &Path, b: &SandboxBuilder, binds: &[Bind]) -> MountPlan {
    let mut p = PlanBuilder::new(&t.root);
    for d in SYSTEM_DIRS {
        let src = source.join(d);
        if std::fs::symlink_metadata(&src)
            .map(|m| m.is_dir())
            .unwrap_or(false)
            && t.root.join(d).is_dir()
        {
            p.bind(&src, &Path::new("/").join(d), true, RO_ATTRS);
        }
    }
    p.proc(Path::new("/proc"));
    for n in DEV_NODES {
        p.bind(
            &Path::new("/dev").join(n),
            &Path::new("/dev").join(n),
            false,
            DEV_ATTRS,
        );
    }
    p.tmpfs(Path::new("/dev/shm"), b.shm_size, 0o1777, None, false);
    p.tmpfs(Path::new("/tmp"), b.tmp_size, 0o1777, None, false);
    p.tmpfs(
        Path::new(defaults::WORK_DIR),
        b.work_size,
        0o755,
        Some(SANDBOX_ID),
        true,
    );
    for bind in binds {
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
    pub plan: MountPlan,
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
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// One-shot run: create an instance, copy the command's files in, run it, destroy
    /// everything. On timeout the whole instance is killed.
    pub fn run(&self, cmd: &Command) -> Result<Outcome> {
        if let Some(c) = &cmd.cancel {
            c.check()?;
        }
        let inst = self.create()?;
        let out = inst.exec_inner(cmd, true);
        let destroyed = inst.destroy();
        let out = out?;
        destroyed?;
        Ok(out)
    }

    /// Creates a live instance for many `exec`s (a session).
    pub fn create(&self) -> Result<Instance> {
        Instance::create(self.inner.clone())
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
