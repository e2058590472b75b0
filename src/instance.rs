//! A live instance: its reaper, work dir and state record; `exec` many times, copy files in
//! and out, `destroy` (also on drop).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cgroup::devices;
use crate::command::{Command, Stdin};
use crate::defaults;
use crate::error::{Error, Result};
use crate::gpu::GpuLease;
use crate::ns::user::{IdMap, SANDBOX_ID};
use crate::outcome::{self, Limit, Outcome, Status, Usage};
use crate::policy::{self, Net, Policy};
use crate::spawn::plan::{self, ExecSpec};
use crate::spawn::proto::Rlimit;
use crate::spawn::wait::{self, Sink, StdinSource};
use crate::spawn::{self, Reaper, ReaperSpec};
use crate::state::{self, Record, RecordInfo};
use crate::sys;

/// One isolated instance: fresh namespaces, its own root and work dir, a reaper as pid 1.
pub struct Instance {
    inner: Arc<Policy>,
    reaper: Option<Reaper>,
    record: Option<Record>,
    ids: IdMap,
    cg: Option<crate::cgroup::InstanceCgroup>,
    /// The GPUs it holds; released after everything else is gone.
    gpu: Option<crate::gpu::GpuLease>,
    /// What enforces each limit for this instance (the sandbox's, less what failed here).
    enforcement: crate::outcome::Enforcement,
    /// Where this instance's CPUs start (see `exec_inner`).
    cpu_base: usize,
    /// Serialises use of the control socket and the exec region.
    lock: Mutex<()>,
}

/// One entry of [`Instance::list_dir`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    pub name: String,
    /// Bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    #[serde(rename = "type")]
    pub kind: FileKind,
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The reason of an `Error::Path` for a file or directory that does not exist.
pub const NO_SUCH_FILE: &str = "no such file or directory";

/// Entries [`Instance::list_dir`] returns at most.
pub const LIST_MAX: usize = 65_536;

/// Resolve flags for every path the supervisor opens in the work dir: no symlink is followed,
/// nothing escapes the work dir.
const RESOLVE: u64 = sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS | sys::RESOLVE_BENEATH;

