//! Sessions: instances that live across many runs (DESIGN.md §2). The registry (live
//! sessions, the memory they reserve, tombstones so that a session that ended answers 410 with
//! the reason), idle and lifetime expiry, and the native API under `/v1/sessions`. Maze's
//! session API (`maze`) uses the same registry.
//!
//! A session's runs are serialised (one at a time) and each takes a daemon slot like a
//! `/v1/run`; a run's timeout kills that run's processes (its own cgroup), while background
//! processes it started normally live on, within the session's limits, until the session ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::job::{self, Done, Job, Policy, Sandboxes};
use super::native::{self, LimitsIn, RunRequest};
use super::pool::Refused;
use super::{
    engine_error, error, in_slot, json, lease_gpus, read_body, read_json, Body, Ctx, Failed,
};
use crate::{Cancel, Error, Instance};

/// The daemon's limits on sessions.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Live sessions at most.
    pub max: usize,
    /// Memory the live sessions' limits may add up to, in bytes.
    pub memory: u64,
    /// Default idle timeout (no run or file operation for this long ends a session).
    pub idle: Duration,
    /// Default lifetime.
    pub lifetime: Duration,
    /// Largest idle timeout or lifetime a request may ask for.
    pub max_lifetime: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max: 256,
            memory: half_of_ram(),
            idle: Duration::from_secs(600),
            lifetime: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(86400),
        }
    }
}

/// Half of this host's memory (`MemTotal`), or 4 GiB when it cannot be read.
fn half_of_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024 / 2)
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Deleted,
    ExpiredIdle,
    ExpiredLifetime,
    Shutdown,
}

impl Ended {
    pub fn reason(self) -> &'static str {
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
pub struct Spec {
    pub policy: Policy,
    /// Environment of every run (a run's own `env` adds to it).
    pub env: Vec<(String, String)>,
    pub idle: Duration,
    pub lifetime: Duration,
    /// Which API created it: `native` or `maze`.
    pub api: &'static str,
}

/// One live session.
pub struct Session {
    pub id: String,
    pub spec: Spec,
    created: Instant,
    created_at: SystemTime,
    gpus: Vec<u32>,
    /// Held by the run in progress: a session's runs are serialised.
    serial: tokio::sync::Mutex<()>,
    live: Mutex<Live>,
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

/// A use of a session in progress: counts as activity until dropped.
struct InUse(Arc<Session>);

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
    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance (None: the session ended). Only on a blocking thread: the last reference
    /// destroys the instance.
    fn instance(&self) -> Option<Arc<Instance>> {
        self.lock().inst.clone()
    }

    /// Starts a use (None: the session ended).
    fn begin(self: &Arc<Self>) -> Option<InUse> {
        let mut l = self.lock();
        l.inst.as_ref()?;
        l.busy += 1;
        (l.last_used, l.last_used_at) = (Instant::now(), SystemTime::now());
        Some(InUse(self.clone()))
    }

    /// Ends the session: its run in progress is cancelled; returns the instance, whose last
    /// holder destroys it.
    fn end(&self) -> Option<Arc<Instance>> {
        let mut l = self.lock();
        if let Some(c) = l.current.take() {
            c.cancel();
        }
        l.inst.take()
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
    pub fn view(&self, usage: Option<crate::Usage>) -> serde_json::Value {
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
                "network": if p.loopback { "loopback" } else { "none" },
            },
            "seccomp": p.seccomp,
            "env": self.spec.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            "gpus": self.gpus,
            "runs": l.runs,
            "usage": usage,
        })
    }
}

/// What an id names.
pub enum Lookup {
    Live(Arc<Session>),
    Gone(Ended),
    Unknown,
}

/// Why a session could not be created.
pub enum Refusal {
    /// The daemon holds its maximum of sessions or of session memory (503).
    Full(String),
    Engine(Error),
}

