//! `rsandbox serve`: HTTP/1.1 + JSON on a Unix socket (and optionally TCP), in mini-redis's
//! shape: `serve(endpoints, config, shutdown)` here, a thin binary around it.
//!
//! - `job`: a request's work as data, run on tokio's blocking pool (the engine forks with
//!   `clone3` and raw syscalls only in the child, so a multi-threaded caller is safe).
//! - `pool`: the concurrency limit (a semaphore, default one slot per core), the bounded queue
//!   in front of it (full: 503 + Retry-After), runs in flight, metrics.
//! - `native`: `POST /v1/run`; `compat`: SandboxFusion's `POST /run_code`, `GET /v1/ping`;
//!   `lang`: the one table of languages; `listen`: sockets, socket activation, access.
//!
//! A client that disconnects cancels its run: hyper drops the request's future, whose guard
//! cancels the run's `Cancel`, which the supervisor polls beside the program's pipes. SIGTERM
//! stops accepting, lets runs in flight finish for the grace period, then cancels the rest.

pub mod compat;
pub mod job;
pub mod lang;
pub mod listen;
mod maze;
pub mod native;
pub mod pool;
mod session;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch};

pub use listen::{Access, Endpoint};
pub use session::SessionConfig;

use crate::{Cancel, Error};
use job::{Done, Job, Sandboxes};
use pool::{Pool, Refused};

/// The largest limits a request may ask for.
#[derive(Clone, Debug)]
pub struct Maxima {
    pub timeout: Duration,
    /// Bytes.
    pub memory: u64,
    pub pids: u64,
    pub cpus: f64,
    /// How long a request waits for GPUs held by other runs.
    pub gpu_wait: Duration,
}

impl Default for Maxima {
    fn default() -> Self {
        Maxima {
            timeout: crate::defaults::MAX_TIMEOUT,
            memory: crate::defaults::MAX_MEMORY,
            pids: crate::defaults::MAX_PIDS,
            cpus: cores() as f64,
            gpu_wait: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
impl Maxima {
    /// 60 s, 1 GiB, 100 pids, 2 CPUs.
    pub(crate) fn for_tests() -> Maxima {
        Maxima {
            timeout: Duration::from_secs(60),
            memory: 1 << 30,
            pids: 100,
            cpus: 2.0,
            gpu_wait: Duration::from_secs(5),
        }
    }
}

/// This host's CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The daemon's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Runs at once.
    pub slots: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    pub max_body: usize,
    /// How long SIGTERM lets runs in flight finish.
    pub grace: Duration,
    pub max: Maxima,
    /// TCP clients must present this bearer token (None: TCP without authentication).
    pub token: Option<String>,
    pub access: Access,
    pub sessions: SessionConfig,
}

impl Default for Config {
    fn default() -> Self {
        let slots = cores();
        Config {
            slots,
            queue: slots * crate::defaults::QUEUE_PER_SLOT,
            max_body: crate::defaults::MAX_BODY,
            grace: crate::defaults::GRACE,
            max: Maxima::default(),
            token: None,
            access: Access {
                owner: crate::sys::ids().0,
                group: None,
            },
            sessions: SessionConfig::default(),
        }
    }
}

/// What every connection shares.
struct Ctx {
    config: Config,
    pool: Pool,
    sandboxes: Arc<Sandboxes>,
    sessions: session::Sessions,
    started: Instant,
    /// One clone per live connection (its strong count tells how many are open).
    conns: Arc<()>,
}

type Body = Full<Bytes>;

fn json<T: serde::Serialize>(code: StatusCode, v: &T) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).expect("serializable"),
    )));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": {"status": N, "stage": ..., "message": ...}}`.
fn error(code: StatusCode, stage: &str, message: impl Into<String>) -> Response<Body> {
    json(
        code,
        &serde_json::json!({"error": {"status": code.as_u16(), "stage": stage, "message": message.into()}}),
    )
}

