//! One request's work as plain data (policy, files, steps, files to fetch) and its execution on
//! a blocking thread: create an instance, copy files in, compile and run, fetch files, hand the
//! result over, then tear down (after the answer has gone, so teardown is off the request path).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::outcome::{Outcome, Status};
use crate::seccomp::Profile;
use crate::{Cancel, Command, Error, Instance, Net, Result, Sandbox, Stdin};

/// The sandbox settings a request chooses; instances with equal keys share one `Sandbox`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// CPUs in hundredths.
    pub cpus_centi: u32,
    pub memory: u64,
    pub pids: u64,
    pub loopback: bool,
    /// `default` or `strict`.
    pub seccomp: &'static str,
    pub cpu_time_ms: Option<u64>,
}

/// A program to start.
#[derive(Clone, Debug)]
pub enum Program {
    Argv(Vec<String>),
    /// A script in the work dir run by the sandbox's Python.
    PythonScript(String),
}

#[derive(Clone, Debug)]
pub struct Step {
    pub program: Program,
    pub timeout: Duration,
}

/// Everything one request asks for.
#[derive(Clone, Debug)]
pub struct Job {
    pub policy: Policy,
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub compile: Option<Step>,
    pub run: Step,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub fetch: Vec<String>,
}

/// What came of a job.
#[derive(Debug, Default)]
pub struct Done {
    pub compile: Option<Outcome>,
    /// `None` when the compile step failed.
    pub run: Option<Outcome>,
    pub files: BTreeMap<String, Vec<u8>>,
    /// Files that were asked for and not returned, with the reason.
    pub refused: BTreeMap<String, String>,
}

impl Done {
    /// The fetched files, base64 (how both APIs return them).
    pub fn files_b64(&self) -> BTreeMap<String, String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), b64.encode(v)))
            .collect()
    }
}

/// Sandboxes by policy, built on first use (building compiles the seccomp filter and checks
/// the template: not per request).
#[derive(Default)]
pub struct Sandboxes {
    map: Mutex<HashMap<Policy, Sandbox>>,
}

impl Sandboxes {
    /// Policies kept at most; past that the cache starts over.
    const KEEP: usize = 64;

    pub fn get(&self, p: &Policy) -> Result<Sandbox> {
        if let Some(sb) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(p) {
            return Ok(sb.clone());
        }
        let mut b = Sandbox::builder()
            .cpus(p.cpus_centi as f64 / 100.0)
            .memory(p.memory)
            .pids(p.pids)
            .net(if p.loopback { Net::Loopback } else { Net::None })
            .seccomp(match p.seccomp {
                "strict" => Profile::Strict,
                _ => Profile::Default,
            });
        if let Some(ms) = p.cpu_time_ms {
            b = b.cpu_time(Duration::from_millis(ms));
        }
        let sb = b.build()?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::KEEP {
            map.clear();
        }
        map.insert(p.clone(), sb.clone());
        Ok(sb)
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
    cmd.timeout(step.timeout).cancel_on(cancel)
}

/// Ready instances by policy, and the policies kept warm, least recently used first.
type Ready = (HashMap<Policy, Vec<Instance>>, Vec<Policy>);

/// Instances created ahead of time, per policy, by a warmer thread: a request takes a ready
/// one, so creating it (mounts, cgroups, and on cgroup v1 the attach, which waits for an RCU
/// grace period when attaches are not frequent) is off its path. Only the last few policies
/// seen are kept warm.
pub struct Warm {
    ready: Mutex<Ready>,
    want: Mutex<Option<std::sync::mpsc::Sender<Policy>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Requests that found a ready instance, and that did not.
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    /// Instances kept ready per policy.
    depth: usize,
}

impl Warm {
    /// Policies kept warm at most.
    const POLICIES: usize = 4;

