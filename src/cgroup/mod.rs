//! Cgroups: detection, limits, accounting and killing on cgroup v2, v1 and hybrid hosts, behind
//! one API (parent side).
//!
//! Layout per instance (created beneath the supervisor's own cgroup, or a delegated subtree):
//! - v2 (`v2.rs`): `BASE/rsandbox-SLOT` carries the limits and holds the reaper, which is cloned
//!   straight into it (`CLONE_INTO_CGROUP`: no migration, none of the cold-attach cost). Each
//!   run gets `rsandbox-SLOT/run-N` with no controllers enabled, so the no-internal-processes
//!   rule never applies; the program is cloned into it by the reaper, `cgroup.kill` ends the
//!   run, and the core `cpu.stat` gives its CPU time. Memory figures come from the instance.
//! - v1 (`v1.rs`): the same directories in each controller's hierarchy (memory, cpu, cpuacct,
//!   pids, devices). The supervisor moves the reaper in; a program joins its run's cgroups by
//!   writing `0` to `cgroup.procs` files the supervisor opened for it.
//!
//! Which one a host gets is decided once, by [`setup`] (`detect.rs`); from then on the version is
//! the type of the instance's cgroups, not a flag the callers test.

mod detect;
pub mod devices;
mod error;
mod files;
mod v1;
mod v2;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub use error::{CgroupError, LeafError};

use crate::error::Result;
use crate::outcome::Mechanism;

/// Limits for one instance (None: not limited).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

/// The CFS quota per 100 ms period for `cpus` CPUs, in microseconds (at least 1 ms).
fn quota_us(cpus: f64) -> u64 {
    (cpus * 100_000.0).round().max(1000.0) as u64
}

/// Where and how instances' cgroups are made on this host.
#[derive(Debug)]
pub enum Setup {
    V2 {
        base: PathBuf,
    },
    /// (controller, base directory) for memory, cpu, cpuacct, pids and (if mounted) devices.
    V1 {
        bases: Vec<(&'static str, PathBuf)>,
    },
}

impl Setup {
    /// `cgroup2` or `cgroup1`: what the report names as enforcing memory, CPU and pids.
    pub fn name(&self) -> &'static str {
        match self {
            Setup::V2 { .. } => "cgroup2",
            Setup::V1 { .. } => "cgroup1",
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Setup::V2 { .. })
    }

    /// The directories instances' cgroups are made beneath: the one on v2, one per hierarchy
    /// on v1 (the cpu and cpuacct entries are the same directory where they are co-mounted).
    pub fn bases(&self) -> Vec<&Path> {
        match self {
            Setup::V2 { base } => vec![base],
            Setup::V1 { bases } => bases.iter().map(|(_, b)| b.as_path()).collect(),
        }
    }

    /// The base directory that holds `controller`'s files: the one on v2, that hierarchy's on
    /// v1 (None where it is not mounted).
    pub fn base(&self, controller: &str) -> Option<&Path> {
        match self {
            Setup::V2 { base } => Some(base),
            Setup::V1 { bases } => bases
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, b)| b.as_path()),
        }
    }

    /// What controls device access for instances made by a process with effective uid
    /// `euid`: `bpf` (v2, a device program, which needs root), `cgroup1` (the v1 devices
    /// hierarchy), or None (the mount plan alone: `mount-only`).
    pub fn device_control(&self, euid: u32) -> Option<Mechanism> {
        match self {
            Setup::V2 { .. } => (euid == 0).then_some(Mechanism::Bpf),
            Setup::V1 { bases } => bases
                .iter()
                .any(|(c, _)| *c == "devices")
                .then_some(Mechanism::Cgroup1),
        }
    }

    /// What enforces memory, CPU and pids limits with this setup.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Setup::V2 { .. } => Mechanism::Cgroup2,
            Setup::V1 { .. } => Mechanism::Cgroup1,
        }
    }

    /// The file giving the memory charged to everything beneath the bases (`memory.current`
    /// on v2, `memory.usage_in_bytes` on v1), and the directory it is read in.
    pub fn memory_usage_file(&self) -> Option<(&'static str, &Path)> {
        match self {
            Setup::V2 { base } => Some(("memory.current", base)),
            Setup::V1 { .. } => Some(("memory.usage_in_bytes", self.base("memory")?)),
        }
    }
}