/// FastAPI's shape for a malformed request, which SandboxFusion clients know.
fn unprocessable(message: impl Into<String>) -> Response<Body> {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({"detail": [{"loc": ["body"], "msg": message.into(), "type": "value_error"}]}),
    )
}

fn busy(message: &str) -> Response<Body> {
    unavailable("queue", message)
}

/// 503 with `Retry-After: 1`.
fn unavailable(stage: &str, message: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, stage, message);
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// Where a connection came from, as far as access checks go.
#[derive(Clone, Copy)]
enum Peer {
    Unix { allowed: bool, uid: u32 },
    Tcp,
}

/// Cancels a run if the request's future is dropped before the answer (client gone).
struct CancelOnDrop<'a> {
    cancel: Cancel,
    pool: &'a Pool,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
            self.pool.record("cancelled", None, None);
        }
    }
}

/// Why a job produced no `Done`.
enum Failed {
    Refused(Refused),
    Engine(Error),
}

/// Waits (without a thread) until `sb`'s GPU pool can lease what `sb` asks for: a request
/// for GPUs that exist but are held waits here, in the queue, for up to `max`. Dropping the
/// future (client gone) ends the wait.
async fn lease_gpus(sb: &crate::Sandbox, max: Duration) -> Result<Option<crate::GpuLease>, Error> {
    let Some(pool) = sb.gpu_pool() else {
        return Ok(None);
    };
    let req = sb.gpu_request();
    let start = Instant::now();
    loop {
        match pool.try_allocate(&req) {
            Ok(lease) => return Ok(Some(lease)),
            Err(e) if e.is_retryable() && start.elapsed() < max => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts a request dropped while it waits for a slot or GPUs (client gone) as cancelled.
struct Waiting<'a>(&'a Pool, bool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.record("cancelled", None, None);
        }
    }
}

/// Queues a job, runs it on the blocking pool, and waits for its result. Dropping the
/// returned future cancels the job, queued or running.
async fn run_job(ctx: &Arc<Ctx>, job: Job, arrived: Instant) -> (Result<Done, Failed>, Duration) {
    let mut waiting = Waiting(&ctx.pool, true);
    // The policy's sandbox (built once, then cached), and its GPUs when it asks for some.
    let c = ctx.clone();
    let policy = job.policy.clone();
    let built = tokio::task::spawn_blocking(move || c.sandboxes.get(&policy))
        .await
        .unwrap_or(Err(Error::Gone));
    let leased = match &built {
        Ok(sb) => lease_gpus(sb, ctx.config.max.gpu_wait).await,
        Err(_) => Ok(None),
    };
    waiting.1 = false;
    let (sb, gpus) = match (built, leased) {
        (Ok(sb), Ok(g)) => (sb, g),
        (Err(e), _) | (_, Err(e)) => {
            ctx.pool.record("error", None, None);
            return (Err(Failed::Engine(e)), arrived.elapsed());
        }
    };
    in_slot(ctx, arrived, move |cancel, tx| {
        job::execute(&sb, gpus, &job, cancel, |r| {
            let _ = tx.send(r);
        })
    })
    .await
}

