//! One request's work as plain data (policy, files, steps, files to fetch) and its execution on
//! a blocking thread: create an instance, copy files in, compile and run, fetch files, hand the
//! result over, then tear down (after the answer has gone, so teardown is off the request path).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::seccomp::Profile;
use crate::{Cancel, Command, Error, Instance, Net, Outcome, Result, Sandbox, Status, Stdin};

/// The sandbox settings a request chooses; instances with equal keys share one `Sandbox`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Policy {
    /// CPUs in hundredths.
    pub(crate) cpus_centi: u32,
    pub(crate) memory: u64,
    pub(crate) pids: u64,
    pub(crate) net: Net,
    /// `default` or `strict`.
    pub(crate) seccomp: &'static str,
    pub(crate) cpu_time_ms: Option<u64>,
    /// GPUs: a count, or exact indices; shared with other sharers or exclusive.
    pub(crate) gpus: GpuAsk,
}

/// A request's GPUs, as the daemon keys sandboxes by them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct GpuAsk {
    pub(crate) count: u32,
    pub(crate) devices: Option<Vec<u32>>,
    pub(crate) share: bool,
}

/// A program to start.
#[derive(Clone, Debug)]
pub(crate) enum Program {
    Argv(Vec<String>),
    /// A script in the work dir run by the sandbox's Python.
    PythonScript(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) program: Program,
    pub(crate) timeout: Duration,
}

/// Everything one request asks for.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub(crate) policy: Policy,
    pub(crate) files: Vec<(String, Vec<u8>, u32)>,
    pub(crate) compile: Option<Step>,
    pub(crate) run: Step,
    pub(crate) stdin: Vec<u8>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) fetch: Vec<String>,
    /// The run step on a pty of the instance (its output one stream, in `stdout`).
    pub(crate) tty: bool,
    /// Sees the steps' output as it arrives (a streamed answer).
    pub(crate) tap: Option<Tap>,
}

/// Where a streamed answer's output goes as it arrives: (stream 0 stdout or 1 stderr, bytes).
#[derive(Clone)]
pub(crate) struct Tap(pub(crate) std::sync::Arc<crate::spawn::wait::TapFn>);

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// What came of a job.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) compile: Option<Outcome>,
    /// `None` when the compile step failed.
    pub(crate) run: Option<Outcome>,
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    /// Files that were asked for and not returned, with the reason.
    pub(crate) refused: BTreeMap<String, String>,
}

impl Done {
    /// The fetched files, base64 (how both APIs return them).
    pub(crate) fn files_b64(&self) -> BTreeMap<String, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), b64.encode(v)))
            .collect()
    }
}

/// Sandboxes by policy, built on first use (building compiles the seccomp filter and checks
/// the template: not per request), least recently used first. Each has the library's warm pool
/// (`SandboxBuilder::warm`): the [`Sandboxes::WARM`] most recently used policies keep `depth`
/// instances created ahead of time, so creating one (mounts, cgroups, and on cgroup v1 the
/// attach, which waits for an RCU grace period when attaches are sparse) is off a request's
/// path, and used instances are torn down on the pool's thread after the answer.
pub(crate) struct Sandboxes {
    lru: Mutex<Vec<(Policy, Sandbox)>>,
    depth: usize,
}

impl Sandboxes {
    /// Policies kept built at most (the least recently used is dropped past that).
    const KEEP: usize = 16;
    /// Policies kept warm (the most recently used).
    const WARM: usize = 4;

    /// `depth` ready instances per warm policy; 0: no warm pools at all (sessions' sandboxes,
    /// whose instances live long and are created on request).
    pub(crate) fn new(depth: usize) -> Sandboxes {
        Sandboxes {
            lru: Mutex::new(Vec::new()),
            depth: depth.min(64),
        }
    }

    pub(crate) fn get(&self, p: &Policy) -> Result<Sandbox> {
        let mut dropped = Vec::new();
        let sb = {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            match lru.iter().position(|(q, _)| q == p) {
                Some(i) => {
                    let e = lru.remove(i);
                    lru.push(e);
                }
                None => {
                    // Built under the lock: concurrent first requests of one policy build once.
                    let sb = self.build(p)?;
                    lru.push((p.clone(), sb));
                    while lru.len() > Self::KEEP {
                        dropped.push(lru.remove(0).1);
                    }
                }
            }
            let n = lru.len();
            if self.depth > 0 {
                for (i, (_, sb)) in lru.iter().enumerate() {
                    sb.set_warm(if i + Self::WARM >= n { self.depth } else { 0 });
                }
            }
            lru[n - 1].1.clone()
        };
        drop(dropped); // a dropped sandbox's pool thread destroys its instances: not under the lock
        Ok(sb)
    }