/// The cgroup setup of this process, detected once; `Err` says why cgroups cannot be used.
pub fn setup() -> &'static std::result::Result<Setup, CgroupError> {
    static SETUP: OnceLock<std::result::Result<Setup, CgroupError>> = OnceLock::new();
    SETUP.get_or_init(|| detect::detect(&detect::Host::current()))
}

/// Removes a cgroup left by a dead supervisor: its run cgroups first, killing what is left.
/// The version is read off the directory (`cgroup.kill` is v2's, `tasks` v1's).
pub fn remove_tree(dir: &Path) {
    if dir.join("cgroup.kill").exists() || !dir.join("tasks").exists() {
        files::remove_tree(dir, v2::kill);
    } else {
        files::remove_tree(dir, v1::kill);
    }
}

/// An instance's cgroups, per version.
#[derive(Debug)]
enum Cgroups {
    V1(v1::Instance),
    V2(v2::Instance),
}

/// A run's cgroups, per version.
#[derive(Debug)]
enum RunCgroups {
    V1(v1::Run),
    V2(v2::Run),
}

/// One instance's cgroups.
#[derive(Debug)]
pub struct InstanceCgroup {
    cgroups: Cgroups,
    next_run: AtomicU32,
}

/// One run's cgroups and what the program needs to join them.
#[derive(Debug)]
pub struct RunCgroup {
    cgroups: RunCgroups,
    /// v2: the run directory (for CLONE_INTO_CGROUP); v1: the `cgroup.procs` of each per-run
    /// hierarchy (memory, pids, cpuacct). Empty for `as_run`: the program stays where the
    /// reaper is.
    pub join: Vec<OwnedFd>,
}

/// What a run used, from its cgroups.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub cpu_us: u64,
    pub user_us: u64,
    pub sys_us: u64,
    /// v1 counts OOM kills and pids-limit hits in the cgroup of the process they happened to,
    /// not in the ancestor whose limit it was; v2 at the instance (runs have no controllers).
    pub oom_kills: u64,
    pub pids_max_hits: u64,
}

/// Instance-level counters (read before and after a run to attribute events to it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InstanceStats {
    pub peak_memory: Option<u64>,
    pub oom_kills: u64,
    pub pids_max_hits: u64,
}