/// Waits for a slot (a full queue refuses), then runs `work` on the blocking pool with the
/// run's `Cancel` and where to send its result, and waits for that result; the slot is held
/// until `work` returns (teardown after the answer included). Dropping the returned future
/// leaves the queue, or cancels the work once it runs. Counts the outcome for `/metrics`.
async fn in_slot<W>(ctx: &Arc<Ctx>, arrived: Instant, work: W) -> (Result<Done, Failed>, Duration)
where
    W: FnOnce(&Cancel, oneshot::Sender<Result<Done, Error>>) + Send + 'static,
{
    let mut waiting = Waiting(&ctx.pool, true);
    let acquired = ctx.pool.acquire().await;
    waiting.1 = false;
    let slot = match acquired {
        Ok(s) => s,
        Err(r) => {
            ctx.pool.record("rejected", None, None);
            return (Err(Failed::Refused(r)), arrived.elapsed());
        }
    };
    let queued = arrived.elapsed();
    let cancel = match Cancel::new() {
        Ok(c) => c,
        Err(e) => return (Err(Failed::Engine(e)), queued),
    };
    let mut guard = CancelOnDrop {
        cancel: cancel.clone(),
        pool: &ctx.pool,
        armed: true,
    };
    let (tx, rx) = oneshot::channel();
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let id = c.pool.started(&cancel);
        work(&cancel, tx);
        c.pool.finished(id);
    });
    let r = rx.await.unwrap_or(Err(Error::Gone));
    guard.armed = false;
    let r = r.map_err(|e| match e {
        Error::Cancelled => Failed::Refused(Refused::Closed),
        e => Failed::Engine(e),
    });
    let status = match &r {
        Ok(d) => d
            .run
            .as_ref()
            .or(d.compile.as_ref())
            .map(|o| status_name(o.status))
            .unwrap_or("error"),
        Err(Failed::Refused(_)) => "cancelled",
        Err(Failed::Engine(_)) => "error",
    };
    ctx.pool
        .record(status, Some(arrived.elapsed()), Some(queued));
    (r, queued)
}

fn status_name(s: crate::Status) -> &'static str {
    use crate::Status::*;
    match s {
        Ok => "ok",
        Exit => "exit",
        Signal => "signal",
        Timeout => "timeout",
        CpuTime => "cpu_time",
        Memory => "memory",
        Pids => "pids",
        OutputLimit => "output_limit",
        Seccomp => "seccomp",
    }
}

/// An engine error as an HTTP answer: the request's fault is a 422, the host's a 500.
fn engine_error(e: &Error) -> Response<Body> {
    let code = match e {
        Error::Invalid { .. } | Error::Path { .. } | Error::Exec { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        // GPUs that exist but stayed busy for the daemon's whole GPU wait: try again later.
        Error::Gpu(g) if g.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        // No GPU here, more than exist, an unknown index: the request cannot ever be met.
        Error::Gpu(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.stage(), e.to_string())
}

/// Reads the whole body, at most `max` bytes; `Err` is the answer to send instead.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request",
            format!("the body is over this daemon's limit of {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_big());
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "request",
            format!("reading the body: {e}"),
        )),
    }
}

/// 422 with the native API's error shape.
fn request_error(message: impl Into<String>) -> Response<Body> {
    error(StatusCode::UNPROCESSABLE_ENTITY, "request", message)
}

/// Reads a JSON body (an empty one is `{}`) and checks it: 400 for bad JSON, 422 for wrong
/// fields or what `check` refuses.
async fn read_json<T: serde::de::DeserializeOwned, U>(
    ctx: &Ctx,
    req: Request<Incoming>,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<U, Response<Body>> {
    let body = read_body(req, ctx.config.max_body).await?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    let t = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            request_error(e.to_string())
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "request",
                format!("malformed JSON: {e}"),
            )
        }
    })?;
    check(t).map_err(request_error)
}

async fn v1_run(ctx: Arc<Ctx>, req: Request<Incoming>, arrived: Instant) -> Response<Body> {
    let job = match read_json(&ctx, req, |r| native::to_job(r, &ctx.config.max)).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    match run_job(&ctx, job, arrived).await {
        (Ok(done), queued) => match native::response(done, queued) {
            Some(r) => json(StatusCode::OK, &r),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "run", "no report"),
        },
        (Err(Failed::Refused(Refused::QueueFull)), _) => busy("the run queue is full"),
        (Err(Failed::Refused(Refused::Closed)), _) => busy("the daemon is shutting down"),
        (Err(Failed::Engine(e)), _) => engine_error(&e),
    }
}