    fn build(&self, p: &Policy) -> Result<Sandbox> {
        let mut b = Sandbox::builder()
            .cpus(p.cpus_centi as f64 / 100.0)
            .memory(p.memory)
            .pids(p.pids)
            .net(p.net.clone())
            .seccomp(match p.seccomp {
                "strict" => Profile::Strict,
                _ => Profile::Default,
            });
        if let Some(ms) = p.cpu_time_ms {
            b = b.cpu_time(Duration::from_millis(ms));
        }
        // Instances with GPUs are not kept warm (idle ones would hold their GPUs): the daemon
        // allocates a request's GPUs while it waits in the queue, then creates its instance.
        b = match (&p.gpus.devices, p.gpus.count) {
            (Some(d), _) => b.gpu_devices(d).gpu_share(p.gpus.share),
            (None, n) if n > 0 => b.gpus(n).gpu_share(p.gpus.share),
            _ if self.depth > 0 => b.warm(self.depth),
            _ => b,
        };
        b.build()
    }

    /// The Prometheus text of the warm pools' figures.
    pub(crate) fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let mut t = crate::PoolStats::default();
        for (_, sb) in self.lru.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(s) = sb.pool_stats() {
                t.ready += s.ready;
                t.hits += s.hits;
                t.misses += s.misses;
            }
        }
        let _ = writeln!(out, "# HELP rsandbox_warm_instances Instances created ahead of time, ready for a request.\n# TYPE rsandbox_warm_instances gauge\nrsandbox_warm_instances {}", t.ready);
        let _ = writeln!(out, "# HELP rsandbox_warm_total Runs by whether a ready instance was there (of the policies built now).\n# TYPE rsandbox_warm_total counter\nrsandbox_warm_total{{result=\"hit\"}} {}\nrsandbox_warm_total{{result=\"miss\"}} {}", t.hits, t.misses);
    }

    /// Drops every sandbox: their pools' threads destroy the idle and finished instances.
    pub(crate) fn close(&self) {
        let all: Vec<(Policy, Sandbox)> =
            std::mem::take(&mut *self.lru.lock().unwrap_or_else(|e| e.into_inner()));
        drop(all);
    }
}

fn command(step: &Step, job: &Job, cancel: &Cancel) -> Command {
    let mut cmd = match &step.program {
        Program::Argv(v) => Command::new(&v[0]).args(&v[1..]),
        Program::PythonScript(s) => Command::python_script(s.clone()),
    };
    for (k, v) in &job.env {
        cmd = cmd.env(k.clone(), v.clone());
    }
    if let Some(tap) = job.tap.clone() {
        cmd = cmd.on_output(move |s, b| {
            (tap.0)(
                if s == crate::OutputStream::Stdout {
                    0
                } else {
                    1
                },
                b,
            )
        });
    }
    cmd.timeout(step.timeout).cancel_on(cancel)
}

/// Runs `job` (blocking) in a fresh instance of `sb` (from its warm pool when one is ready),
/// holding `gpus` when the job asked for GPUs. `deliver` gets the result as soon as it is
/// known; the instance is retired after that.
pub(crate) fn execute(
    sb: &Sandbox,
    gpus: Option<crate::GpuLease>,
    job: &Job,
    cancel: &Cancel,
    deliver: impl FnOnce(Result<Done>),
) {
    if let Err(e) = cancel.check() {
        return deliver(Err(e));
    }
    let made = match gpus {
        Some(lease) => sb.create_with_gpus(lease),
        None => sb.instance(),
    };
    let inst = match made {
        Ok(i) => i,
        Err(e) => return deliver(Err(e)),
    };
    // A single step is a one-shot run (the instance's own cgroup, a fresh counter); after
    // a compile step the run gets its own cgroup so the report counts only the run.
    deliver(steps(&inst, job, cancel, job.compile.is_none()));
    let _ = sb.retire(inst);
}

/// Copies the job's files into `inst`, compiles and runs, fetches files. `one_shot`: the run
/// step is the instance's only program (it runs in the instance's own cgroup, and a timeout
/// kills the instance); otherwise it gets a cgroup of its own and the instance lives on (a
/// session's runs).
pub(crate) fn steps(inst: &Instance, job: &Job, cancel: &Cancel, one_shot: bool) -> Result<Done> {
    for (path, data, mode) in &job.files {
        inst.put_file(path, data, *mode)?;
    }
    let mut done = Done::default();
    if let Some(step) = &job.compile {
        let out = inst.exec(&command(step, job, cancel))?;
        let ok = out.status == Status::Ok;
        done.compile = Some(out);
        if !ok {
            return Ok(done);
        }
    }
    let cmd = command(&job.run, job, cancel)
        .stdin(Stdin::Bytes(job.stdin.clone()))
        .tty(job.tty);
    done.run = Some(inst.exec_inner(&cmd, one_shot)?);
    let mut budget = crate::defaults::MAX_FETCH;
    for path in &job.fetch {
        match inst.get_file(path, budget) {
            Ok(data) => {
                budget -= data.len() as u64;
                done.files.insert(path.clone(), data);
            }
            Err(Error::Path { reason, .. }) => {
                done.refused.insert(path.clone(), reason);
            }
            Err(e) => {
                done.refused.insert(path.clone(), e.to_string());
            }
        }
    }
    Ok(done)
}