impl InstanceCgroup {
    /// Creates the instance's cgroups and writes the limits; on v1 also the device allow list
    /// `rules` (on v2 [`InstanceCgroup::attach_devices`] does that).
    pub fn create(
        setup: &Setup,
        slot: u32,
        limits: &Limits,
        rules: &[devices::DeviceRule],
    ) -> Result<InstanceCgroup> {
        let name = format!("rsandbox-{slot}");
        let cgroups = match setup {
            Setup::V2 { base } => Cgroups::V2(v2::Instance::new(base, &name)),
            Setup::V1 { bases } => Cgroups::V1(v1::Instance::new(bases, &name)),
        };
        let cg = InstanceCgroup {
            cgroups,
            next_run: AtomicU32::new(0),
        };
        let kill = match cg.cgroups {
            Cgroups::V1(_) => v1::kill,
            Cgroups::V2(_) => v2::kill,
        };
        for d in cg.paths() {
            if let Err(e) = files::create_fresh(&d, kill) {
                cg.destroy();
                return Err(e);
            }
        }
        let written = match &cg.cgroups {
            Cgroups::V1(c) => c.write_limits(limits, rules),
            Cgroups::V2(c) => c.write_limits(limits),
        };
        if let Err(e) = written {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    /// Whether these are v2 cgroups (the reaper is cloned into them, runs are cloned into
    /// theirs); v1 cgroups are joined by writing to `cgroup.procs`.
    pub fn is_v2(&self) -> bool {
        matches!(self.cgroups, Cgroups::V2(_))
    }

    /// v2: the directory fd the reaper is cloned into.
    pub fn clone_into(&self) -> Result<Option<OwnedFd>> {
        match &self.cgroups {
            Cgroups::V1(_) => Ok(None),
            Cgroups::V2(c) => c.clone_into().map(Some),
        }
    }

    /// v2: attaches the device program allowing `rules` (needs CAP_SYS_ADMIN); returns whether
    /// a device controller holds (v1: whether the devices hierarchy is there).
    pub fn attach_devices(&self, rules: &[devices::DeviceRule]) -> bool {
        match &self.cgroups {
            Cgroups::V1(c) => c.dir("devices").is_some(),
            Cgroups::V2(c) => c.attach_devices(rules),
        }
    }

    /// v1: moves the reaper into the instance's cgroups (before it starts anything).
    pub fn attach(&self, pid: i32) -> Result<()> {
        match &self.cgroups {
            Cgroups::V1(c) => c.attach(pid),
            Cgroups::V2(_) => Ok(()),
        }
    }

    /// A cgroup for the next run. Earlier runs' cgroups that have emptied since are removed.
    /// On v1 only the hierarchies that count something per run get a run directory.
    pub fn new_run(&self) -> Result<RunCgroup> {
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        Ok(match &self.cgroups {
            Cgroups::V1(c) => {
                let (run, join) = c.new_run(n)?;
                RunCgroup {
                    cgroups: RunCgroups::V1(run),
                    join,
                }
            }
            Cgroups::V2(c) => {
                let (run, fd) = c.new_run(n)?;
                RunCgroup {
                    cgroups: RunCgroups::V2(run),
                    join: vec![fd],
                }
            }
        })
    }

    /// The instance's cgroups seen as one run (a one-shot run, whose program simply inherits
    /// the reaper's cgroups: no per-run directories to create, join and remove).
    pub fn as_run(&self) -> RunCgroup {
        let cgroups = match &self.cgroups {
            Cgroups::V1(c) => RunCgroups::V1(c.as_run()),
            Cgroups::V2(c) => RunCgroups::V2(c.as_run()),
        };
        RunCgroup {
            cgroups,
            join: Vec::new(),
        }
    }

    /// Instance-level counters.
    pub fn stats(&self) -> InstanceStats {
        match &self.cgroups {
            Cgroups::V1(c) => c.stats(),
            Cgroups::V2(c) => c.stats(),
        }
    }

    /// What the instance (all its runs and background processes) uses now.
    pub fn usage(&self) -> crate::outcome::Usage {
        match &self.cgroups {
            Cgroups::V1(c) => c.usage(),
            Cgroups::V2(c) => c.usage(),
        }
    }

    /// The instance's directories, one per hierarchy (for the state record).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.cgroups {
            Cgroups::V1(c) => c.dirs().map(Path::to_path_buf).collect(),
            Cgroups::V2(c) => vec![c.dir().to_path_buf()],
        }
    }

    /// Kills whatever is left and removes every directory.
    pub fn destroy(&self) {
        match &self.cgroups {
            Cgroups::V1(c) => c.destroy(),
            Cgroups::V2(c) => c.destroy(),
        }
    }
}

impl RunCgroup {
    pub fn stats(&self) -> RunStats {
        match &self.cgroups {
            RunCgroups::V1(r) => r.stats(),
            RunCgroups::V2(r) => r.stats(),
        }
    }

    /// The CPU time used so far, in microseconds (for the `--cpu-time` watchdog).
    pub fn cpu_us(&self) -> u64 {
        self.stats().cpu_us
    }

    /// Kills every process of the run, including those that left its process group.
    pub fn kill(&self) {
        match &self.cgroups {
            RunCgroups::V1(r) => r.kill(),
            RunCgroups::V2(r) => r.kill(),
        }
    }