async fn run_code(ctx: Arc<Ctx>, req: Request<Incoming>, arrived: Instant) -> Response<Body> {
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: compat::RunCodeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return unprocessable(e.to_string()),
    };
    let job = match compat::to_job(parsed, &ctx.config.max) {
        Ok(j) => j,
        Err(Ok(malformed)) => return unprocessable(malformed),
        Err(Err(unsupported)) => {
            return json(
                StatusCode::OK,
                &compat::RunCodeResponse::sandbox_error(unsupported),
            )
        }
    };
    match run_job(&ctx, job, arrived).await {
        (Ok(done), _) => json(StatusCode::OK, &compat::response(done)),
        (Err(Failed::Refused(Refused::QueueFull)), _) => busy("the run queue is full"),
        (Err(Failed::Refused(Refused::Closed)), _) => busy("the daemon is shutting down"),
        // A refused file path is the request's fault, not the sandbox's.
        (Err(Failed::Engine(e @ Error::Path { .. })), _) => unprocessable(e.to_string()),
        (Err(Failed::Engine(e)), _) => json(
            StatusCode::OK,
            &compat::RunCodeResponse::sandbox_error(e.to_string()),
        ),
    }
}

fn health(ctx: &Ctx) -> Response<Body> {
    // The default policy's sandbox, built once and cached like every request's.
    let sb = match native::to_job(native::RunRequest::default_code(), &ctx.config.max) {
        Ok(job) => ctx.sandboxes.get(&job.policy),
        Err(m) => Err(Error::Invalid {
            field: "maxima",
            message: m,
        }),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({
            "status": if sb.is_ok() { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": ctx.started.elapsed().as_secs_f64(),
            "slots": ctx.pool.size,
            "running": ctx.pool.running(),
            "queued": ctx.pool.queued(),
            "queue_capacity": ctx.pool.queue_cap,
            "sessions": ctx.sessions.figures().0,
            "max_sessions": ctx.sessions.config.max,
            "languages": lang::available(),
            "enforcement": sb.as_ref().ok().map(|s| s.enforcement().clone()),
            "error": sb.as_ref().err().map(|e| e.to_string()),
            "maxima": {
                "timeout": ctx.config.max.timeout.as_secs_f64(),
                "memory_mb": ctx.config.max.memory >> 20,
                "pids": ctx.config.max.pids,
                "cpus": ctx.config.max.cpus,
            },
        }),
    )
}

/// This process's figures for `/metrics`: RSS, fds, threads, its memory cgroup's usage.
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(kb) = field("VmRSS:") {
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory of the daemon.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}", kb * 1024);
    }
    if let Some(t) = field("Threads:") {
        let _ = writeln!(out, "# HELP process_threads Threads of the daemon.\n# TYPE process_threads gauge\nprocess_threads {t}");
    }
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = writeln!(out, "# HELP process_open_fds Open file descriptors of the daemon.\n# TYPE process_open_fds gauge\nprocess_open_fds {fds}");
    if let Some((file, bytes)) = cgroup_memory() {
        let _ = writeln!(out, "# HELP rsandbox_daemon_cgroup_memory_bytes Memory charged to the daemon's own memory cgroup (its instances' cgroups are beneath it).\n# TYPE rsandbox_daemon_cgroup_memory_bytes gauge\nrsandbox_daemon_cgroup_memory_bytes{{file=\"{file}\"}} {bytes}");
    }
    let records = std::fs::read_dir(crate::paths::state_dir())
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = writeln!(out, "# HELP rsandbox_instances Live instance records in the state directory (this user's, all supervisors).\n# TYPE rsandbox_instances gauge\nrsandbox_instances {records}");
}