    /// Starts the warmer thread (instances are made with `sandboxes`).
    pub fn start(depth: usize, sandboxes: std::sync::Arc<Sandboxes>) -> std::sync::Arc<Warm> {
        let (tx, rx) = std::sync::mpsc::channel::<Policy>();
        let warm = std::sync::Arc::new(Warm {
            ready: Mutex::new((HashMap::new(), Vec::new())),
            want: Mutex::new(Some(tx)),
            thread: Mutex::new(None),
            hits: Default::default(),
            misses: Default::default(),
            depth,
        });
        let w = std::sync::Arc::downgrade(&warm);
        // A dedicated thread for the process's life: instances are never tied to a thread
        // that may exit, and creating them never holds a run slot.
        let thread = std::thread::Builder::new()
            .name("rsandbox-warm".into())
            .spawn(move || {
                while let Ok(p) = rx.recv() {
                    let Some(warm) = w.upgrade() else { return };
                    while warm.missing(&p) {
                        let Ok(inst) = sandboxes.get(&p).and_then(|sb| sb.create()) else {
                            break;
                        };
                        if !warm.put(&p, inst) {
                            break;
                        }
                    }
                }
            });
        *warm.thread.lock().unwrap_or_else(|e| e.into_inner()) = thread.ok();
        warm
    }

    fn missing(&self, p: &Policy) -> bool {
        let g = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        g.1.contains(p) && g.0.get(p).map_or(0, |v| v.len()) < self.depth
    }

    /// Adds a ready instance; false (and the instance destroyed) once closed or unwanted.
    fn put(&self, p: &Policy, inst: Instance) -> bool {
        let mut g = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .want
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            || !g.1.contains(p)
        {
            drop(g);
            let _ = inst.destroy();
            return false;
        }
        g.0.entry(p.clone()).or_default().push(inst);
        true
    }

    /// A ready instance for `p`, if there is one; asks the warmer to make up for it.
    pub fn take(&self, p: &Policy) -> Option<Instance> {
        let (inst, evicted) = {
            let mut g = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            let (ready, order) = &mut *g;
            order.retain(|q| q != p);
            order.push(p.clone());
            let mut evicted = Vec::new();
            while order.len() > Self::POLICIES {
                let old = order.remove(0);
                evicted.extend(ready.remove(&old).unwrap_or_default());
            }
            (ready.get_mut(p).and_then(|v| v.pop()), evicted)
        };
        for i in evicted {
            let _ = i.destroy();
        }
        if let Some(tx) = &*self.want.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(p.clone());
        }
        let counter = if inst.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inst
    }

    /// The Prometheus text of the pool's figures.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let ready: usize = self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .values()
            .map(|v| v.len())
            .sum();
        let _ = writeln!(out, "# HELP rsandbox_warm_instances Instances created ahead of time, ready for a request.\n# TYPE rsandbox_warm_instances gauge\nrsandbox_warm_instances {ready}");
        let _ = writeln!(out, "# HELP rsandbox_warm_total Runs by whether a ready instance was there.\n# TYPE rsandbox_warm_total counter\nrsandbox_warm_total{{result=\"hit\"}} {}\nrsandbox_warm_total{{result=\"miss\"}} {}", self.hits.load(Relaxed), self.misses.load(Relaxed));
    }

    /// Stops warming (waiting for an instance being made) and destroys every ready instance.
    pub fn close(&self) {
        self.want.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        let all: Vec<Instance> = {
            let mut g = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            g.1.clear();
            g.0.drain().flat_map(|(_, v)| v).collect()
        };
        for i in all {
            let _ = i.destroy();
        }
    }
}

/// Runs `job` (blocking) in `inst`, a ready instance, or a new one made from `sb`. `deliver`
/// gets the result as soon as it is known; the instance is destroyed after that.
pub fn execute(
    sb: &Sandbox,
    inst: Option<Instance>,
    job: &Job,
    cancel: &Cancel,
    deliver: impl FnOnce(Result<Done>),
) {
    if let Err(e) = cancel.check() {
        return deliver(Err(e));
    }
    let inst = match inst.map_or_else(|| sb.create(), Ok) {
        Ok(i) => i,
        Err(e) => return deliver(Err(e)),
    };
    let result = (|| {
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
        let cmd = command(&job.run, job, cancel).stdin(Stdin::Bytes(job.stdin.clone()));
        // A single step is a one-shot run (the instance's own cgroup, a fresh counter); after
        // a compile step the run gets its own cgroup so the report counts only the run.
        let out = if job.compile.is_some() {
            inst.exec(&cmd)?
        } else {
            inst.exec_inner(&cmd, true)?
        };
        done.run = Some(out);
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
    })();
    deliver(result);
    let _ = inst.destroy();
}