/// Ended sessions remembered for 410 answers: at most this many, for at most `TOMBSTONE_TTL`.
const TOMBSTONES: usize = 4096;
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Registry {
    live: HashMap<String, Arc<Session>>,
    /// Sessions being created (they count against the maximum).
    pending: usize,
    /// Memory limits of the live and pending sessions, together.
    reserved: u64,
    gone: HashMap<String, Ended>,
    gone_order: VecDeque<(String, Instant)>,
}

/// Every session of the daemon.
pub struct Sessions {
    pub config: SessionConfig,
    reg: Mutex<Registry>,
    /// Sessions' sandboxes by policy (no warm pools: their instances are created on request).
    sandboxes: Sandboxes,
}

/// A reserved place for a session being created; released on drop unless the session was
/// registered.
struct Reservation<'a> {
    sessions: &'a Sessions,
    memory: u64,
    armed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut r = self.sessions.lock();
            r.pending -= 1;
            r.reserved -= self.memory;
        }
    }
}

impl Sessions {
    pub fn new(config: SessionConfig) -> Sessions {
        Sessions {
            config,
            reg: Mutex::new(Registry::default()),
            sandboxes: Sandboxes::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve(&self, memory: u64) -> Result<Reservation<'_>, String> {
        let mut r = self.lock();
        if r.live.len() + r.pending >= self.config.max {
            return Err(format!(
                "the daemon holds its maximum of {} sessions (--max-sessions); delete one or retry later",
                self.config.max
            ));
        }
        if r.reserved + memory > self.config.memory {
            return Err(format!(
                "the sessions' memory is spoken for: {} MiB of {} MiB (--session-memory-mb) are reserved, {} MiB more do not fit",
                r.reserved >> 20,
                self.config.memory >> 20,
                memory >> 20
            ));
        }
        r.pending += 1;
        r.reserved += memory;
        Ok(Reservation {
            sessions: self,
            memory,
            armed: true,
        })
    }

    pub fn lookup(&self, id: &str) -> Lookup {
        let r = self.lock();
        match (r.live.get(id), r.gone.get(id)) {
            (Some(s), _) => Lookup::Live(s.clone()),
            (None, Some(why)) => Lookup::Gone(*why),
            (None, None) => Lookup::Unknown,
        }
    }

    /// Removes a live session from the registry (remembering why) and ends it; returns its
    /// instance for the caller to drop on a blocking thread (None: it was not live).
    fn remove(&self, id: &str, why: Ended) -> Option<Arc<Instance>> {
        let s = {
            let mut r = self.lock();
            let s = r.live.remove(id)?;
            r.reserved -= s.spec.policy.memory;
            let now = Instant::now();
            while r.gone_order.len() >= TOMBSTONES
                || r.gone_order
                    .front()
                    .is_some_and(|(_, t)| now - *t > TOMBSTONE_TTL)
            {
                if let Some((old, _)) = r.gone_order.pop_front() {
                    r.gone.remove(&old);
                }
            }
            r.gone.insert(id.to_string(), why);
            r.gone_order.push_back((id.to_string(), now));
            s
        };
        s.end()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<Arc<Session>> = self.lock().live.values().cloned().collect();
        v.sort_by_key(|s| s.created);
        v
    }

    /// `(live sessions, reserved memory)`.
    pub fn figures(&self) -> (usize, u64) {
        let r = self.lock();
        (r.live.len(), r.reserved)
    }

    /// Ends every session whose idle timeout or lifetime has passed.
    fn reap(&self) -> Vec<(String, Ended, Option<Arc<Instance>>)> {
        let now = Instant::now();
        let expired: Vec<(String, Ended)> = self
            .lock()
            .live
            .values()
            .filter_map(|s| s.expired(now).map(|why| (s.id.clone(), why)))
            .collect();
        expired
            .into_iter()
            .map(|(id, why)| {
                let inst = self.remove(&id, why);
                (id, why, inst)
            })
            .collect()
    }

    /// The Prometheus text of the sessions' figures.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let (n, reserved) = self.figures();
        let _ = writeln!(out, "# HELP rsandbox_sessions Live sessions.\n# TYPE rsandbox_sessions gauge\nrsandbox_sessions {n}");
        let _ = writeln!(out, "# HELP rsandbox_sessions_max Live sessions allowed (--max-sessions).\n# TYPE rsandbox_sessions_max gauge\nrsandbox_sessions_max {}", self.config.max);
        let _ = writeln!(out, "# HELP rsandbox_session_memory_reserved_bytes Memory limits of the live sessions, together (of --session-memory-mb).\n# TYPE rsandbox_session_memory_reserved_bytes gauge\nrsandbox_session_memory_reserved_bytes {reserved}");
    }
}

