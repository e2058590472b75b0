//! Sessions: instances that live across many runs (DESIGN.md §2). One session here (what it
//! was created with, its instance, its activity); the registry of every session (`registry`),
//! their creation, runs and expiry (`lifecycle`), and the native API under `/v1/sessions`
//! (`api`). Maze's session API (`maze`) uses the same registry.
//!
//! A session's runs are serialised (one at a time) and each takes a daemon slot like a
//! `/v1/run`; a run's timeout kills that run's processes (its own cgroup), while background
//! processes it started normally live on, within the session's limits, until the session ends.

pub(crate) mod api;
pub(crate) mod contexts;
mod lifecycle;
mod registry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::job::Policy;
use crate::{Cancel, Instance, Usage};

pub(crate) use contexts::default_context;
pub(crate) use lifecycle::{close_all, create, end, reaper, run, usage, with_instance};
pub(crate) use registry::{Lookup, Refusal, Sessions};

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Deleted,
    ExpiredIdle,
    ExpiredLifetime,
    Shutdown,
}

impl Ended {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Ended::Deleted => "deleted",
            Ended::ExpiredIdle => "expired_idle",
            Ended::ExpiredLifetime => "expired_lifetime",
            Ended::Shutdown => "shutdown",
        }
    }
}

/// What a session was created with.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) policy: Policy,
    /// Environment of every run (a run's own `env` adds to it).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) idle: Duration,
    pub(crate) lifetime: Duration,
    /// Which API created it: `native`, `maze`, `jupyter`, `microsandbox`, `ai-computer` or
    /// `e2b`.
    pub(crate) api: &'static str,
    /// The name a compatible API knows it by (microsandbox's namespace and name, E2B's
    /// sandbox id), unique among live sessions of that API.
    pub(crate) name: Option<String>,
}

/// One live session.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) spec: Spec,
    created: Instant,
    created_at: SystemTime,
    gpus: Vec<u32>,
    /// Held by the run in progress: a session's runs are serialised.
    serial: tokio::sync::Mutex<()>,
    live: Mutex<Live>,
    /// Its stateful contexts (they hold the instance: they go when the session ends).
    contexts: Mutex<contexts::Contexts>,
}

struct Live {
    /// None once the session ended (the instance goes with the last holder of this).
    inst: Option<Arc<Instance>>,
    /// The run in progress, to cancel when the session ends.
    current: Option<Cancel>,
    last_used: Instant,
    last_used_at: SystemTime,
    /// Runs and file operations in progress (an idle timeout does not end a busy session).
    busy: usize,
    runs: u64,
}

/// What an ended session leaves to destroy: its contexts (their interpreters), then its
/// instance (fields drop in this order).
#[allow(dead_code)] // held only to be dropped, in this order
pub(crate) struct Remains {
    contexts: Vec<Arc<crate::Context>>,
    inst: Option<Arc<Instance>>,
}

/// A use of a session in progress: counts as activity until dropped.
pub(crate) struct InUse(Arc<Session>);

impl Drop for InUse {
    fn drop(&mut self) {
        let mut l = self.0.lock();
        l.busy -= 1;
        (l.last_used, l.last_used_at) = (Instant::now(), SystemTime::now());
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Session {
    /// A session of `spec` around its new instance, idle since now.
    fn new(id: String, spec: Spec, inst: Instance) -> Session {
        let now = (Instant::now(), SystemTime::now());
        Session {
            id,
            spec,
            created: now.0,
            created_at: now.1,
            gpus: inst.gpus().to_vec(),
            serial: tokio::sync::Mutex::new(()),
            live: Mutex::new(Live {
                inst: Some(Arc::new(inst)),
                current: None,
                last_used: now.0,
                last_used_at: now.1,
                busy: 0,
                runs: 0,
            }),
            contexts: Mutex::new(contexts::Contexts::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance (None: the session ended). Only on a blocking thread: the last reference
    /// destroys the instance.
    fn instance(&self) -> Option<Arc<Instance>> {
        self.lock().inst.clone()
    }

    fn contexts(&self) -> std::sync::MutexGuard<'_, contexts::Contexts> {
        self.contexts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a use (None: the session ended); a kernel's open websocket holds one, so the
    /// idle timeout does not end a kernel a client is connected to.
    pub(crate) fn begin(self: &Arc<Self>) -> Option<InUse> {
        let mut l = self.lock();
        l.inst.as_ref()?;
        l.busy += 1;
        (l.last_used, l.last_used_at) = (Instant::now(), SystemTime::now());
        Some(InUse(self.clone()))
    }

    /// Ends the session: its run in progress is cancelled; returns its contexts and instance,
    /// whose last holder destroys them (on a blocking thread: it waits for processes to die).
    fn end(&self) -> Remains {
        let mut l = self.lock();
        if let Some(c) = l.current.take() {
            c.cancel();
        }
        let contexts = self.contexts().close();
        Remains {
            contexts,
            inst: l.inst.take(),
        }
    }

    /// How long ago it was created.
    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Why the session should end now, if it should.
    fn expired(&self, now: Instant) -> Option<Ended> {
        let l = self.lock();
        if now.duration_since(self.created) >= self.spec.lifetime {
            Some(Ended::ExpiredLifetime)
        } else if l.busy == 0 && now.duration_since(l.last_used) >= self.spec.idle {
            Some(Ended::ExpiredIdle)
        } else {
            None
        }
    }

    /// The session as the API shows it; `usage` when it was read.
    pub(crate) fn view(&self, usage: Option<Usage>) -> serde_json::Value {
        let l = self.lock();
        let p = &self.spec.policy;
        let idle_end = l.last_used_at + self.spec.idle;
        let life_end = self.created_at + self.spec.lifetime;
        json!({
            "id": self.id,
            "api": self.spec.api,
            "state": if l.current.is_some() { "running" } else { "idle" },
            "created_at": unix(self.created_at),
            "last_used_at": unix(l.last_used_at),
            "expires_at": unix(if l.busy > 0 { life_end } else { idle_end.min(life_end) }),
            "idle_timeout": self.spec.idle.as_secs_f64(),
            "lifetime": self.spec.lifetime.as_secs_f64(),
            "limits": {
                "cpus": p.cpus_centi as f64 / 100.0,
                "memory_mb": p.memory >> 20,
                "pids": p.pids,
                "network": p.net.name(),
                "allowed_hosts": match &p.net {
                    crate::Net::Allowlist(rules) => serde_json::json!(rules),
                    _ => serde_json::Value::Null,
                },
            },
            "seccomp": p.seccomp,
            "env": self.spec.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            "gpus": self.gpus,
            "runs": l.runs,
            "usage": usage,
        })
    }
}
