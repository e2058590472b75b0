//! Cgroups: detection, limits, accounting and killing on cgroup v2, v1 and hybrid hosts, behind
//! one API (parent side).
//!
//! Layout per instance (created beneath the supervisor's own cgroup, or a delegated subtree):
//! - v2: `BASE/rsandbox-SLOT` carries the limits and holds the reaper, which is cloned straight
//!   into it (`CLONE_INTO_CGROUP`: no migration, none of the cold-attach cost). Each run gets
//!   `rsandbox-SLOT/run-N` with no controllers enabled, so the no-internal-processes rule never
//!   applies; the program is cloned into it by the reaper, `cgroup.kill` ends the run, and the
//!   core `cpu.stat` gives its CPU time. Memory figures come from the instance.
//! - v1: the same directories in each controller's hierarchy (memory, cpu, cpuacct, pids,
//!   devices). The supervisor moves the reaper in; a program joins its run's cgroups by writing
//!   `0` to `cgroup.procs` files the supervisor opened for it.

pub mod devices;

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::probe::{self, CgroupLayout};

/// Limits for one instance (None: not limited).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
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
    pub fn name(&self) -> &'static str {
        match self {
            Setup::V2 { .. } => "cgroup2",
            Setup::V1 { .. } => "cgroup1",
        }
    }
}

fn read(p: &Path) -> std::io::Result<String> {
    crate::sys::host::read_small(p)
}

fn write(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).map_err(|e| Error::io("writing", p.to_path_buf(), e))
}