/// A new session id: 128 random bits in hex.
fn new_id() -> Result<String, Error> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::Io {
            what: "reading",
            path: Some("/dev/urandom".into()),
            source: e,
        })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Drops instances on the blocking pool (a last reference destroys its instance, which waits
/// for processes to die and cgroups to go) and waits until that is done.
async fn destroy(instances: Vec<Arc<Instance>>) {
    if !instances.is_empty() {
        let _ = tokio::task::spawn_blocking(move || drop(instances)).await;
    }
}

/// Creates a session: reserves its place and memory, builds the policy's sandbox, takes its
/// GPUs (waiting up to the daemon's GPU wait) and creates the instance on the blocking pool.
pub async fn create(ctx: &Arc<Ctx>, spec: Spec) -> Result<Arc<Session>, Refusal> {
    let sessions = &ctx.sessions;
    let mut reservation = sessions
        .reserve(spec.policy.memory)
        .map_err(Refusal::Full)?;
    let c = ctx.clone();
    let policy = spec.policy.clone();
    let sb = tokio::task::spawn_blocking(move || c.sessions.sandboxes.get(&policy))
        .await
        .unwrap_or(Err(Error::Gone))
        .map_err(Refusal::Engine)?;
    let lease = lease_gpus(&sb, ctx.config.max.gpu_wait)
        .await
        .map_err(Refusal::Engine)?;
    let inst = tokio::task::spawn_blocking(move || match lease {
        Some(l) => sb.create_with_gpus(l),
        None => sb.create(),
    })
    .await
    .unwrap_or(Err(Error::Gone))
    .map_err(Refusal::Engine)?;
    let id = new_id().map_err(Refusal::Engine)?;
    let now = (Instant::now(), SystemTime::now());
    let s = Arc::new(Session {
        id: id.clone(),
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
    });
    let mut r = sessions.lock();
    r.pending -= 1;
    r.live.insert(id, s.clone());
    reservation.armed = false;
    Ok(s)
}

/// Ends a session by id (`why`), destroying its instance before returning unless a run still
/// holds it (that run is cancelled and destroys it as it ends). False: it was not live.
pub async fn end(ctx: &Ctx, id: &str, why: Ended) -> bool {
    match ctx.sessions.lookup(id) {
        Lookup::Live(_) => {
            let inst = ctx.sessions.remove(id, why);
            destroy(inst.into_iter().collect()).await;
            true
        }
        _ => false,
    }
}

/// Runs `job` in the session: after the session's previous run, in a daemon slot. `None`:
/// the session ended before the run started.
pub async fn run(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    mut job: Job,
    arrived: Instant,
) -> Option<(Result<Done, Failed>, Duration)> {
    let _serial = s.serial.lock().await;
    let in_use = s.begin()?;
    let mut env = s.spec.env.clone();
    env.append(&mut job.env);
    job.env = env;
    let session = s.clone();
    let r = in_slot(ctx, arrived, move |cancel, tx| {
        let inst = {
            let mut l = session.lock();
            let Some(inst) = l.inst.clone() else {
                let _ = tx.send(Err(Error::Gone));
                return;
            };
            l.current = Some(cancel.clone());
            inst
        };
        let r = job::steps(&inst, &job, cancel, false);
        {
            let mut l = session.lock();
            l.current = None;
            l.runs += 1;
        }
        let _ = tx.send(r);
        // When the session ended meanwhile, this was the last reference: the instance is
        // destroyed here, after the answer.
        drop(inst);
    })
    .await;
    drop(in_use);
    Some(r)
}

/// Runs `f` with the session's instance on the blocking pool, as activity of the session.
/// None: the session ended.
pub async fn with_instance<T: Send + 'static>(
    s: &Arc<Session>,
    f: impl FnOnce(&Instance) -> crate::Result<T> + Send + 'static,
) -> Option<crate::Result<T>> {
    let in_use = s.begin()?;
    let session = s.clone();
    let r = tokio::task::spawn_blocking(move || match session.instance() {
        Some(inst) => f(&inst),
        None => Err(Error::Gone),
    })
    .await
    .unwrap_or(Err(Error::Gone));
    drop(in_use);
    Some(r)
}