    /// Removes the run's cgroups if nothing is left in them. Processes the run left running in
    /// a session (a server started for the next run) keep theirs until they exit or the
    /// instance is destroyed. Not for `as_run`: the instance's directories go with it.
    pub fn release(self) {
        match self.cgroups {
            RunCgroups::V1(r) => r.release(),
            RunCgroups::V2(r) => r.release(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn setup_answers_what_callers_ask() {
        let v2 = Setup::V2 {
            base: PathBuf::from("/cg/app"),
        };
        assert_eq!((v2.name(), v2.is_v2()), ("cgroup2", true));
        assert_eq!(v2.bases(), [Path::new("/cg/app")]);
        assert_eq!(v2.base("memory"), Some(Path::new("/cg/app")));
        assert_eq!(v2.device_control(0), Some(Mechanism::Bpf));
        assert_eq!(v2.device_control(1000), None);
        assert_eq!(
            v2.memory_usage_file(),
            Some(("memory.current", Path::new("/cg/app")))
        );
        let v1 = Setup::V1 {
            bases: vec![
                ("memory", PathBuf::from("/m")),
                ("cpu", PathBuf::from("/c")),
                ("pids", PathBuf::from("/p")),
            ],
        };
        assert_eq!((v1.name(), v1.is_v2()), ("cgroup1", false));
        assert_eq!(v1.base("pids"), Some(Path::new("/p")));
        assert_eq!(v1.base("devices"), None);
        assert_eq!(v1.device_control(0), None);
        assert_eq!(
            v1.memory_usage_file(),
            Some(("memory.usage_in_bytes", Path::new("/m")))
        );
        let with_devices = Setup::V1 {
            bases: vec![("devices", PathBuf::from("/d"))],
        };
        assert_eq!(with_devices.device_control(0), Some(Mechanism::Cgroup1));
        assert_eq!(with_devices.memory_usage_file(), None);
    }

    #[test]
    fn quota_is_per_100ms_and_at_least_1ms() {
        assert_eq!(quota_us(1.0), 100_000);
        assert_eq!(quota_us(2.5), 250_000);
        assert_eq!(quota_us(0.0001), 1000);
    }

    #[test]
    fn create_makes_the_directories_and_writes_the_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let setup = Setup::V2 {
            base: tmp.path().to_path_buf(),
        };
        // A directory left by a dead supervisor with this slot is replaced.
        fs::create_dir(tmp.path().join("rsandbox-9")).unwrap();
        let limits = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let cg = InstanceCgroup::create(&setup, 9, &limits, &[]).unwrap();
        assert!(cg.is_v2());
        assert_eq!(cg.paths(), [tmp.path().join("rsandbox-9")]);
        assert_eq!(
            fs::read_to_string(tmp.path().join("rsandbox-9/memory.max")).unwrap(),
            "1048576"
        );
        assert!(cg.clone_into().unwrap().is_some());
        assert!(cg.attach(1).is_ok());
        assert!(cg.as_run().join.is_empty());
        let run = cg.new_run().unwrap();
        assert_eq!(run.join.len(), 1);
        run.release();
        let run = cg.new_run().unwrap();
        assert!(tmp.path().join("rsandbox-9/run-1").is_dir());
        run.release();

        let v1 = Setup::V1 {
            bases: vec![
                ("memory", tmp.path().join("memory")),
                ("pids", tmp.path().join("pids")),
            ],
        };
        fs::create_dir(tmp.path().join("memory")).unwrap();
        fs::create_dir(tmp.path().join("pids")).unwrap();
        let cg = InstanceCgroup::create(&v1, 2, &Limits::default(), &[]).unwrap();
        assert!(!cg.is_v2());
        assert!(!cg.attach_devices(&[]), "no devices hierarchy");
        assert!(cg.clone_into().unwrap().is_none());
        assert_eq!(
            cg.paths(),
            [
                tmp.path().join("memory/rsandbox-2"),
                tmp.path().join("pids/rsandbox-2")
            ]
        );
        // A base that is not there: creation fails and what was made is removed again.
        let missing = Setup::V1 {
            bases: vec![
                ("memory", tmp.path().join("memory")),
                ("pids", tmp.path().join("absent")),
            ],
        };
        let e = InstanceCgroup::create(&missing, 3, &Limits::default(), &[]).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        assert!(!tmp.path().join("memory/rsandbox-3").exists());
    }
}