/// Writes a file the kernel may not have (no swap accounting, no cpu controller): absent is
/// fine, any other failure is not. One `open` instead of a `stat` and an `open`.
fn write_if_present(p: &Path, v: &str) -> Result<()> {
    match fs::write(p, v) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|e| Error::io("writing", p.to_path_buf(), e)),
    }
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup` line matches.
fn own_path(matches: impl Fn(&str) -> bool) -> Option<String> {
    probe::host().own_cgroups.iter().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
        matches(ctl).then(|| path.to_string())
    })
}

/// The controllers rsandbox enables for its instances, among those `dir` offers.
fn wanted_controllers(dir: &Path) -> std::result::Result<Vec<&'static str>, String> {
    let controllers =
        read(&dir.join("cgroup.controllers")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let want: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| controllers.split_whitespace().any(|x| x == *c))
        .collect();
    if !want.contains(&"memory") || !want.contains(&"pids") {
        return Err(format!(
            "{} lacks the memory or pids controller (has: {})",
            dir.display(),
            controllers.trim()
        ));
    }
    Ok(want)
}

/// Enables `want` in `dir/cgroup.subtree_control` (those not enabled yet).
fn enable_controllers(dir: &Path, want: &[&str]) -> std::io::Result<()> {
    let enabled = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = want
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), missing.join(" "))
}

/// Prefix of the leaf a supervisor moves itself into (`BASE/rsandbox-supervisor-PID`).
const SUPERVISOR_LEAF: &str = "rsandbox-supervisor-";

/// Moves this process into a fresh leaf below `dir` when it is the only process in `dir`, so
/// that `dir` can enable controllers for its children (the no-internal-processes rule): what a
/// service started with systemd's `Delegate=yes` is expected to do. Empty leaves that earlier
/// supervisors left behind are removed on the way (rmdir fails on a cgroup with processes).
fn move_into_leaf(dir: &Path) -> std::result::Result<(), String> {
    let me = std::process::id();
    let procs = read(&dir.join("cgroup.procs")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let others: Vec<&str> = procs
        .split_whitespace()
        .filter(|p| *p != me.to_string())
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "other processes ({}) live in it, so it cannot enable controllers for children: \
             start rsandbox from a leaf cgroup and set RSANDBOX_CGROUP to a delegated cgroup \
             without processes",
            others.join(" ")
        ));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(SUPERVISOR_LEAF) {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
    let leaf = dir.join(format!("{SUPERVISOR_LEAF}{me}"));
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", leaf.display())),
    }
    fs::write(leaf.join("cgroup.procs"), me.to_string())
        .map_err(|e| format!("moving into {}: {e}", leaf.display()))
}

/// v2: instances go below `RSANDBOX_CGROUP` when set (a delegated cgroup with no processes of
/// its own), else below this process's cgroup, which it leaves for a leaf of its own if needed.
fn detect_v2() -> std::result::Result<Setup, String> {
    let mount = probe::host()
        .cgroup_mounts
        .iter()
        .find(|m| m.version == 2)
        .ok_or("no cgroup2 mount")?;
    if let Some(base) = std::env::var_os("RSANDBOX_CGROUP") {
        let dir = PathBuf::from(base);
        if !dir.starts_with(&mount.path) || !dir.join("cgroup.procs").exists() {
            return Err(format!(
                "RSANDBOX_CGROUP={}: not a cgroup below the cgroup2 mount {}",
                dir.display(),
                mount.path.display()
            ));
        }
        let want = wanted_controllers(&dir)?;
        enable_controllers(&dir, &want).map_err(|e| {
            format!(
                "RSANDBOX_CGROUP={}: cannot enable {} in its cgroup.subtree_control: {e}",
                dir.display(),
                want.join(" ")
            )
        })?;
        return Ok(Setup::V2 { base: dir });
    }
    let own = own_path(|c| c.is_empty()).ok_or("no 0:: line in /proc/self/cgroup")?;
    let dir = mount.path.join(own.trim_start_matches('/'));
    let want = wanted_controllers(&dir)?;
    match enable_controllers(&dir, &want) {
        Ok(()) => {}
        // EBUSY: processes live in our cgroup (the no-internal-processes rule).
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            move_into_leaf(&dir).map_err(|why| format!("{}: {why}", dir.display()))?;
            enable_controllers(&dir, &want).map_err(|e| {
                format!(
                    "cannot enable {} in {}/cgroup.subtree_control after moving into a leaf: {e}",
                    want.join(" "),
                    dir.display()
                )
            })?;
        }
        Err(e) => {
            return Err(format!(
                "cannot enable {} in {}/cgroup.subtree_control: {e}",
                want.join(" "),
                dir.display()
            ))
        }
    }
    Ok(Setup::V2 { base: dir })
}

fn detect_v1() -> std::result::Result<Setup, String> {
    if crate::sys::ids().0 != 0 {
        return Err("cgroup v1 hierarchies are not delegated to unprivileged users".into());
    }
    let mut bases = Vec::new();
    for ctl in ["memory", "cpu", "cpuacct", "pids", "devices"] {
        let mount = probe::host()
            .cgroup_mounts
            .iter()
            .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl));
        let Some(mount) = mount else {
            if ctl == "devices" {
                continue;
            }
            return Err(format!("no cgroup v1 hierarchy with the {ctl} controller"));
        };
        let own = own_path(|c| c.split(',').any(|x| x == ctl)).unwrap_or_else(|| "/".into());
        bases.push((ctl, mount.path.join(own.trim_start_matches('/'))));
    }
    Ok(Setup::V1 { bases })
}

/// The cgroup setup of this process, detected once; `Err` says why cgroups cannot be used.
pub fn setup() -> &'static std::result::Result<Setup, String> {
    static SETUP: OnceLock<std::result::Result<Setup, String>> = OnceLock::new();
    SETUP.get_or_init(|| {
        if std::env::var_os("RSANDBOX_NO_CGROUPS").is_some() {
            return Err("disabled by RSANDBOX_NO_CGROUPS".into());
        }
        match probe::host().cgroup_layout {
            CgroupLayout::V2 => detect_v2(),
            // Hybrid hosts keep their controllers in v1.
            CgroupLayout::V1 | CgroupLayout::Hybrid => detect_v1(),
            CgroupLayout::None => Err("no cgroup filesystem is mounted".into()),
        }
    })
}

/// One instance's cgroups.
#[derive(Debug)]
pub struct InstanceCgroup {
    pub v2: bool,
    /// (controller, directory); one entry ("", dir) on v2.
    pub dirs: Vec<(&'static str, PathBuf)>,
    next_run: AtomicU32,
}

/// One run's cgroups and what the program needs to join them.
#[derive(Debug)]
pub struct RunCgroup {
    v2: bool,
    pub dirs: Vec<(&'static str, PathBuf)>,
    /// v2: the run directory (for CLONE_INTO_CGROUP); v1: each controller's cgroup.procs.
    pub join: Vec<OwnedFd>,
    /// The instance's own cgroups (`as_run`): their OOM and pids-limit counters are the
    /// instance's, which [`InstanceCgroup::stats`] reads, so [`RunCgroup::stats`] skips them.
    whole: bool,
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

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

fn open_dir(p: &Path) -> Result<OwnedFd> {
    fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("opening", p.to_path_buf(), e))
}

/// Kills everything in `dir` (v2: cgroup.kill; v1: SIGKILL each listed pid until none is
/// left) and waits until it is empty.
fn kill_and_wait(v2: bool, dir: &Path) {
    for _ in 0..200 {
        let procs = read(&dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return;
        }
        if v2 {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        } else {
            for pid in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = crate::sys::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// rmdir with a few retries (tasks leave a cgroup asynchronously as they exit).
fn remove(dir: &Path) {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            _ => return,
        }
    }
}

/// Removes a cgroup left by a dead supervisor: its run cgroups first, killing what is left.
pub fn remove_tree(dir: &Path) {
    let v2 = dir.join("cgroup.kill").exists() || !dir.join("tasks").exists();
    remove_tree_as(v2, dir);
}

/// Removes `dir` and its run cgroups, killing what is left in them first.
fn remove_tree_as(v2: bool, dir: &Path) {
    // The common case: the processes are gone and no run cgroup is left.
    if fs::remove_dir(dir).is_ok() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_wait(v2, &e.path());
                remove(&e.path());
            }
        }
    }
    kill_and_wait(v2, dir);
    remove(dir);
}

/// The v1 hierarchies in which each run of an instance gets its own cgroup.
const RUN_V1: [&str; 3] = ["memory", "pids", "cpuacct"];

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
        let (v2, dirs): (bool, Vec<(&'static str, PathBuf)>) = match setup {
            Setup::V2 { base } => (true, vec![("", base.join(&name))]),
            Setup::V1 { bases } => (
                false,
                bases.iter().map(|(c, b)| (*c, b.join(&name))).collect(),
            ),
        };
        let cg = InstanceCgroup {
            v2,
            dirs,
            next_run: AtomicU32::new(0),
        };
        for (_, d) in &cg.dirs {
            let mut r = fs::create_dir(d);
            if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
                // Left by a supervisor that died with this slot (its record was just cleaned).
                remove_tree_as(cg.v2, d);
                r = fs::create_dir(d);
            }
            if let Err(e) = r {
                cg.destroy();
                return Err(Error::io("creating the cgroup", d.clone(), e));
            }
        }
        if let Err(e) = cg.write_limits(limits, rules) {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn dir(&self, ctl: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || *c == ctl)
            .map(|(_, d)| d.as_path())
    }

    fn write_limits(&self, l: &Limits, rules: &[devices::DeviceRule]) -> Result<()> {
        if self.v2 {
            let d = &self.dirs[0].1;
            if let Some(m) = l.memory {
                write(&d.join("memory.max"), &m.to_string())?;
                // No swap: a memory limit that swaps is no limit. Absent without swap support.
                write_if_present(&d.join("memory.swap.max"), "0")?;
            }
            if let Some(p) = l.pids {
                write(&d.join("pids.max"), &p.to_string())?;
            }
            if let Some(c) = l.cpus {
                write_if_present(
                    &d.join("cpu.max"),
                    &format!("{} 100000", (c * 100_000.0).round().max(1000.0) as u64),
                )?;
            }
        } else {
            if let (Some(m), Some(d)) = (l.memory, self.dir("memory")) {
                write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                // memsw = memory: no swap. Absent when the kernel does not account swap.
                write_if_present(&d.join("memory.memsw.limit_in_bytes"), &m.to_string())?;
                let _ = fs::write(d.join("memory.swappiness"), "0");
            }
            if let (Some(p), Some(d)) = (l.pids, self.dir("pids")) {
                write(&d.join("pids.max"), &p.to_string())?;
            }
            if let (Some(c), Some(d)) = (l.cpus, self.dir("cpu")) {
                write(&d.join("cpu.cfs_period_us"), "100000")?;
                write(
                    &d.join("cpu.cfs_quota_us"),
                    &((c * 100_000.0).round().max(1000.0) as u64).to_string(),
                )?;
            }
            if let Some(d) = self.dir("devices") {
                write(&d.join("devices.deny"), "a")?;
                // One rule per write(2), all on one open file.
                let p = d.join("devices.allow");
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| Error::io("opening", p.clone(), e))?;
                for r in rules {
                    std::io::Write::write_all(&mut f, r.v1_entry().as_bytes())
                        .map_err(|e| Error::io("writing", p.clone(), e))?;
                }
            }
        }
        Ok(())
    }

    /// v2: the directory fd the reaper is cloned into.
    pub fn clone_into(&self) -> Result<Option<OwnedFd>> {
        if self.v2 {
            open_dir(&self.dirs[0].1).map(Some)
        } else {
            Ok(None)
        }
    }

    /// v2: attaches the device program allowing `rules` (needs CAP_SYS_ADMIN); returns whether
    /// a device controller holds (v1: whether the devices hierarchy is there).
    pub fn attach_devices(&self, rules: &[devices::DeviceRule]) -> bool {
        if !self.v2 {
            return self.dir("devices").is_some();
        }
        match open_dir(&self.dirs[0].1) {
            Ok(fd) => devices::attach(fd.as_fd(), rules).is_ok(),
            Err(_) => false,
        }
    }

    /// v1: moves the reaper into the instance's cgroups (before it starts anything).
    pub fn attach(&self, pid: i32) -> Result<()> {
        if !self.v2 {
            for (_, d) in &self.dirs {
                write(&d.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// A cgroup for the next run. Earlier runs' cgroups that have emptied since are removed.
    /// On v1 only the hierarchies that count something per run (memory: OOM kills, pids:
    /// limit hits, cpuacct: CPU time) get a run directory; the run stays in the instance's
    /// `cpu` and `devices` cgroups, whose limits and rules are the instance's anyway (a directory
    /// there would cost a mkdir, a join and an rmdir per run and change nothing).
    pub fn new_run(&self) -> Result<RunCgroup> {
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        let per_run: Vec<&(&'static str, PathBuf)> = self
            .dirs
            .iter()
            .filter(|(c, _)| self.v2 || RUN_V1.contains(c))
            .collect();
        for (_, d) in &per_run {
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with("run-")
                        && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    {
                        let _ = fs::remove_dir(e.path()); // EBUSY while populated: kept
                    }
                }
            }
        }
        let dirs: Vec<(&'static str, PathBuf)> = per_run
            .iter()
            .map(|(c, d)| (*c, d.join(format!("run-{n}"))))
            .collect();
        let mut run = RunCgroup {
            v2: self.v2,
            dirs: Vec::new(),
            join: Vec::new(),
            whole: false,
        };
        for (c, d) in dirs {
            fs::create_dir(&d).map_err(|e| Error::io("creating the cgroup", d.clone(), e))?;
            run.dirs.push((c, d.clone()));
            let fd = if self.v2 {
                open_dir(&d)?
            } else {
                let p = d.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| Error::io("opening", p, e))?
            };
            run.join.push(fd);
        }
        Ok(run)
    }

    /// Instance-level counters.
    pub fn stats(&self) -> InstanceStats {
        let mut s = InstanceStats::default();
        if self.v2 {
            let d = &self.dirs[0].1;
            s.peak_memory = read(&d.join("memory.peak"))
                .ok()
                .and_then(|v| v.trim().parse().ok());
            s.oom_kills = read(&d.join("memory.events"))
                .ok()
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0);
            s.pids_max_hits = read(&d.join("pids.events"))
                .ok()
                .and_then(|t| keyed(&t, "max"))
                .unwrap_or(0);
        } else {
            if let Some(d) = self.dir("memory") {
                s.peak_memory = read(&d.join("memory.max_usage_in_bytes"))
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
                s.oom_kills = read(&d.join("memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill"))
                    .unwrap_or(0);
            }
            if let Some(d) = self.dir("pids") {
                s.pids_max_hits = read(&d.join("pids.events"))
                    .ok()
                    .and_then(|t| keyed(&t, "max"))
                    .unwrap_or(0);
            }
        }
        s
    }

    /// What the instance (all its runs and background processes) uses now.
    pub fn usage(&self) -> crate::outcome::Usage {
        let num = |d: Option<&Path>, file: &str| {
            d.and_then(|d| read(&d.join(file)).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut u = crate::outcome::Usage {
            source: if self.v2 { "cgroup2" } else { "cgroup1" },
            ..Default::default()
        };
        if self.v2 {
            let d = Some(self.dirs[0].1.as_path());
            u.cpu_ms = read(&self.dirs[0].1.join("cpu.stat"))
                .ok()
                .and_then(|t| keyed(&t, "usage_usec"))
                .map_or(0.0, |us| us as f64 / 1000.0);
            u.memory_bytes = num(d, "memory.current");
            u.peak_memory_bytes = num(d, "memory.peak");
            u.pids = num(d, "pids.current");
        } else {
            u.cpu_ms = num(self.dir("cpuacct"), "cpuacct.usage").map_or(0.0, |ns| ns as f64 / 1e6);
            u.memory_bytes = num(self.dir("memory"), "memory.usage_in_bytes");
            u.peak_memory_bytes = num(self.dir("memory"), "memory.max_usage_in_bytes");
            u.pids = num(self.dir("pids"), "pids.current");
        }
        u
    }

    /// Every directory, deepest first (for the state record).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// Kills whatever is left and removes every directory.
    pub fn destroy(&self) {
        for (_, d) in &self.dirs {
            remove_tree_as(self.v2, d);
        }
    }
}

impl InstanceCgroup {
    /// The instance's cgroups seen as one run (a one-shot run, whose program simply inherits
    /// the reaper's cgroups: no per-run directories to create, join and remove).
    pub fn as_run(&self) -> RunCgroup {
        RunCgroup {
            v2: self.v2,
            dirs: self.dirs.clone(),
            join: Vec::new(),
            whole: true,
        }
    }
}

impl RunCgroup {
    pub fn stats(&self) -> RunStats {
        let mut s = RunStats::default();
        if self.v2 {
            if let Ok(t) = read(&self.dirs[0].1.join("cpu.stat")) {
                s.cpu_us = keyed(&t, "usage_usec").unwrap_or(0);
                s.user_us = keyed(&t, "user_usec").unwrap_or(0);
                s.sys_us = keyed(&t, "system_usec").unwrap_or(0);
            }
        } else if !self.whole {
            let dir = |ctl: &str| {
                self.dirs
                    .iter()
                    .find(|(c, _)| *c == ctl)
                    .map(|(_, d)| d.clone())
            };
            if let Some(d) = dir("memory") {
                s.oom_kills = read(&d.join("memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill"))
                    .unwrap_or(0);
            }
            if let Some(d) = dir("pids") {
                s.pids_max_hits = read(&d.join("pids.events"))
                    .ok()
                    .and_then(|t| keyed(&t, "max"))
                    .unwrap_or(0);
            }
        }
        if self.v2 {
        } else if let Some((_, d)) = self.dirs.iter().find(|(c, _)| *c == "cpuacct") {
            s.cpu_us = read(&d.join("cpuacct.usage"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                / 1000;
            if let Ok(t) = read(&d.join("cpuacct.stat")) {
                // USER_HZ ticks; scale so user + sys matches the exact total.
                let (u, y) = (
                    keyed(&t, "user").unwrap_or(0),
                    keyed(&t, "system").unwrap_or(0),
                );
                if let Some(user_us) = (s.cpu_us * u).checked_div(u + y) {
                    s.user_us = user_us;
                    s.sys_us = s.cpu_us - user_us;
                }
            }
        }
        s
    }

    /// The CPU time used so far, in microseconds (for the `--cpu-time` watchdog).
    pub fn cpu_us(&self) -> u64 {
        self.stats().cpu_us
    }

    /// Kills every process of the run, including those that left its process group.
    pub fn kill(&self) {
        for (_, d) in &self.dirs {
            kill_and_wait(self.v2, d);
        }
    }

    /// Removes the run's cgroups if nothing is left in them. Processes the run left running in
    /// a session (a server started for the next run) keep theirs until they exit or the
    /// instance is destroyed. Not for `as_run`: the instance's directories go with it.
    pub fn release(self) {
        for (_, d) in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}