/// Ends expired sessions, every quarter second, until `stop`.
pub async fn reaper(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ended = ctx.sessions.reap();
        for (id, why, _) in &ended {
            eprintln!("rsandbox serve: session {id} ended: {}", why.reason());
        }
        destroy(ended.into_iter().filter_map(|(_, _, i)| i).collect()).await;
    }
}

/// Shutdown: ends every session and destroys its instance.
pub async fn close_all(ctx: &Ctx) {
    let ids: Vec<String> = ctx.sessions.all().iter().map(|s| s.id.clone()).collect();
    let insts = ids
        .iter()
        .filter_map(|id| ctx.sessions.remove(id, Ended::Shutdown))
        .collect();
    destroy(insts).await;
}

// ---- The native API ----

/// `POST /v1/sessions`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CreateRequest {
    pub limits: LimitsIn,
    pub env: BTreeMap<String, String>,
    /// `default` or `strict`.
    pub seccomp: Option<String>,
    /// Seconds without a run or file operation after which the session ends.
    pub idle_timeout: Option<f64>,
    /// Seconds after which the session ends, busy or not.
    pub lifetime: Option<f64>,
}

/// Checks a create request against the daemon's maxima; `Err` is the 422 message.
pub fn spec(r: CreateRequest, ctx: &Ctx) -> Result<Spec, String> {
    if r.limits.timeout.is_some()
        || r.limits.compile_timeout.is_some()
        || r.limits.cpu_time.is_some()
    {
        return Err(
            "limits.timeout, compile_timeout and cpu_time belong to each run \
                    (POST /v1/sessions/{id}/run); a session ends by idle_timeout or lifetime"
                .into(),
        );
    }
    native::check_env(&r.env)?;
    let c = &ctx.sessions.config;
    let idle = native::secs("idle_timeout", r.idle_timeout, c.idle, c.max_lifetime)?;
    let lifetime = native::secs("lifetime", r.lifetime, c.lifetime, c.max_lifetime)?;
    Ok(Spec {
        policy: native::policy(&r.limits, r.seccomp.as_deref(), &ctx.config.max)?,
        env: r.env.into_iter().collect(),
        idle,
        lifetime,
        api: "native",
    })
}

/// A run request in a session: `/v1/run`'s, less what the session fixed.
fn session_job(r: RunRequest, ctx: &Ctx) -> Result<Job, String> {
    let l = &r.limits;
    if l.cpus.is_some()
        || l.memory_mb.is_some()
        || l.pids.is_some()
        || l.network.is_some()
        || l.cpu_time.is_some()
        || l.gpus.is_some()
        || l.gpu_devices.is_some()
        || l.gpu_share.is_some()
        || r.seccomp.is_some()
    {
        return Err(
            "a session's limits, network, GPUs and seccomp profile are set when it is \
                    created; a run takes only limits.timeout and limits.compile_timeout"
                .into(),
        );
    }
    native::to_session_job(r, &ctx.config.max)
}

