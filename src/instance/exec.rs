//! `Instance::exec`: one program started by the reaper, supervised (output, stdin, the wall
//! timeout, the CPU-time and memory watchdogs) and turned into the report.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::{procfs, Instance};
use crate::cgroup::{InstanceStats, RunCgroup, RunStats};
use crate::command::{Command, Stdin};
use crate::defaults;
use crate::error::{Error, Result};
use crate::ns::user::SANDBOX_ID;
use crate::outcome::{self, Facts, Limit, Outcome, SeccompViolation};
use crate::policy;
use crate::spawn::plan::{self, ExecSpec};
use crate::spawn::proto::{self, Rlimit};
use crate::spawn::wait::{self, Sink, StdinSource};
use crate::spawn::{self, ProgramIo, Reaper, StdioPlan};

impl Instance {
    /// Runs a program in this instance and reports what it did. On timeout only this run is
    /// killed: its cgroup (every process it started, wherever it went), or without cgroups its
    /// process group; the instance and its other processes live on.
    pub fn exec(&self, cmd: &Command) -> Result<Outcome> {
        self.exec_inner(cmd, false)
    }

    /// `exec`, or with `one_shot` the only run of a fresh instance (`Sandbox::run`): its
    /// program stays in the instance's cgroup, and a timeout ends the whole instance.
    pub(crate) fn exec_inner(&self, cmd: &Command, one_shot: bool) -> Result<Outcome> {
        let stdin = stdin_source(&cmd.stdin)?;
        let net_before = self.network();
        let l = self.launch(cmd, one_shot, None)?;
        let reaper = self.reaper()?;
        let run = Run {
            inst: self,
            reaper,
            pid: l.pid,
            run_cg: l.run_cg.as_ref(),
            one_shot,
            cpu_limit_us: self.inner.cpu_time.map(|t| t.as_micros() as u64),
            cpu_base_us: l.cpu_base_us,
            mem_limit: self
                .cg
                .is_none()
                .then_some(self.inner.limits.memory)
                .flatten(),
        };
        let sup = run.supervise(cmd, l.io, stdin);
        // A one-shot run's `as_run` leaves the instance's OOM and pids counters to `after`.
        let run_stats = l.run_cg.as_ref().map(|r| r.stats());
        let after = self.cg.as_ref().map(|c| c.stats()).unwrap_or_default();
        if let Some(run) = l.run_cg.filter(|_| !one_shot) {
            run.release();
        }
        let network = self.network().zip(net_before).map(|(a, b)| a.since(b));
        let mut out = self.report(sup, !cmd.pass_through, run_stats, l.before, after)?;
        out.network = network;
        Ok(out)
    }

    /// Everything of a run up to the program's start: its files copied in, argv and
    /// environment resolved, its run cgroup, the exec plan written and the reaper asked.
    /// `socket`: the program's stdin instead of a pipe (a context's control socket).
    pub(super) fn launch(
        &self,
        cmd: &Command,
        one_shot: bool,
        socket: Option<OwnedFd>,
    ) -> Result<Launched> {
        let reaper = self.reaper()?;
        if let Some(c) = &cmd.cancel {
            c.check()?;
        }
        for (path, data, mode) in &cmd.files {
            self.put_file(path, data, *mode)?;
        }
        let (argv, envp, paths) = policy::resolve(&self.inner, cmd)?;
        let cwd = CString::new(defaults::WORK_DIR).unwrap();
        let rlimits = self.rlimits();
        let run_cg = self.run_cgroup(one_shot)?;
        let cgroup_fds: Vec<RawFd> = run_cg
            .iter()
            .flat_map(|r| r.join.iter().map(|f| f.as_raw_fd()))
            .collect();
        let cpus = self.cpu_set();
        // A one-shot run's instance is fresh: its counters start at zero.
        let before = match &self.cg {
            Some(c) if !one_shot => c.stats(),
            _ => Default::default(),
        };
        let spec = ExecSpec {
            argv: &argv,
            envp: &envp,
            paths: &paths,
            cwd: &cwd,
            uid: SANDBOX_ID,
            gid: SANDBOX_ID,
            clear_groups: self.ids.privileged,
            rlimits: &rlimits,
            filter: self.inner.seccomp.as_ref().map(|c| c.program.as_slice()),
            notify: self.inner.seccomp.as_ref().is_some_and(|c| c.kills),
            cgroup_mode: self.cgroup_mode(run_cg.as_ref()),
            cpus: &cpus,
            tty: cmd.tty.is_some(),
        };
        // Without a run cgroup the CPU-time watchdog counts the instance's tree from /proc,
        // from before the program starts: what earlier runs of a session used (and left in
        // the reaper's reaped-children counts) is not this run's.
        let cpu_base_us = match (self.inner.cpu_time, &run_cg) {
            (Some(_), None) => procfs::tree_cpu_us(reaper.pid),
            _ => 0,
        };
        let stdio = match (cmd.tty.as_ref().map(|t| t.size()), socket) {
            (Some(size), _) => Stdio::Tty(size),
            (None, Some(s)) => Stdio::Socket(s),
            (None, None) => Stdio::Pipes,
        };
        let (pid, io) = self.start(reaper, &spec, &cmd.name(), &cgroup_fds, stdio)?;
        Ok(Launched {
            pid,
            io,
            run_cg,
            before,
            cpu_base_us,
        })
    }