/// Memory charged to the daemon and its instances: the cgroup they are made beneath
/// (`memory.current` on v2, the memory hierarchy's `memory.usage_in_bytes` on v1). When that is
/// a v2 root cgroup, which has no `memory.current`, the sum over its `rsandbox-*` children: the
/// daemon's own leaf and its instances.
fn cgroup_memory() -> Option<(&'static str, u64)> {
    let number = |p: &std::path::Path| -> Option<u64> {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    match crate::cgroup::setup().as_ref().ok()? {
        crate::cgroup::Setup::V2 { base } => {
            let file = "memory.current";
            if let Some(v) = number(&base.join(file)) {
                return Some((file, v));
            }
            let sum = std::fs::read_dir(base)
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rsandbox-"))
                .filter_map(|e| number(&e.path().join(file)))
                .sum();
            Some((file, sum))
        }
        crate::cgroup::Setup::V1 { bases } => {
            let file = "memory.usage_in_bytes";
            let (_, base) = bases.iter().find(|(c, _)| *c == "memory")?;
            Some((file, number(&base.join(file))?))
        }
    }
}

fn metrics(ctx: &Ctx) -> Response<Body> {
    let mut out = String::new();
    ctx.pool.metrics(&mut out);
    ctx.sandboxes.metrics(&mut out);
    ctx.sessions.metrics(&mut out);
    process_metrics(&mut out);
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn route(ctx: Arc<Ctx>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let arrived = Instant::now();
    match peer {
        Peer::Unix {
            allowed: false,
            uid,
        } => {
            return error(
                StatusCode::FORBIDDEN,
                "access",
                format!(
                "uid {uid} may not use this daemon (peer credentials: owner, root or the --group)"
            ),
            )
        }
        Peer::Tcp => {
            if let Some(token) = &ctx.config.token {
                let presented = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
                if !presented.is_some_and(|p| listen::token_matches(p, token.as_bytes())) {
                    let mut r = error(
                        StatusCode::UNAUTHORIZED,
                        "access",
                        "a bearer token is required (Authorization: Bearer TOKEN)",
                    );
                    r.headers_mut()
                        .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                    return r;
                }
            }
        }
        Peer::Unix { .. } => {}
    }
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/v1/run") => v1_run(ctx, req, arrived).await,
        (&Method::POST, "/run_code") => run_code(ctx, req, arrived).await,
        (&Method::GET, "/v1/health") => health(&ctx),
        (&Method::GET, "/v1/ping") => json(StatusCode::OK, &"pong"),
        (&Method::GET, "/metrics") => metrics(&ctx),
        (_, "/v1/sessions") => session::route(ctx, req, "", arrived).await,
        (_, p) if p.starts_with("/v1/sessions/") => {
            session::route(ctx, req, &path["/v1/sessions".len()..], arrived).await
        }
        (&Method::POST, "/create_session") => maze::create(ctx, req).await,
        (&Method::POST, p) if p.starts_with("/execute/") => {
            maze::execute(ctx, req, &path["/execute/".len()..], arrived).await
        }
        (&Method::DELETE, p) if p.starts_with("/close/") => {
            maze::close(ctx, &path["/close/".len()..]).await
        }
        (
            _,
            "/v1/run" | "/run_code" | "/v1/health" | "/v1/ping" | "/metrics" | "/create_session",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "request",
            format!("{} is not allowed on {path}", req.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "request",
            format!("no endpoint {path} (see api/openapi.yaml)"),
        ),
    }
}

/// Serves one connection until it closes, or until shutdown lets its request in flight finish.
async fn connection<IO>(ctx: Arc<Ctx>, io: IO, peer: Peer, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _alive = ctx.conns.clone();
    let c = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        let c = c.clone();
        async move { Ok::<_, Infallible>(route(c, peer, req).await) }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let conn = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// Connections open at once at most; past it new ones are closed at once (fds are finite).
const MAX_CONNECTIONS: usize = 4096;

/// The next accepted connection; `None` once shutdown begins. Accept errors (EMFILE, ...)
/// pause briefly; connections past `MAX_CONNECTIONS` are closed at once.
async fn next_conn<'a, T>(
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
    mut accept: impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<T>> + Send + 'a>>,
) -> Option<T> {
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
        };
        match accepted {
            Ok(_) if Arc::strong_count(&ctx.conns) > MAX_CONNECTIONS => {}
            Ok(s) => return Some(s),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn accept_loop(ctx: Arc<Ctx>, ep: Endpoint, stop: watch::Receiver<bool>) {
    let mut stop_accept = stop.clone();
    match ep {
        Endpoint::Unix { listener, .. } => {
            let _ = listener.set_nonblocking(true);
            let Ok(l) = tokio::net::UnixListener::from_std(listener) else {
                return;
            };
            while let Some((s, _)) =
                next_conn(&ctx, &mut stop_accept, || Box::pin(l.accept())).await
            {
                let (allowed, uid) = match s.peer_cred() {
                    Ok(c) => (ctx.config.access.allows(c.uid(), c.gid(), c.pid()), c.uid()),
                    Err(_) => (false, u32::MAX),
                };
                if !allowed {
                    eprintln!(
                        "rsandbox serve: refused uid {uid} on the unix socket (peer credentials)"
                    );
                }
                let peer = Peer::Unix { allowed, uid };
                tokio::spawn(connection(ctx.clone(), s, peer, stop.clone()));
            }
        }
        Endpoint::Tcp { listener } => {
            let _ = listener.set_nonblocking(true);
            let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Some((s, _)) =
                next_conn(&ctx, &mut stop_accept, || Box::pin(l.accept())).await
            {
                let _ = s.set_nodelay(true);
                tokio::spawn(connection(ctx.clone(), s, Peer::Tcp, stop.clone()));
            }
        }
    }
}

/// Serves `endpoints` until `shutdown` completes; then stops accepting, removes its socket
/// files, lets runs in flight finish for `config.grace`, cancels what is left, and returns
/// once every run's instance is gone.
pub async fn serve(
    endpoints: Vec<Endpoint>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let sandboxes = Arc::new(Sandboxes::new(config.slots.max(1)));
    let ctx = Arc::new(Ctx {
        pool: Pool::new(config.slots.max(1), config.queue),
        sessions: session::Sessions::new(config.sessions.clone()),
        config,
        sandboxes,
        started: Instant::now(),
        conns: Arc::new(()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut remove = Vec::new();
    let mut accepting = Vec::new();
    for ep in endpoints {
        if let Endpoint::Unix {
            remove: Some(p), ..
        } = &ep
        {
            remove.push(p.clone());
        }
        accepting.push(tokio::spawn(accept_loop(ctx.clone(), ep, stop_rx.clone())));
    }
    let reaper = tokio::spawn(session::reaper(ctx.clone(), stop_rx.clone()));
    shutdown.await;
    let grace = ctx.config.grace;
    eprintln!(
        "rsandbox serve: shutting down: {} running, {} queued; waiting up to {:.0}s",
        ctx.pool.running(),
        ctx.pool.queued(),
        grace.as_secs_f64()
    );
    let _ = stop_tx.send(true);
    for a in accepting {
        let _ = a.await;
    }
    let _ = reaper.await;
    for p in &remove {
        let _ = std::fs::remove_file(p);
    }
    let deadline = Instant::now() + grace;
    let idle = |ctx: &Ctx| Arc::strong_count(&ctx.conns) == 1 && ctx.pool.running() == 0;
    while !idle(&ctx) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !idle(&ctx) {
        eprintln!(
            "rsandbox serve: grace period over: cancelling {} runs",
            ctx.pool.running()
        );
    }
    ctx.pool.close_and_cancel();
    // Cancelled runs end within the supervisor's kill path; their instances are destroyed
    // before their slots are released.
    let deadline = Instant::now() + Duration::from_secs(15);
    while ctx.pool.running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session::close_all(&ctx).await;
    let sandboxes = ctx.sandboxes.clone();
    let _ = tokio::task::spawn_blocking(move || sandboxes.close()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every endpoint `route` serves is described in the OpenAPI file.
    #[test]
    fn the_openapi_file_describes_every_endpoint() {
        let spec = include_str!("../../api/openapi.yaml");
        for path in [
            "/v1/run",
            "/v1/health",
            "/metrics",
            "/run_code",
            "/v1/ping",
            "/v1/sessions",
            "/v1/sessions/{id}",
            "/v1/sessions/{id}/run",
            "/v1/sessions/{id}/files",
            "/v1/sessions/{id}/files/{path}",
            "/create_session",
            "/execute/{session_id}",
            "/close/{session_id}",
        ] {
            assert!(
                spec.contains(&format!("\n  {path}:\n")),
                "{path} is missing from api/openapi.yaml"
            );
        }
    }
}