/// The answer when a session's instance could not be used: 404/410 when the session is not
/// live (any more), else 500 (its instance died under it).
fn ended(ctx: &Ctx, id: &str) -> Response<Body> {
    match ctx.sessions.lookup(id) {
        Lookup::Live(_) => engine_error(&Error::Gone),
        other => not_live(id, &other),
    }
}

/// 404 for an id never seen (or forgotten), 410 with the reason for one that ended.
fn not_live(id: &str, l: &Lookup) -> Response<Body> {
    match l {
        Lookup::Gone(why) => json(
            StatusCode::GONE,
            &json!({"error": {"status": 410, "stage": "session", "reason": why.reason(),
                "message": format!("session {id} has ended ({})", why.reason())}}),
        ),
        _ => error(StatusCode::NOT_FOUND, "session", format!("no session {id}")),
    }
}

/// Decodes `%XX` escapes of a URL path or query value (`+` stays as it is).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in the request's query string, decoded.
fn query<'a>(req: &'a Request<Incoming>, name: &str) -> Option<Result<String, &'a str>> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v).ok_or(v))
    })
}

/// An error of a file operation: a missing file is 404, other refusals 422.
fn file_error(e: &Error) -> Response<Body> {
    match e {
        Error::Path { reason, .. } if reason == crate::instance::NO_SUCH_FILE => {
            error(StatusCode::NOT_FOUND, "files", e.to_string())
        }
        e => engine_error(e),
    }
}

/// Everything under `/v1/sessions`; `rest` is the path after it.
pub async fn route(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    rest: &str,
    arrived: Instant,
) -> Response<Body> {
    let method = req.method().clone();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return match method {
            Method::GET => list(&ctx),
            Method::POST => create_native(ctx, req).await,
            m => method_not_allowed(&m, "/v1/sessions"),
        };
    }
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let s = match ctx.sessions.lookup(id) {
        Lookup::Live(s) => s,
        other => return not_live(id, &other),
    };
    match (method, sub) {
        (Method::GET, "") => {
            let session = s.clone();
            let usage = tokio::task::spawn_blocking(move || {
                session.instance().and_then(|i| i.usage().ok())
            })
            .await
            .ok()
            .flatten();
            json(StatusCode::OK, &s.view(usage))
        }
        (Method::DELETE, "") => {
            end(&ctx, id, Ended::Deleted).await;
            json(StatusCode::OK, &json!({"id": id, "state": "deleted"}))
        }
        (Method::POST, "run") => run_native(ctx.clone(), &s, req, arrived).await,
        (Method::GET, "files") => {
            let dir = match query(&req, "dir") {
                None => String::new(),
                Some(Ok(d)) => d,
                Some(Err(raw)) => {
                    return super::request_error(format!("dir: {raw:?} is not valid"))
                }
            };
            match with_instance(&s, move |i| i.list_dir(&dir)).await {
                Some(Ok(entries)) => json(StatusCode::OK, &json!({"entries": entries})),
                Some(Err(e @ (Error::Path { .. } | Error::Invalid { .. }))) => file_error(&e),
                Some(Err(_)) | None => ended(&ctx, id),
            }
        }
        (m, sub) if sub.starts_with("files/") => {
            let Some(path) = percent_decode(&sub["files/".len()..]) else {
                return super::request_error("the file path is not valid percent-encoded UTF-8");
            };
            file_op(ctx.clone(), &s, m, path, req).await
        }
        (m, "" | "run" | "files") => method_not_allowed(&m, req.uri().path()),
        _ => error(
            StatusCode::NOT_FOUND,
            "request",
            format!("no endpoint {} (see api/openapi.yaml)", req.uri().path()),
        ),
    }
}

fn method_not_allowed(m: &Method, path: &str) -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "request",
        format!("{m} is not allowed on {path}"),
    )
}