    /// The program's resource limits: always core and open files; without cgroups also
    /// processes per (user namespace, uid), i.e. per instance, and CPU seconds per process as
    /// a backstop of the CPU-time limit.
    fn rlimits(&self) -> Vec<Rlimit> {
        let fixed = |resource, n| Rlimit {
            resource,
            cur: n,
            max: n,
        };
        let mut rlimits = vec![
            fixed(libc::RLIMIT_CORE, defaults::CORE),
            fixed(libc::RLIMIT_NOFILE, defaults::NOFILE),
        ];
        if self.cg.is_none() {
            if let Some(p) = self.inner.limits.pids {
                rlimits.push(fixed(libc::RLIMIT_NPROC, p));
            }
            if let Some(t) = self.inner.cpu_time {
                let s = t.as_secs_f64().ceil() as u64;
                rlimits.push(Rlimit {
                    resource: libc::RLIMIT_CPU,
                    cur: s,
                    max: s + 1,
                });
            }
        }
        rlimits
    }

    /// A session's run gets its own cgroup (its timeout must not touch the session's other
    /// processes); a one-shot run's program simply stays in the instance's cgroups.
    fn run_cgroup(&self, one_shot: bool) -> Result<Option<RunCgroup>> {
        Ok(match &self.cg {
            Some(cg) if one_shot => Some(cg.as_run()),
            Some(cg) => Some(cg.new_run()?),
            None => None,
        })
    }

    /// How the program joins its run cgroup: v2 by `CLONE_INTO_CGROUP`, v1 by writing its pid
    /// to each controller's `cgroup.procs`, not at all when the run has nothing to join.
    fn cgroup_mode(&self, run_cg: Option<&RunCgroup>) -> u32 {
        match (&self.cg, run_cg) {
            (_, Some(r)) if r.join.is_empty() => proto::CGROUP_NONE,
            (Some(cg), Some(_)) if cg.is_v2() => proto::CGROUP_V2_CLONE_INTO,
            (Some(_), Some(_)) => proto::CGROUP_V1_PROCS,
            _ => proto::CGROUP_NONE,
        }
    }

