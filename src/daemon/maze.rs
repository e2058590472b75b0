//! Maze compatibility: its sandbox server's session API (`POST /create_session`, `POST
//! /execute/{session_id}`, `DELETE /close/{session_id}`) on the same listener, over the same
//! sessions as `/v1/sessions`. Request and response fields are Maze's (its
//! `CodeExecutionRequest`, FastAPI's `{"detail": ...}` errors); each execute runs the code as a
//! Python script in the session's work dir, so files persist between executes and variables do
//! not. Limits above the daemon's maxima are clamped, as on the other compatible API.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::admission::{refusal_message, Failed};
use super::compat;
use super::http::{json, read_body, unprocessable, Body};
use super::job::{GpuAsk, Policy};
use super::native::{self, LimitsIn, RunRequest};
use super::pool::Refused;
use super::server::Ctx;
use super::session::{self, Ended, Lookup, Refusal, Spec};
use crate::Status;

fn ten() -> f64 {
    10.0
}
fn one() -> i64 {
    1
}
fn mib_512() -> i64 {
    512
}

/// Maze's `CodeExecutionRequest`, the body of both `create_session` and `execute`. Unknown
/// fields are ignored, as pydantic does.
#[derive(Deserialize, Debug)]
pub(crate) struct MazeRequest {
    /// Required by `execute`; ignored by `create_session` (Maze's client sends "").
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default = "ten")]
    pub(crate) timeout: f64,
    #[serde(default = "one")]
    pub(crate) cpu_nums: i64,
    #[serde(default)]
    pub(crate) gpu_nums: i64,
    #[serde(default = "mib_512")]
    pub(crate) memory_mb: i64,
}

/// FastAPI's shape for an `HTTPException`.
fn detail(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(code, &json!({"detail": message.into()}))
}

fn not_found(id: &str) -> Response<Body> {
    detail(StatusCode::NOT_FOUND, format!("Session {id} not found"))
}

/// 503 with Retry-After in Maze's error shape.
fn unavailable(message: &str) -> Response<Body> {
    let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    r
}

async fn parse(ctx: &Ctx, req: Request<Incoming>) -> Result<MazeRequest, Response<Body>> {
    let body = read_body(req, ctx.config.max_body).await?;
    serde_json::from_slice(&body).map_err(|e| unprocessable(e.to_string()))
}

/// The CPUs of a create request, clamped like /run_code's limits: at least one (or the
/// maximum when that is less).
fn cpus(r: &MazeRequest, ctx: &Ctx) -> f64 {
    (r.cpu_nums.max(1) as f64).min(ctx.config.max.cpus)
}

/// A create request as a session's spec with `cpus`, memory clamped to 16 MiB..the maximum.
fn spec(r: &MazeRequest, cpus: f64, ctx: &Ctx) -> Spec {
    let max = &ctx.config.max;
    let config = &ctx.sessions.config;
    Spec {
        policy: Policy {
            cpus_centi: (cpus * 100.0).round() as u32,
            memory: ((r.memory_mb.max(16) as u64) << 20).min(max.memory),
            pids: crate::defaults::PIDS.min(max.pids),
            // Maze's containers have a network; here a private loopback (servers inside a
            // session answer each other, nothing outside is reachable).
            net: crate::Net::Loopback,
            seccomp: "default",
            cpu_time_ms: None,
            gpus: GpuAsk {
                count: r.gpu_nums.max(0) as u32,
                devices: None,
                share: false,
            },
        },
        env: Vec::new(),
        idle: config.idle,
        lifetime: config.lifetime,
        api: "maze",
        name: None,
    }
}

/// `POST /create_session`.
pub(crate) async fn create(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let r = match parse(&ctx, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let cpus = cpus(&r, &ctx);
    let spec = spec(&r, cpus, &ctx);
    let (gpus, memory) = (spec.policy.gpus.count, spec.policy.memory);
    match session::create(&ctx, spec).await {
        Ok(s) => json(
            StatusCode::OK,
            &json!({
                "session_id": s.id,
                "message": "Sandbox session created successfully",
                "cpu_nums": cpus.ceil() as i64,
                "gpu_nums": gpus,
                "memory_mb": memory >> 20,
            }),
        ),
        Err(Refusal::Full(m)) => unavailable(&m.to_string()),
        Err(Refusal::Engine(e)) => detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Failed to create sandbox session: {e}"),
        ),
    }
}

/// `POST /execute/{session_id}`: `{stdout, stderr, exit_code, timed_out}`.
pub(crate) async fn execute(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    id: &str,
    arrived: Instant,
) -> Response<Body> {
    let Lookup::Live(s) = ctx.sessions.lookup(id) else {
        return not_found(id);
    };
    let r = match parse(&ctx, req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Some(code) = r.code else {
        return unprocessable("code: field required");
    };
    let run = RunRequest {
        code: Some(code),
        limits: LimitsIn {
            timeout: Some(compat::clamp_secs(r.timeout, ctx.config.max.timeout).as_secs_f64()),
            ..Default::default()
        },
        ..Default::default()
    };
    let job = match native::to_session_job(run, &ctx.config.max) {
        Ok(j) => j,
        Err(e) => return unprocessable(e.to_string()),
    };
    let failed = |e: &dyn std::fmt::Display| {
        detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Code execution failed: {e}"),
        )
    };
    match session::run(&ctx, &s, job, arrived).await {
        Some((Ok(done), _)) => match done.run {
            Some(o) => {
                let timed_out = matches!(o.status, Status::Timeout | Status::CpuTime);
                json(
                    StatusCode::OK,
                    &json!({
                        "stdout": String::from_utf8_lossy(&o.stdout_bytes()),
                        "stderr": String::from_utf8_lossy(&o.stderr_bytes()),
                        "exit_code": if timed_out { -1 } else { o.exit_code_for_cli() },
                        "timed_out": timed_out,
                    }),
                )
            }
            None => failed(&"no report"),
        },
        Some((Err(Failed::Refused(Refused::QueueFull)), _)) => {
            unavailable(refusal_message(&Refused::QueueFull))
        }
        Some((Err(Failed::Refused(Refused::Closed)), _)) | None => match ctx.sessions.lookup(id) {
            Lookup::Live(_) => unavailable(refusal_message(&Refused::Closed)),
            _ => not_found(id),
        },
        Some((Err(Failed::Engine(e)), _)) => failed(&e),
    }
}

/// `DELETE /close/{session_id}`.
pub(crate) async fn close(ctx: Arc<Ctx>, id: &str) -> Response<Body> {
    if session::end(&ctx, id, Ended::Deleted).await {
        json(
            StatusCode::OK,
            &json!({"message": format!("Session {id} closed successfully")}),
        )
    } else {
        not_found(id)
    }
}
