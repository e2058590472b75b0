//! cgroup v2: one directory per instance holding the limits, a `run-N` child per run, devices
//! by a BPF program, killing by `cgroup.kill`.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::devices::{self, DeviceRule};
use super::files::{self, read_keyed, read_number, write, write_if_present};
use super::{InstanceStats, Limits, RunStats};
use crate::error::{Error, Result};
use crate::outcome::Usage;

/// Kills everything in `dir` at once (`procs`, its listing, is not needed).
pub(super) fn kill(dir: &Path, _procs: &str) {
    let _ = fs::write(dir.join("cgroup.kill"), "1");
}

/// An instance's cgroup, `BASE/rsandbox-SLOT`.
#[derive(Debug)]
pub(super) struct Instance {
    dir: PathBuf,
}

impl Instance {
    pub(super) fn new(base: &Path, name: &str) -> Instance {
        Instance {
            dir: base.join(name),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn write_limits(&self, l: &Limits) -> Result<()> {
        let d = &self.dir;
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
                &format!("{} 100000", super::quota_us(c)),
            )?;
        }
        Ok(())
    }

    /// The directory fd the reaper is cloned into (`CLONE_INTO_CGROUP`).
    pub(super) fn clone_into(&self) -> Result<OwnedFd> {
        files::open_dir(&self.dir)
    }

    /// Attaches the device program allowing `rules` (needs CAP_SYS_ADMIN); whether it holds.
    pub(super) fn attach_devices(&self, rules: &[DeviceRule]) -> bool {
        match files::open_dir(&self.dir) {
            Ok(fd) => devices::attach(fd.as_fd(), rules).is_ok(),
            Err(_) => false,
        }
    }

    /// Run `n`'s directory, with no controllers enabled, and its fd to clone the program into.
    pub(super) fn new_run(&self, n: u32) -> Result<(Run, OwnedFd)> {
        files::sweep_runs(&self.dir);
        let d = self.dir.join(format!("run-{n}"));
        fs::create_dir(&d).map_err(|e| Error::io("creating the cgroup", d.clone(), e))?;
        let fd = files::open_dir(&d)?;
        Ok((Run { dir: d }, fd))
    }

    /// The instance's cgroup seen as one run.
    pub(super) fn as_run(&self) -> Run {
        Run {
            dir: self.dir.clone(),
        }
    }

    pub(super) fn stats(&self) -> InstanceStats {
        let d = &self.dir;
        InstanceStats {
            peak_memory: read_number(d, "memory.peak"),
            oom_kills: read_keyed(d, "memory.events", "oom_kill").unwrap_or(0),
            pids_max_hits: read_keyed(d, "pids.events", "max").unwrap_or(0),
        }
    }

    pub(super) fn usage(&self) -> Usage {
        let d = &self.dir;
        Usage {
            source: "cgroup2",
            cpu_ms: read_keyed(d, "cpu.stat", "usage_usec").map_or(0.0, |us| us as f64 / 1000.0),
            memory_bytes: read_number(d, "memory.current"),
            peak_memory_bytes: read_number(d, "memory.peak"),
            pids: read_number(d, "pids.current"),
        }
    }

    pub(super) fn destroy(&self) {
        files::remove_tree(&self.dir, kill);
    }
}

/// A run's cgroup: `run-N` below the instance's, or the instance's own (`as_run`).
#[derive(Debug)]
pub(super) struct Run {
    dir: PathBuf,
}

impl Run {
    /// CPU time from the core `cpu.stat` (present without the cpu controller). OOM kills and
    /// pids-limit hits count at the instance, whose limits they are.
    pub(super) fn stats(&self) -> RunStats {
        let mut s = RunStats::default();
        if let Ok(t) = files::read(&self.dir.join("cpu.stat")) {
            s.cpu_us = files::keyed(&t, "usage_usec").unwrap_or(0);
            s.user_us = files::keyed(&t, "user_usec").unwrap_or(0);
            s.sys_us = files::keyed(&t, "system_usec").unwrap_or(0);
        }
        s
    }

    pub(super) fn kill(&self) {
        files::kill_and_wait(&self.dir, kill);
    }

    pub(super) fn release(self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn limits_land_in_the_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = Instance::new(tmp.path(), "rsandbox-3");
        fs::create_dir(inst.dir()).unwrap();
        let limits = Limits {
            cpus: Some(1.5),
            memory: Some(64 << 20),
            pids: Some(20),
        };
        inst.write_limits(&limits).unwrap();
        let d = tmp.path().join("rsandbox-3");
        assert_eq!(cat(&d.join("memory.max")), "67108864");
        assert_eq!(cat(&d.join("memory.swap.max")), "0");
        assert_eq!(cat(&d.join("pids.max")), "20");
        assert_eq!(cat(&d.join("cpu.max")), "150000 100000");
    }

    #[test]
    fn unset_limits_write_nothing_and_tiny_quotas_round_up() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = Instance::new(tmp.path(), "i");
        fs::create_dir(inst.dir()).unwrap();
        inst.write_limits(&Limits::default()).unwrap();
        assert_eq!(fs::read_dir(inst.dir()).unwrap().count(), 0);
        inst.write_limits(&Limits {
            cpus: Some(0.001),
            ..Limits::default()
        })
        .unwrap();
        assert_eq!(cat(&inst.dir().join("cpu.max")), "1000 100000");
    }

    #[test]
    fn stats_and_usage_come_from_the_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = Instance::new(tmp.path(), "i");
        let d = inst.dir().to_path_buf();
        fs::create_dir(&d).unwrap();
        for (f, v) in [
            ("memory.peak", "4096\n"),
            ("memory.current", "2048\n"),
            ("pids.current", "3\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
            ),
            ("pids.events", "max 4\n"),
            (
                "cpu.stat",
                "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n",
            ),
        ] {
            fs::write(d.join(f), v).unwrap();
        }
        assert_eq!(
            inst.stats(),
            InstanceStats {
                peak_memory: Some(4096),
                oom_kills: 1,
                pids_max_hits: 4,
            }
        );
        let u = inst.usage();
        assert_eq!(u.source, "cgroup2");
        assert_eq!(u.cpu_ms, 2.5);
        assert_eq!(
            (u.memory_bytes, u.peak_memory_bytes, u.pids),
            (Some(2048), Some(4096), Some(3))
        );
        let s = inst.as_run().stats();
        assert_eq!((s.cpu_us, s.user_us, s.sys_us), (2500, 2000, 500));
        assert_eq!(
            (s.oom_kills, s.pids_max_hits),
            (0, 0),
            "counted at the instance"
        );
    }

    #[test]
    fn missing_files_read_as_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = Instance::new(tmp.path(), "absent");
        assert_eq!(inst.stats(), InstanceStats::default());
        let u = inst.usage();
        assert_eq!((u.cpu_ms, u.memory_bytes, u.pids), (0.0, None, None));
    }

    #[test]
    fn runs_are_children_of_the_instance_and_swept_when_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let inst = Instance::new(tmp.path(), "i");
        fs::create_dir(inst.dir()).unwrap();
        let (run0, _fd) = inst.new_run(0).unwrap();
        assert_eq!(run0.dir, inst.dir().join("run-0"));
        let (run1, _fd) = inst.new_run(1).unwrap();
        assert!(!inst.dir().join("run-0").exists(), "empty: swept");
        run1.release();
        assert!(!inst.dir().join("run-1").exists());
    }
}