fn list(ctx: &Ctx) -> Response<Body> {
    let (n, reserved) = ctx.sessions.figures();
    let c = &ctx.sessions.config;
    json(
        StatusCode::OK,
        &json!({
            "sessions": ctx.sessions.all().iter().map(|s| s.view(None)).collect::<Vec<_>>(),
            "count": n,
            "max": c.max,
            "memory_reserved_mb": reserved >> 20,
            "memory_limit_mb": c.memory >> 20,
        }),
    )
}

/// 503 with Retry-After: no room for another session.
pub fn full(message: &str) -> Response<Body> {
    super::unavailable("sessions", message)
}

async fn create_native(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let spec = match read_json(&ctx, req, |r: CreateRequest| spec(r, &ctx)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match create(&ctx, spec).await {
        Ok(s) => json(StatusCode::CREATED, &s.view(None)),
        Err(Refusal::Full(m)) => full(&m),
        Err(Refusal::Engine(e)) => engine_error(&e),
    }
}

async fn run_native(
    ctx: Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let job = match read_json(&ctx, req, |r: RunRequest| session_job(r, &ctx)).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    match run(&ctx, s, job, arrived).await {
        Some((Ok(done), queued)) => match native::response(done, queued) {
            Some(r) => json(StatusCode::OK, &r),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "run", "no report"),
        },
        Some((Err(Failed::Refused(Refused::QueueFull)), _)) => {
            super::unavailable("queue", "the run queue is full")
        }
        // Cancelled: the session ended, or the daemon is shutting down.
        Some((Err(Failed::Refused(Refused::Closed)), _)) => match ctx.sessions.lookup(&s.id) {
            Lookup::Live(_) => super::unavailable("queue", "the daemon is shutting down"),
            other => not_live(&s.id, &other),
        },
        Some((Err(Failed::Engine(Error::Gone)), _)) | None => ended(&ctx, &s.id),
        Some((Err(Failed::Engine(e)), _)) => engine_error(&e),
    }
}

/// `PUT`, `GET` and `DELETE` of `/v1/sessions/{id}/files/{path}`.
async fn file_op(
    ctx: Arc<Ctx>,
    s: &Arc<Session>,
    m: Method,
    path: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let max = ctx.config.max_body as u64;
    let r = match m {
        Method::PUT => {
            let mode = match query(&req, "mode") {
                None => 0o644,
                Some(Ok(v)) => match u32::from_str_radix(&v, 8) {
                    Ok(m) if m <= 0o7777 => m,
                    _ => {
                        return super::request_error(format!(
                            "mode: {v:?} is not an octal file mode"
                        ))
                    }
                },
                Some(Err(v)) => return super::request_error(format!("mode: {v:?} is not valid")),
            };
            let body = match read_body(req, ctx.config.max_body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let size = body.len();
            with_instance(s, move |i| {
                i.put_file(&path, &body, mode)?;
                Ok(json(
                    StatusCode::OK,
                    &json!({"path": path, "size": size, "mode": mode}),
                ))
            })
            .await
        }
        Method::GET => {
            with_instance(s, move |i| {
                let data = i.get_file(&path, max)?;
                let mut r = Response::new(Body::new(data.into()));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/octet-stream"),
                );
                Ok(r)
            })
            .await
        }
        Method::DELETE => {
            with_instance(s, move |i| {
                i.remove_file(&path)?;
                Ok(json(
                    StatusCode::OK,
                    &json!({"path": path, "state": "deleted"}),
                ))
            })
            .await
        }
        m => return method_not_allowed(&m, "/v1/sessions/{id}/files/{path}"),
    };
    match r {
        Some(Ok(resp)) => resp,
        Some(Err(Error::Gone)) | None => ended(&ctx, &s.id),
        Some(Err(e)) => file_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b/c%2Fd").as_deref(), Some("a b/c/d"));
        assert_eq!(percent_decode("..%2f..").as_deref(), Some("../.."));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