    /// `ceil(cpus)` CPUs for the program's affinity, spread over the host by instance, so
    /// thread pools size themselves to the quota; empty (no pinning) when it covers the host.
    fn cpu_set(&self) -> Vec<usize> {
        match self.inner.limits.cpus {
            Some(c) if (c.ceil() as usize) < self.inner.ncpu => {
                let n = c.ceil() as usize;
                (0..n)
                    .map(|i| (self.cpu_base.wrapping_mul(n) + i) % self.inner.ncpu)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Lays the exec plan out in the reaper's region and asks the reaper to start it; with
    /// `Stdio::Tty` (rows, columns), on a new pty of the instance.
    fn start(
        &self,
        reaper: &Reaper,
        spec: &ExecSpec<'_>,
        name: &str,
        cgroup_fds: &[RawFd],
        stdio: Stdio,
    ) -> Result<(i32, ProgramIo)> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let stdio = match stdio {
            Stdio::Pipes => StdioPlan::Pipes,
            Stdio::Socket(s) => StdioPlan::Socket(s),
            Stdio::Tty((rows, cols)) => {
                let master = spawn::open_pty(reaper)?;
                crate::sys::host::set_window_size(master.as_fd(), rows, cols)
                    .map_err(|e| Error::io("setting the pty's window size", None, e))?;
                StdioPlan::Tty { master }
            }
        };
        plan::write(&reaper.region, reaper.region_at, spec).map_err(|t| {
            Error::invalid(
                "command",
                format!(
                    "arguments and environment need {} bytes; the limit is {}",
                    t.needed,
                    plan::REGION_LEN
                ),
            )
        })?;
        // The pipes' inodes belong to whoever creates them; the program reopens them through
        // /proc/self/fd (`> /dev/stdout`), which needs it to own them.
        let _as_sandbox = self.act_as_sandbox()?;
        match spawn::start_program(reaper, name, cgroup_fds, stdio) {
            Ok(started) => Ok(started),
            // A reaper that does not answer is stuck: end the instance, never hang.
            Err(
                e @ Error::Setup {
                    stage: crate::error::Stage::Reaper,
                    ..
                },
            ) => {
                spawn::kill_reaper(reaper);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The report of a supervised run: its status by precedence ([`outcome::classify`]),
    /// what it used, what it printed.
    fn report(
        &self,
        sup: wait::Supervised,
        captured: bool,
        run_stats: Option<RunStats>,
        before: InstanceStats,
        after: InstanceStats,
    ) -> Result<Outcome> {
        if sup.cancelled {
            return Err(Error::Cancelled);
        }
        let run = run_stats.unwrap_or_default();
        let oom_kills = after.oom_kills.saturating_sub(before.oom_kills) + run.oom_kills;
        let pids_hits =
            after.pids_max_hits.saturating_sub(before.pids_max_hits) + run.pids_max_hits;
        let verdict = outcome::classify(&Facts {
            timed_out: sup.timed_out,
            watched: sup.watched,
            wait_status: sup.exit.map(|r| r.status),
            cpu_time_limit: self.inner.cpu_time.is_some(),
            oom_kills,
            pids_hits,
            seccomp_violation: sup.violation.is_some(),
            output_truncated: sup.stdout.truncated || sup.stderr.truncated,
        })
        .ok_or(Error::Gone)?;
        let (user_ms, sys_ms) = cpu_split(&sup, run_stats);
        let peak = after
            .peak_memory
            .or_else(|| sup.exit.map(|r| r.maxrss_kb as u64 * 1024));
        let (stdout, stdout_b64) = outcome::encode_output(&sup.stdout, captured);
        let (stderr, stderr_b64) = outcome::encode_output(&sup.stderr, captured);
        Ok(Outcome {
            version: 1,
            status: verdict.status,
            exit_code: verdict.exit_code,
            signal: verdict.signal,
            signal_name: verdict.signal.and_then(outcome::signal_name),
            limits_hit: verdict.limits_hit,
            wall_ms: sup.wall.as_secs_f64() * 1000.0,
            cpu_ms: user_ms + sys_ms,
            user_ms,
            sys_ms,
            peak_memory_bytes: peak,
            oom_kills,
            stdout,
            stderr,
            stdout_b64,
            stderr_b64,
            stdout_bytes: sup.stdout.total,
            stderr_bytes: sup.stderr.total,
            stdout_truncated: sup.stdout.truncated,
            stderr_truncated: sup.stderr.truncated,
            seccomp_violation: sup.violation.map(|(arch, nr)| SeccompViolation {
                syscall: crate::seccomp::syscall_name(arch, nr),
                nr: nr as i64,
            }),
            enforcement: self.enforcement.clone(),
            queued_ms: None,
            network: None,
        })
    }
}

/// Where the program's stdin comes from, opened.
fn stdin_source(stdin: &Stdin) -> Result<StdinSource> {
    Ok(match stdin {
        Stdin::Null => StdinSource::Null,
        Stdin::Bytes(b) => StdinSource::Bytes(b.clone()),
        Stdin::File(p) => StdinSource::File(
            std::fs::File::open(p).map_err(|e| Error::io("opening stdin file", p.clone(), e))?,
        ),
    })
}

/// User and system CPU time in ms: from the run's cgroup when it has one (it counts every
/// process of the run, waited for or not), else the program's own rusage.
fn cpu_split(sup: &wait::Supervised, run_stats: Option<RunStats>) -> (f64, f64) {
    let (mut user_ms, mut sys_ms) = match sup.exit {
        Some(r) => (r.utime_us as f64 / 1000.0, r.stime_us as f64 / 1000.0),
        None => (0.0, 0.0),
    };
    if let Some(s) = run_stats {
        let cpu_ms = s.cpu_us as f64 / 1000.0;
        if s.user_us + s.sys_us > 0 {
            (user_ms, sys_ms) = (s.user_us as f64 / 1000.0, s.sys_us as f64 / 1000.0);
        } else {
            // cgroup v1 splits its exact total into user and system time only per tick
            // (10 ms), and none has passed: split it as the program's own rusage does
            // (all user time when there is none, e.g. a killed run).
            let user_share = if user_ms + sys_ms > 0.0 {
                user_ms / (user_ms + sys_ms)
            } else {
                1.0
            };
            user_ms = cpu_ms * user_share;
            sys_ms = cpu_ms - user_ms;
        }
    }
    (user_ms, sys_ms)
}

/// What a program's fds 0-2 are, as a run asks for them.
enum Stdio {
    Pipes,
    /// A new pty of the instance, of this size (rows, columns).
    Tty((u16, u16)),
    /// This socket as stdin, pipes for output.
    Socket(OwnedFd),
}

/// A program just started by [`Instance::launch`].
pub(super) struct Launched {
    /// The program's pid in the instance.
    pub(super) pid: i32,
    pub(super) io: ProgramIo,
    pub(super) run_cg: Option<RunCgroup>,
    /// The instance's counters before the run.
    pub(super) before: InstanceStats,
    /// The tree's CPU time before the run (counted from `/proc` without a run cgroup).
    pub(super) cpu_base_us: u64,
}

/// One started run: how to end it, and the watchdogs polled while it runs.
struct Run<'a> {
    inst: &'a Instance,
    reaper: &'a Reaper,
    /// The program's pid in the instance.
    pid: i32,
    run_cg: Option<&'a RunCgroup>,
    one_shot: bool,
    cpu_limit_us: Option<u64>,
    /// The tree's CPU time before the run (counted from `/proc` without a run cgroup).
    cpu_base_us: u64,
    /// The memory limit the watchdog enforces (only without cgroups).
    mem_limit: Option<u64>,
}

impl Run<'_> {
    /// Feeds stdin and drains output until the program ends, the wall timeout or a watchdog
    /// ends it, or the command's `Cancel` fires.
    fn supervise(&self, cmd: &Command, io: ProgramIo, stdin: StdinSource) -> wait::Supervised {
        let timeout = cmd.timeout.unwrap_or(self.inst.inner.timeout);
        let sink = if cmd.pass_through {
            Sink::Inherit
        } else {
            Sink::Capture(cmd.tap.as_ref().map(|t| &*t.0))
        };
        wait::supervise(
            io,
            stdin,
            timeout,
            self.inst.inner.output_limit,
            sink,
            cmd.cancel.as_ref().map(|c| c.fd()),
            cmd.tty.as_ref(),
            &mut || self.kill(),
            &mut || self.watch(),
        )
    }

    /// Ends the run: in a one-shot run the whole instance; in a session the run's cgroup
    /// (every process it started, wherever it went), or its process group without cgroups.
    fn kill(&self) {
        if self.one_shot {
            spawn::kill_reaper(self.reaper);
        } else if let Some(run) = self.run_cg {
            run.kill();
        } else {
            let _g = self.inst.lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = spawn::signal(self.reaper, self.pid, libc::SIGKILL);
        }
    }

    /// A watchdog's kill. Without cgroups, in a one-shot run, the reaper kills every other
    /// process of the instance (kill(-1) from pid 1), so the program's exit record and rusage
    /// still arrive for the report.
    fn watchdog_kill(&self) {
        if self.one_shot && self.inst.cg.is_none() {
            let _g = self.inst.lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = spawn::signal(self.reaper, -1, libc::SIGKILL);
        } else {
            self.kill();
        }
    }

    /// The polled limits: CPU time (the run cgroup's, else the tree's from `/proc`) and, without
    /// cgroups, memory (the cheap upper bound first, the exact figure only when it is over).
    fn watch(&self) -> Option<Limit> {
        let pid = self.reaper.pid;
        if let Some(limit) = self.cpu_limit_us {
            let used = match self.run_cg {
                Some(run) => run.cpu_us(),
                None => procfs::tree_cpu_us(pid).saturating_sub(self.cpu_base_us),
            };
            if used >= limit {
                self.watchdog_kill();
                return Some(Limit::CpuTime);
            }
        }
        if let Some(limit) = self.mem_limit {
            if procfs::tree_memory(pid, false) > limit && procfs::tree_memory(pid, true) > limit {
                self.watchdog_kill();
                return Some(Limit::Memory);
            }
        }
        None
    }
}