/// Splits a work-dir path into checked components: relative (or absolute under the work dir),
/// no `.`/`..`, no NUL, not empty.
pub(crate) fn components(path: &str) -> Result<Vec<CString>> {
    let refuse = |reason: &str| {
        Err(Error::Path {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    let rel = match path.strip_prefix(defaults::WORK_DIR) {
        Some(r) if r.is_empty() || r.starts_with('/') => r.trim_start_matches('/'),
        _ if path.starts_with('/') => return refuse("absolute paths must be under /home/sandbox"),
        _ => path,
    };
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in rel.split('/') {
        match c {
            "" => continue,
            "." | ".." => return refuse("'.' and '..' are not allowed"),
            c => out.push(CString::new(c).unwrap()),
        }
    }
    if out.is_empty() {
        return refuse("names no file");
    }
    Ok(out)
}

impl Instance {
    pub(crate) fn create(inner: Arc<Policy>, lease: Option<GpuLease>) -> Result<Instance> {
        // GPUs first: waiting for them must not hold a slot.
        let gpu = match (&inner.gpu, lease) {
            (Some(g), lease) => Some(g.lease(lease)?),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "GPU lease",
                    "this sandbox asks for no GPU; build it with gpus or gpu_devices",
                ))
            }
        };
        let (rules, gpu_plan) = match (&inner.gpu, &gpu) {
            (Some(g), Some(lease)) => (
                devices::allow_list(&g.rules(lease)),
                Some(policy::mount_plan(
                    &inner.template,
                    &inner.plan_spec,
                    Some(&g.nodes(lease)),
                )),
            ),
            _ => (devices::minimal(), None),
        };
        let plan = gpu_plan.as_ref().unwrap_or(&inner.plan);
        let mut record = state::claim(&inner.state_dir)?;
        let (euid, egid) = sys::ids();
        let ids = IdMap::for_slot(record.slot, euid, egid);
        let mut enforcement = inner.enforcement.clone();
        let cg = match crate::cgroup::setup() {
            Ok(setup) => {
                match crate::cgroup::InstanceCgroup::create(
                    setup,
                    record.slot,
                    &inner.limits,
                    &rules,
                ) {
                    Ok(cg) => Some(cg),
                    Err(e) if inner.strict => {
                        record.remove();
                        return Err(e);
                    }
                    Err(_) => {
                        (enforcement.memory, enforcement.cpu, enforcement.pids) =
                            ("watchdog".into(), "none".into(), "rlimit".into());
                        enforcement.devices = "mount-only".into();
                        None
                    }
                }
            }
            Err(_) => None,
        };
        if let Some(cg) = &cg {
            if !cg.attach_devices(&rules) {
                enforcement.devices = "mount-only".into();
            }
        }
        let fail = |record: Record, cg: &Option<crate::cgroup::InstanceCgroup>, e: Error| {
            if let Some(cg) = cg {
                cg.destroy();
            }
            record.remove();
            Err(e)
        };
        let cgroups = cg.as_ref().map(|c| c.paths()).unwrap_or_default();
        // Recorded before the clone, so a supervisor killed right after leaves them findable.
        if let Err(e) = record.write(&RecordInfo {
            version: 1,
            supervisor_pid: std::process::id() as i32,
            cgroups: cgroups.clone(),
            ..Default::default()
        }) {
            return fail(record, &cg, e);
        }
        let clone_into = match cg.as_ref().map(|c| c.clone_into()).transpose() {
            Ok(fd) => fd.flatten(),
            Err(e) => return fail(record, &cg, e),
        };
        let spec = ReaperSpec {
            plan,
            landlock: &inner.landlock,
            ids,
            hostname: &inner.hostname,
            loopback: inner.net == Net::Loopback,
        };
        let mut attach = |pid: i32| cg.as_ref().map_or(Ok(()), |c| c.attach(pid));
        let reaper = match spawn::start_reaper(
            &spec,
            clone_into.as_ref().map(|f| f.as_raw_fd()),
            &mut attach,
        ) {
            Ok(r) => r,
            Err(e) => return fail(record, &cg, e),
        };
        let info = RecordInfo {
            version: 1,
            supervisor_pid: std::process::id() as i32,
            reaper_pid: reaper.pid,
            reaper_start: sys::host::process_start_time(reaper.pid).unwrap_or(0),
            host_uid: ids.host_uid,
            cgroups,
        };
        // Consecutive instances of one process start on consecutive CPUs, so concurrent runs
        // spread over the host; the pid varies the start between processes.
        static NEXT_CPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cpu_base = NEXT_CPU.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + std::process::id() as usize;
        let mut inst = Instance {
            inner,
            reaper: Some(reaper),
            record: None,
            ids,
            cg,
            gpu,
            enforcement,
            cpu_base,
            lock: Mutex::new(()),
        };
        record.write(&info)?;
        inst.record = Some(record);
        Ok(inst)
    }

    fn reaper(&self) -> Result<&Reaper> {
        self.reaper.as_ref().ok_or(Error::Gone)
    }

    /// Runs a program in this instance and reports what it did. On timeout only this run's
    /// process group is killed; the instance and its other processes live on.
    pub fn exec(&self, cmd: &Command) -> Result<Outcome> {
        self.exec_inner(cmd, false)
    }

    pub(crate) fn exec_inner(&self, cmd: &Command, one_shot: bool) -> Result<Outcome> {
        let reaper = self.reaper()?;
        if let Some(c) = &cmd.cancel {
            c.check()?;
        }
        for (path, data, mode) in &cmd.files {
            self.put_file(path, data, *mode)?;
        }
        let (argv, envp, paths) = policy::resolve(&self.inner, cmd)?;
        let stdin = match &cmd.stdin {
            Stdin::Null => StdinSource::Null,
            Stdin::Bytes(b) => StdinSource::Bytes(b.clone()),
            Stdin::File(p) => StdinSource::File(
                std::fs::File::open(p)
                    .map_err(|e| Error::io("opening stdin file", p.clone(), e))?,
            ),
        };
        let cwd = CString::new(defaults::WORK_DIR).unwrap();
        let mut rlimits = vec![
            Rlimit {
                resource: libc::RLIMIT_CORE,
                cur: defaults::CORE,
                max: defaults::CORE,
            },
            Rlimit {
                resource: libc::RLIMIT_NOFILE,
                cur: defaults::NOFILE,
                max: defaults::NOFILE,
            },
        ];
        if self.cg.is_none() {
            // Without cgroups: processes per (user namespace, uid), i.e. per instance; CPU
            // seconds per process as a backstop of the CPU-time limit.
            if let Some(p) = self.inner.limits.pids {
                rlimits.push(Rlimit {
                    resource: libc::RLIMIT_NPROC,
                    cur: p,
                    max: p,
                });
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
        // A session's run gets its own cgroup (its timeout must not touch the session's other
        // processes); a one-shot run's program simply stays in the instance's cgroups.
        let run_cg = match &self.cg {
            Some(cg) if one_shot => Some(cg.as_run()),
            Some(cg) => Some(cg.new_run()?),
            None => None,
        };
        let cgroup_mode = match (&self.cg, &run_cg) {
            (_, Some(r)) if r.join.is_empty() => crate::spawn::proto::CGROUP_NONE,
            (Some(cg), Some(_)) if cg.v2 => crate::spawn::proto::CGROUP_V2_CLONE_INTO,
            (Some(_), Some(_)) => crate::spawn::proto::CGROUP_V1_PROCS,
            _ => crate::spawn::proto::CGROUP_NONE,
        };
        let cgroup_fds: Vec<std::os::fd::RawFd> = run_cg
            .iter()
            .flat_map(|r| r.join.iter().map(|f| f.as_raw_fd()))
            .collect();
        // ceil(cpus) CPUs, spread over the host by instance, so thread pools size themselves.
        let cpus: Vec<usize> = match self.inner.limits.cpus {
            Some(c) if (c.ceil() as usize) < self.inner.ncpu => {
                let n = c.ceil() as usize;
                (0..n)
                    .map(|i| (self.cpu_base.wrapping_mul(n) + i) % self.inner.ncpu)
                    .collect()
            }
            _ => Vec::new(),
        };
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
            cgroup_mode,
            cpus: &cpus,
        };
        // Without a run cgroup the CPU-time watchdog counts the instance's tree from /proc,
        // from before the program starts: what earlier runs of a session used (and left in
        // the reaper's reaped-children counts) is not this run's.
        let cpu_base_us = match (self.inner.cpu_time, &run_cg) {
            (Some(_), None) => tree_cpu_us(reaper.pid),
            _ => 0,
        };
        let (pid, io) = {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            plan::write(&reaper.region, reaper.region_at, &spec).map_err(|t| {
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
            match spawn::start_program(reaper, &cmd.name(), &cgroup_fds) {
                Ok(started) => started,
                // A reaper that does not answer is stuck: end the instance, never hang.
                Err(
                    e @ Error::Setup {
                        stage: crate::error::Stage::Reaper,
                        ..
                    },
                ) => {
                    spawn::kill_reaper(reaper);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        };
        let timeout = cmd.timeout.unwrap_or(self.inner.timeout);
        let sink = if cmd.pass_through {
            Sink::Inherit
        } else {
            Sink::Capture
        };
        // Ends the run: in a one-shot run the whole instance; in a session the run's cgroup
        // (every process it started, wherever it went), or its process group without cgroups.
        let kill_run = || {
            if one_shot {
                spawn::kill_reaper(reaper);
            } else if let Some(run) = &run_cg {
                run.kill();
            } else {
                let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                let _ = spawn::signal(reaper, pid, libc::SIGKILL);
            }
        };
        let mut on_timeout = || kill_run();
        let cpu_limit_us = self.inner.cpu_time.map(|t| t.as_micros() as u64);
        let mem_watchdog = if self.cg.is_none() {
            self.inner.limits.memory
        } else {
            None
        };
        // A watchdog kill without cgroups: in a one-shot run the reaper kills every other process
        // of the instance (kill(-1) from pid 1), so the program's exit record and rusage still
        // arrive for the report.
        let watchdog_kill = || {
            if one_shot && self.cg.is_none() {
                let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                let _ = spawn::signal(reaper, -1, libc::SIGKILL);
            } else {
                kill_run();
            }
        };
        let mut watch = || {
            if let Some(limit) = cpu_limit_us {
                let used = match &run_cg {
                    Some(run) => run.cpu_us(),
                    None => tree_cpu_us(reaper.pid).saturating_sub(cpu_base_us),
                };
                if used >= limit {
                    watchdog_kill();
                    return Some(Limit::CpuTime);
                }
            }
            if let Some(limit) = mem_watchdog {
                if tree_memory(reaper.pid, false) > limit && tree_memory(reaper.pid, true) > limit {
                    watchdog_kill();
                    return Some(Limit::Memory);
                }
            }
            None
        };
        let sup = wait::supervise(
            io,
            stdin,
            timeout,
            self.inner.output_limit,
            sink,
            cmd.cancel.as_ref().map(|c| c.fd()),
            &mut on_timeout,
            &mut watch,
        );
        // A one-shot run's `as_run` leaves the instance's OOM and pids counters to `after`.
        let run_stats = run_cg.as_ref().map(|r| r.stats());
        let after = self.cg.as_ref().map(|c| c.stats()).unwrap_or_default();
        if let Some(run) = run_cg.filter(|_| !one_shot) {
            run.release();
        }
        self.report(sup, !cmd.pass_through, run_stats, before, after)
    }

    fn report(
        &self,
        sup: wait::Supervised,
        captured: bool,
        run_stats: Option<crate::cgroup::RunStats>,
        before: crate::cgroup::InstanceStats,
        after: crate::cgroup::InstanceStats,
    ) -> Result<Outcome> {
        if sup.cancelled {
            return Err(Error::Cancelled);
        }
        let mut limits_hit = Vec::new();
        let (mut exit_code, mut signal) = (None, None);
        let run = run_stats.unwrap_or_default();
        let oom_kills = after.oom_kills.saturating_sub(before.oom_kills) + run.oom_kills;
        let pids_hits =
            after.pids_max_hits.saturating_sub(before.pids_max_hits) + run.pids_max_hits;
        let status = if sup.timed_out {
            limits_hit.push(Limit::Wall);
            Status::Timeout
        } else if let Some(l) = sup.watched {
            limits_hit.push(l);
            if l == Limit::CpuTime {
                Status::CpuTime
            } else {
                Status::Memory
            }
        } else {
            let Some(rec) = sup.exit else {
                return Err(Error::Gone);
            };
            let died = libc::WIFSIGNALED(rec.status) || libc::WEXITSTATUS(rec.status) != 0;
            if libc::WIFSIGNALED(rec.status) {
                signal = Some(libc::WTERMSIG(rec.status));
            } else {
                exit_code = Some(libc::WEXITSTATUS(rec.status));
            }
            if signal == Some(libc::SIGXCPU) && self.inner.cpu_time.is_some() {
                // RLIMIT_CPU, the backstop without cgroups, fired before the watchdog.
                limits_hit.push(Limit::CpuTime);
                Status::CpuTime
            } else if oom_kills > 0 && died {
                Status::Memory
            } else if pids_hits > 0 && died {
                Status::Pids
            } else if sup.violation.is_some() && libc::WIFSIGNALED(rec.status) {
                signal = Some(libc::WTERMSIG(rec.status));
                Status::Seccomp
            } else if libc::WIFEXITED(rec.status) {
                exit_code = Some(libc::WEXITSTATUS(rec.status));
                if exit_code == Some(0) {
                    Status::Ok
                } else {
                    Status::Exit
                }
            } else {
                signal = Some(libc::WTERMSIG(rec.status));
                Status::Signal
            }
        };
        if oom_kills > 0 && !limits_hit.contains(&Limit::Memory) {
            limits_hit.push(Limit::Memory);
        }
        if pids_hits > 0 {
            limits_hit.push(Limit::Pids);
        }
        if sup.stdout.truncated || sup.stderr.truncated {
            limits_hit.push(Limit::Output);
        }
        let (mut user_ms, mut sys_ms, mut peak) = match sup.exit {
            Some(r) => (
                r.utime_us as f64 / 1000.0,
                r.stime_us as f64 / 1000.0,
                Some(r.maxrss_kb as u64 * 1024),
            ),
            None => (0.0, 0.0, None),
        };
        // The cgroup counts every process of the run, waited for or not.
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
        if after.peak_memory.is_some() {
            peak = after.peak_memory;
        }
        let (stdout, stdout_b64) = outcome::encode_output(&sup.stdout, captured);
        let (stderr, stderr_b64) = outcome::encode_output(&sup.stderr, captured);
        Ok(Outcome {
            version: 1,
            status,
            exit_code,
            signal,
            signal_name: signal.and_then(outcome::signal_name),
            limits_hit,
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
            seccomp_violation: sup
                .violation
                .map(|(arch, nr)| crate::outcome::SeccompViolation {
                    syscall: crate::seccomp::syscall_name(arch, nr),
                    nr: nr as i64,
                }),
            enforcement: self.enforcement.clone(),
            queued_ms: None,
        })
    }

    /// Opens (creating when `create`) each directory of `comps[..comps.len()-1]` beneath the
    /// work dir, never following a symlink. Returns the innermost directory.
    fn walk(&self, comps: &[CString], create: bool) -> Result<OwnedFd> {
        self.open_dir(comps, comps.len() - 1, create)
    }

    /// Opens the directory `comps[..n]` (the work dir itself when `n` is 0), creating missing
    /// ones when `create`, never following a symlink.
    fn open_dir(&self, comps: &[CString], n: usize, create: bool) -> Result<OwnedFd> {
        let work = self.reaper()?.work.as_fd();
        let mut dir: Option<OwnedFd> = None;
        for c in &comps[..n] {
            let base: BorrowedFd<'_> = dir.as_ref().map_or(work, |d| d.as_fd());
            let open = || {
                sys::openat2(
                    base,
                    c,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                    RESOLVE,
                )
            };
            let next = match open() {
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdirat(base, c, 0o755) {
                        Ok(()) => open().map_err(|e| self.path_err(comps, e))?,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            open().map_err(|e| self.path_err(comps, e))?
                        }
                        Err(e) => return Err(self.path_err(comps, e)),
                    }
                }
                r => r.map_err(|e| self.path_err(comps, e))?,
            };
            dir = Some(next);
        }
        match dir {
            Some(d) => Ok(d),
            None => sys::openat2(work, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE)
                .map_err(|e| self.path_err(comps, e)),
        }
    }

    fn path_err(&self, comps: &[CString], e: std::io::Error) -> Error {
        let path = comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let reason = match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "a symlink is in the way (symlinks are never followed)".to_string()
            }
            Some(libc::EXDEV) => "it leads outside the work dir".to_string(),
            Some(libc::ENOENT) => NO_SUCH_FILE.to_string(),
            // A directory component opened with O_NOFOLLOW | O_DIRECTORY that is a symlink.
            Some(libc::ENOTDIR) => {
                "a path component is not a directory (or is a symlink, which is never followed)"
                    .to_string()
            }
            _ => e.to_string(),
        };
        Error::Path { path, reason }
    }

    /// File access in the work dir is done as the sandbox user's host ids: the work dir's
    /// tmpfs belongs to the instance's user namespace, which refuses inodes owned by ids it
    /// does not map (EOVERFLOW), and the supervisor should have no more rights there than the
    /// program has. Per-thread; a no-op when unprivileged (our ids are the mapped ones).
    fn act_as_sandbox(&self) -> Result<Option<sys::host::FsIdGuard>> {
        if !self.ids.privileged {
            return Ok(None);
        }
        sys::host::act_as(self.ids.host_uid, self.ids.host_gid)
            .map(Some)
            .ok_or_else(|| {
                Error::io(
                    "acting as the sandbox user",
                    None,
                    std::io::Error::from_raw_os_error(libc::EPERM),
                )
            })
    }

    /// Writes a file into the work dir (path relative to it), creating parent directories.
    /// Never follows a symlink: a planted link makes this fail instead of writing elsewhere.
    pub fn put_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, true)?;
        let name = comps.last().unwrap();
        let fd = sys::openat2(
            dir.as_fd(),
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0o600,
            RESOLVE,
        )
        .map_err(|e| self.path_err(&comps, e))?;
        let f = std::fs::File::from(fd);
        let meta = f.metadata().map_err(|e| self.path_err(&comps, e))?;
        if !meta.is_file() {
            return Err(Error::Path {
                path: path.to_string(),
                reason: "not a regular file".into(),
            });
        }
        sys::fchmod(f.as_fd(), mode & 0o7777 & !0o6000).map_err(|e| self.path_err(&comps, e))?;
        sys::write_all(f.as_raw_fd(), data).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::Path {
                path: path.to_string(),
                reason: "the work dir is full (--work-size)".into(),
            },
            _ => self.path_err(&comps, e),
        })
    }

    /// Reads a regular file from the work dir, at most `max` bytes (more is an error).
    pub fn get_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, false)?;
        let fd = sys::openat2(
            dir.as_fd(),
            comps.last().unwrap(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
            RESOLVE,
        )
        .map_err(|e| self.path_err(&comps, e))?;
        let f = std::fs::File::from(fd);
        let meta = f.metadata().map_err(|e| self.path_err(&comps, e))?;
        if !meta.is_file() {
            return Err(Error::Path {
                path: path.to_string(),
                reason: "not a regular file".into(),
            });
        }
        if meta.len() > max {
            return Err(Error::Path {
                path: path.to_string(),
                reason: format!("{} bytes is over the limit of {max}", meta.len()),
            });
        }
        let mut out = Vec::with_capacity(meta.len() as usize);
        use std::io::Read;
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.path_err(&comps, e))?;
        if out.len() as u64 > max {
            return Err(Error::Path {
                path: path.to_string(),
                reason: format!("grew over the limit of {max} bytes"),
            });
        }
        Ok(out)
    }

    /// Lists a directory of the work dir (`""` or `"."`: the work dir itself), sorted by name.
    /// Never follows a symlink: a link is listed as one, and a link on the way is refused.
    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let root = path.trim_matches('/').is_empty()
            || path == "."
            || path.trim_end_matches('/') == defaults::WORK_DIR;
        let comps = if root { Vec::new() } else { components(path)? };
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.open_dir(&comps, comps.len(), false)?;
        let err = |e| self.path_err(&comps, e);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sys::getdents64(dir.as_fd(), &mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name (NUL-ended).
            let mut off = 0;
            while off + 19 < n {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let name = &buf[off + 19..off + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                off += reclen.max(1);
                if name == b"." || name == b".." {
                    continue;
                }
                if out.len() >= LIST_MAX {
                    return Err(Error::Path {
                        path: path.to_string(),
                        reason: format!("more than {LIST_MAX} entries"),
                    });
                }
                let c = CString::new(name).unwrap_or_default();
                // O_PATH | O_NOFOLLOW opens a symlink itself; fstat then describes the link.
                let Ok(fd) =
                    sys::openat2(dir.as_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0, RESOLVE)
                else {
                    continue; // removed meanwhile
                };
                let Ok(meta) = std::fs::File::from(fd).metadata() else {
                    continue;
                };
                use std::os::unix::fs::PermissionsExt;
                let t = meta.file_type();
                out.push(DirEntry {
                    name: String::from_utf8_lossy(name).into_owned(),
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o7777,
                    kind: if t.is_symlink() {
                        FileKind::Symlink
                    } else if t.is_dir() {
                        FileKind::Dir
                    } else if t.is_file() {
                        FileKind::File
                    } else {
                        FileKind::Other
                    },
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a file, a symlink (never what it points to) or an empty directory of the work
    /// dir.
    pub fn remove_file(&self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, false)?;
        let name = comps.last().unwrap();
        match sys::unlinkat(dir.as_fd(), name, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                sys::unlinkat(dir.as_fd(), name, libc::AT_REMOVEDIR).map_err(|e| {
                    match e.raw_os_error() {
                        Some(libc::ENOTEMPTY) => Error::Path {
                            path: path.to_string(),
                            reason: "the directory is not empty".into(),
                        },
                        _ => self.path_err(&comps, e),
                    }
                })
            }
            r => r.map_err(|e| self.path_err(&comps, e)),
        }
    }

    /// What the instance (every process in it, background ones included) uses now: from its
    /// cgroup, or without one from `/proc` (CPU time of live processes; their anonymous and
    /// shared memory, each shared page split among its sharers; no peak).
    pub fn usage(&self) -> Result<Usage> {
        let reaper = self.reaper()?;
        if let Some(cg) = &self.cg {
            return Ok(cg.usage());
        }
        let mut pids = 0;
        for_tree(reaper.pid, |_, _| pids += 1);
        Ok(Usage {
            cpu_ms: tree_cpu_us(reaper.pid) as f64 / 1000.0,
            memory_bytes: Some(tree_memory(reaper.pid, true)),
            peak_memory_bytes: None,
            pids: Some(pids),
            source: "procfs",
        })
    }

    /// The reaper's pid on the host (for diagnostics and tests).
    pub fn reaper_pid(&self) -> Option<i32> {
        self.reaper.as_ref().map(|r| r.pid)
    }

    /// The host GPUs this instance holds (the N of `/dev/nvidiaN`; inside, CUDA numbers them
    /// from 0 in this order).
    pub fn gpus(&self) -> &[u32] {
        self.gpu.as_ref().map_or(&[], |l| l.indices())
    }

    /// Kills every process of the instance and removes its mounts, work dir and record.
    /// Mounts and the work dir live only in the instance's mount namespace, so they go with
    /// its last process.
    pub fn destroy(mut self) -> Result<()> {
        self.teardown();
        Ok(())
    }

    fn teardown(&mut self) {
        if let Some(r) = self.reaper.take() {
            spawn::kill_reaper(&r);
        }
        if let Some(cg) = self.cg.take() {
            cg.destroy();
        }
        if let Some(rec) = self.record.take() {
            rec.remove();
        }
        self.gpu = None;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// CPU time of the live descendants of `pid` (the reaper) and of the children each process of
/// the tree reaped, in microseconds (the CPU-time watchdog without cgroups). The reaper's own time is rsandbox's,
/// not the program's.
fn tree_cpu_us(pid: i32) -> u64 {
    let tick_us = 1_000_000 / sys::host::clock_ticks();
    let mut ticks = 0;
    for_tree(pid, |p, is_root| {
        if let Ok(s) = sys::host::read_small(format!("/proc/{p}/stat")) {
            // After ")": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
            // cmajflt utime stime cutime cstime (fields 3-17 of stat; some may be negative).
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // Every process's waited-for children (gone, so never counted twice); the live
            // ones' own time, but not the reaper's.
            ticks += n(13) + n(14) + if is_root { 0 } else { n(11) + n(12) };
        }
    });
    ticks * tick_us
}

/// Calls `f` for `pid` and each of its descendants (bounded).
fn for_tree(pid: i32, mut f: impl FnMut(i32, bool)) {
    let mut stack = vec![pid];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        f(p, p == pid);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = sys::host::read_small(t.path().join("children")) {
                    stack.extend(c.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
                }
            }
        }
    }
}

/// The memory of `pid`'s descendants as a cgroup would count it, in bytes (the memory watchdog
/// used when cgroups are not available): anonymous and shared-memory pages, each page shared by
/// several processes split among them (PSS), so that pages forked children share with their
/// parent count once and the interpreter's mapped files not at all. The reaper (`pid`) is not
/// the program: its pages are the supervisor's copy-on-write copy. Not `exact`: an upper bound
/// from `/proc/PID/status` alone (each shared page counted in full), cheap enough to poll; the
/// watchdog reads the page-walking exact figure only when the bound is over the limit.
fn tree_memory(pid: i32, exact: bool) -> u64 {
    let mut total = 0;
    for_tree(pid, |p, is_reaper| {
        if !is_reaper {
            total += process_memory(p, exact);
        }
    });
    total
}

/// `Pss_Anon + Pss_Shmem` of `/proc/PID/smaps_rollup` when `exact` and the kernel has them
/// (5.9+), else `RssAnon + RssShmem` of `/proc/PID/status`; 0 for a process already gone.
fn process_memory(p: i32, exact: bool) -> u64 {
    let kib = |text: &str, keys: [&str; 2]| -> Option<u64> {
        keys.iter()
            .map(|k| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum()
    };
    let pss = || {
        let s = sys::host::read_small(format!("/proc/{p}/smaps_rollup")).ok()?;
        kib(&s, ["Pss_Anon:", "Pss_Shmem:"])
    };
    let rss = || {
        let s = sys::host::read_small(format!("/proc/{p}/status")).ok()?;
        kib(&s, ["RssAnon:", "RssShmem:"])
    };
    exact.then(pss).flatten().or_else(rss).unwrap_or(0) * 1024
}

/// Default maximum for `get_file`: the default work dir size.
pub const GET_FILE_MAX: u64 = defaults::WORK_SIZE;

#[allow(dead_code)]
fn _assert_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Instance>();
    ok::<crate::Sandbox>();
    let _ = Duration::ZERO;
}

#[cfg(test)]
mod tests {
    use super::components;

    fn names(p: &str) -> Vec<String> {
        components(p)
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn work_dir_paths_are_split_and_checked() {
        assert_eq!(names("a/b/c.txt"), ["a", "b", "c.txt"]);
        assert_eq!(names("/home/sandbox/x"), ["x"]);
        assert_eq!(names("a//b/"), ["a", "b"]);
        for bad in [
            "",
            "/",
            "..",
            "a/../b",
            "./a",
            "/etc/passwd",
            "/home/sandboxx/a",
            "/home/sandbox",
            "a\0b",
        ] {
            assert!(components(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
