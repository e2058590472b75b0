//! cgroup v1: the instance's directory in each controller's hierarchy, per-run directories
//! where something is counted per run, devices by `devices.allow`, killing pid by pid.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::devices::DeviceRule;
use super::files::{self, read_keyed, read_number, write, write_if_present};
use super::{InstanceStats, Limits, RunStats};
use crate::error::{Error, Result};
use crate::outcome::Usage;

/// The hierarchies in which each run of an instance gets its own cgroup: those that count
/// something per run (memory: OOM kills, pids: limit hits, cpuacct: CPU time).
const PER_RUN: [&str; 3] = ["memory", "pids", "cpuacct"];

/// SIGKILLs each process listed in `procs` (v1 has no `cgroup.kill`).
pub(super) fn kill(_dir: &Path, procs: &str) {
    for pid in procs
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = crate::sys::kill(pid, libc::SIGKILL);
    }
}

/// The directory of `ctl` among `(controller, directory)` pairs.
fn find<'a>(dirs: &'a [(&'static str, PathBuf)], ctl: &str) -> Option<&'a Path> {
    dirs.iter()
        .find(|(c, _)| *c == ctl)
        .map(|(_, d)| d.as_path())
}

/// An instance's cgroups: `rsandbox-SLOT` in each hierarchy rsandbox uses.
#[derive(Debug)]
pub(super) struct Instance {
    /// (controller, directory) for memory, cpu, cpuacct, pids and (if mounted) devices.
    dirs: Vec<(&'static str, PathBuf)>,
}

impl Instance {
    pub(super) fn new(bases: &[(&'static str, PathBuf)], name: &str) -> Instance {
        Instance {
            dirs: bases.iter().map(|(c, b)| (*c, b.join(name))).collect(),
        }
    }

    pub(super) fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    pub(super) fn dir(&self, ctl: &str) -> Option<&Path> {
        find(&self.dirs, ctl)
    }

    /// The limits, and the device allow list `rules` where the devices hierarchy is mounted.
    pub(super) fn write_limits(&self, l: &Limits, rules: &[DeviceRule]) -> Result<()> {
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
            write(&d.join("cpu.cfs_quota_us"), &super::quota_us(c).to_string())?;
        }
        if let Some(d) = self.dir("devices") {
            write(&d.join("devices.deny"), "a")?;
            // One rule per write(2), all on one open file.
            let p = d.join("devices.allow");
            let mut f = files::open_write(&p)?;
            for r in rules {
                std::io::Write::write_all(&mut f, r.v1_entry().as_bytes())
                    .map_err(|e| Error::io("writing", p.clone(), e))?;
            }
        }
        Ok(())
    }

    /// Moves `pid` (the reaper, before it starts anything) into every hierarchy.
    pub(super) fn attach(&self, pid: i32) -> Result<()> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Run `n`'s directories in the [`PER_RUN`] hierarchies, and their `cgroup.procs` opened for
    /// the program to join by writing `0`. The run stays in the instance's `cpu` and `devices`
    /// cgroups, whose limits and rules are the instance's anyway (a directory there would cost
    /// a mkdir, a join and an rmdir per run and change nothing).
    pub(super) fn new_run(&self, n: u32) -> Result<(Run, Vec<OwnedFd>)> {
        let per_run: Vec<&(&'static str, PathBuf)> = self
            .dirs
            .iter()
            .filter(|(c, _)| PER_RUN.contains(c))
            .collect();
        for (_, d) in &per_run {
            files::sweep_runs(d);
        }
        let mut run = Run {
            dirs: Vec::new(),
            whole: false,
        };
        let mut join = Vec::new();
        for (c, d) in per_run {
            let d = d.join(format!("run-{n}"));
            fs::create_dir(&d).map_err(|e| Error::io("creating the cgroup", d.clone(), e))?;
            run.dirs.push((c, d.clone()));
            join.push(OwnedFd::from(files::open_write(&d.join("cgroup.procs"))?));
        }
        Ok((run, join))
    }

    /// The instance's cgroups seen as one run.
    pub(super) fn as_run(&self) -> Run {
        Run {
            dirs: self.dirs.clone(),
            whole: true,
        }
    }

    pub(super) fn stats(&self) -> InstanceStats {
        let mut s = InstanceStats::default();
        if let Some(d) = self.dir("memory") {
            s.peak_memory = read_number(d, "memory.max_usage_in_bytes");
            s.oom_kills = read_keyed(d, "memory.oom_control", "oom_kill").unwrap_or(0);
        }
        if let Some(d) = self.dir("pids") {
            s.pids_max_hits = read_keyed(d, "pids.events", "max").unwrap_or(0);
        }
        s
    }

    pub(super) fn usage(&self) -> Usage {
        let num = |ctl: &str, file: &str| self.dir(ctl).and_then(|d| read_number(d, file));
        Usage {
            source: "cgroup1",
            cpu_ms: num("cpuacct", "cpuacct.usage").map_or(0.0, |ns| ns as f64 / 1e6),
            memory_bytes: num("memory", "memory.usage_in_bytes"),
            peak_memory_bytes: num("memory", "memory.max_usage_in_bytes"),
            pids: num("pids", "pids.current"),
        }
    }

    pub(super) fn destroy(&self) {
        for (_, d) in &self.dirs {
            files::remove_tree(d, kill);
        }
    }
}

/// A run's cgroups: `run-N` in the per-run hierarchies, or the instance's own (`as_run`).
#[derive(Debug)]
pub(super) struct Run {
    dirs: Vec<(&'static str, PathBuf)>,
    /// The instance's own cgroups (`as_run`): their OOM and pids-limit counters are the
    /// instance's, which [`Instance::stats`] reads, so [`Run::stats`] skips them.
    whole: bool,
}

impl Run {
    /// OOM kills and pids-limit hits count in the cgroup of the process they happened to, not
    /// in the ancestor whose limit it was; CPU time from `cpuacct`, split by its tick counts.
    pub(super) fn stats(&self) -> RunStats {
        let mut s = RunStats::default();
        if !self.whole {
            if let Some(d) = find(&self.dirs, "memory") {
                s.oom_kills = read_keyed(d, "memory.oom_control", "oom_kill").unwrap_or(0);
            }
            if let Some(d) = find(&self.dirs, "pids") {
                s.pids_max_hits = read_keyed(d, "pids.events", "max").unwrap_or(0);
            }
        }
        if let Some(d) = find(&self.dirs, "cpuacct") {
            s.cpu_us = read_number(d, "cpuacct.usage").unwrap_or(0) / 1000;
            if let Ok(t) = files::read(&d.join("cpuacct.stat")) {
                // USER_HZ ticks; scale so user + sys matches the exact total.
                let (u, y) = (
                    files::keyed(&t, "user").unwrap_or(0),
                    files::keyed(&t, "system").unwrap_or(0),
                );
                if let Some(user_us) = (s.cpu_us * u).checked_div(u + y) {
                    s.user_us = user_us;
                    s.sys_us = s.cpu_us - user_us;
                }
            }
        }
        s
    }

    pub(super) fn kill(&self) {
        for (_, d) in &self.dirs {
            files::kill_and_wait(d, kill);
        }
    }

    pub(super) fn release(self) {
        for (_, d) in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::devices::{allow_list, DeviceRule};

    fn cat(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Bases for each controller under `root` (the cpu and cpuacct hierarchy co-mounted, as
    /// on most v1 hosts) and an instance in them with its directories made.
    fn instance(root: &Path, devices: bool) -> Instance {
        let mut bases: Vec<(&'static str, PathBuf)> = vec![
            ("memory", root.join("memory")),
            ("cpu", root.join("cpu,cpuacct")),
            ("cpuacct", root.join("cpu,cpuacct")),
            ("pids", root.join("pids")),
        ];
        if devices {
            bases.push(("devices", root.join("devices")));
        }
        let inst = Instance::new(&bases, "rsandbox-5");
        for d in inst.dirs() {
            fs::create_dir_all(d).unwrap();
        }
        if devices {
            fs::write(inst.dir("devices").unwrap().join("devices.allow"), "").unwrap();
        }
        inst
    }

    #[test]
    fn limits_land_in_each_controllers_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = instance(tmp.path(), true);
        let limits = Limits {
            cpus: Some(0.5),
            memory: Some(100 << 20),
            pids: Some(64),
        };
        let rules = allow_list(&[DeviceRule::char_rw(195, 0)]);
        inst.write_limits(&limits, &rules).unwrap();
        let mem = tmp.path().join("memory/rsandbox-5");
        assert_eq!(cat(&mem.join("memory.limit_in_bytes")), "104857600");
        assert_eq!(cat(&mem.join("memory.memsw.limit_in_bytes")), "104857600");
        assert_eq!(cat(&mem.join("memory.swappiness")), "0");
        assert_eq!(cat(&tmp.path().join("pids/rsandbox-5/pids.max")), "64");
        let cpu = tmp.path().join("cpu,cpuacct/rsandbox-5");
        assert_eq!(cat(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(cat(&cpu.join("cpu.cfs_quota_us")), "50000");
        let dev = tmp.path().join("devices/rsandbox-5");
        assert_eq!(cat(&dev.join("devices.deny")), "a");
        // One write per rule on one file: here, a plain file, they follow each other.
        let want: String = rules.iter().map(|r| r.v1_entry()).collect();
        assert_eq!(cat(&dev.join("devices.allow")), want);
        assert!(want.starts_with("c 1:3 rwc 1:5 rw"), "{want}");
        assert!(want.ends_with("c 195:0 rw"), "{want}");
    }

    #[test]
    fn without_a_devices_hierarchy_no_rules_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = instance(tmp.path(), false);
        inst.write_limits(&Limits::default(), &allow_list(&[]))
            .unwrap();
        assert_eq!(inst.dir("devices"), None);
        for d in inst.dirs() {
            assert_eq!(fs::read_dir(d).unwrap().count(), 0, "{}", d.display());
        }
    }

    #[test]
    fn stats_and_usage_come_from_the_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = instance(tmp.path(), false);
        let mem = inst.dir("memory").unwrap().to_path_buf();
        let acct = inst.dir("cpuacct").unwrap().to_path_buf();
        let pids = inst.dir("pids").unwrap().to_path_buf();
        fs::write(mem.join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(pids.join("pids.events"), "max 1\n").unwrap();
        fs::write(pids.join("pids.current"), "7\n").unwrap();
        fs::write(acct.join("cpuacct.usage"), "3000000\n").unwrap();
        fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        assert_eq!(
            inst.stats(),
            InstanceStats {
                peak_memory: Some(8192),
                oom_kills: 2,
                pids_max_hits: 1,
            }
        );
        let u = inst.usage();
        assert_eq!(u.source, "cgroup1");
        assert_eq!(u.cpu_ms, 3.0);
        assert_eq!(
            (u.memory_bytes, u.peak_memory_bytes, u.pids),
            (Some(4096), Some(8192), Some(7))
        );
        // The instance seen as a run: CPU split 3:1, counters left to the instance.
        let s = inst.as_run().stats();
        assert_eq!((s.cpu_us, s.user_us, s.sys_us), (3000, 2250, 750));
        assert_eq!((s.oom_kills, s.pids_max_hits), (0, 0));
        // A run of its own counts its OOM kills and pids-limit hits itself.
        let run = Run {
            dirs: vec![("memory", mem.clone()), ("pids", pids.clone())],
            whole: false,
        };
        let s = run.stats();
        assert_eq!((s.oom_kills, s.pids_max_hits, s.cpu_us), (2, 1, 0));
    }

    #[test]
    fn runs_get_directories_only_in_the_per_run_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = instance(tmp.path(), true);
        let old = inst.dir("pids").unwrap().join("run-0");
        fs::create_dir(&old).unwrap();
        // A plain directory has no cgroup.procs to open: the first hierarchy's run directory
        // is made, then opening its cgroup.procs fails.
        let e = inst.new_run(1).unwrap_err();
        assert!(e.to_string().contains("run-1/cgroup.procs"), "{e}");
        assert!(!old.exists(), "an empty earlier run is swept");
        assert!(tmp.path().join("memory/rsandbox-5/run-1").is_dir());
        for h in ["cpu,cpuacct", "pids", "devices"] {
            assert!(!tmp.path().join(h).join("rsandbox-5/run-1").exists(), "{h}");
        }
    }
}
