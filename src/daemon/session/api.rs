//! The native session API under `/v1/sessions`: create and list sessions, show and delete one,
//! run in it, and list, put, get and delete its work dir's files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::lifecycle::{self, with_instance};
use super::{Ended, Lookup, Refusal, Session, Spec};
use crate::daemon::admission::{refusal_message, Failed};
use crate::daemon::error::RequestError;
use crate::daemon::http::{
    engine_error, error, json, method_not_allowed, no_endpoint, percent_decode, query, read_body,
    read_json, request_error, unavailable, Body,
};
use crate::daemon::job::Job;
use crate::daemon::native::{self, LimitsIn, RunRequest};
use crate::daemon::pool::Refused;
use crate::daemon::server::Ctx;
use crate::Error;

/// `POST /v1/sessions`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CreateRequest {
    pub(crate) limits: LimitsIn,
    pub(crate) env: BTreeMap<String, String>,
    /// `default` or `strict`.
    pub(crate) seccomp: Option<String>,
    /// Seconds without a run or file operation after which the session ends.
    pub(crate) idle_timeout: Option<f64>,
    /// Seconds after which the session ends, busy or not.
    pub(crate) lifetime: Option<f64>,
}

/// Checks a create request against the daemon's maxima.
fn spec(r: CreateRequest, ctx: &Ctx) -> Result<Spec, RequestError> {
    if r.limits.timeout.is_some()
        || r.limits.compile_timeout.is_some()
        || r.limits.cpu_time.is_some()
    {
        return Err(RequestError::Conflict(
            "limits.timeout, compile_timeout and cpu_time belong to each run \
                    (POST /v1/sessions/{id}/run); a session ends by idle_timeout or lifetime",
        ));
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
        name: None,
    })
}

/// A run request in a session: `/v1/run`'s, less what the session fixed.
fn session_job(r: RunRequest, ctx: &Ctx) -> Result<Job, RequestError> {
    let l = &r.limits;
    if l.cpus.is_some()
        || l.memory_mb.is_some()
        || l.pids.is_some()
        || l.network.is_some()
        || l.allowed_hosts.is_some()
        || l.cpu_time.is_some()
        || l.gpus.is_some()
        || l.gpu_devices.is_some()
        || l.gpu_share.is_some()
        || r.seccomp.is_some()
    {
        return Err(RequestError::Conflict(
            "a session's limits, network, GPUs and seccomp profile are set when it is \
                    created; a run takes only limits.timeout and limits.compile_timeout",
        ));
    }
    native::to_session_job(r, &ctx.config.max)
}

/// The answer when a session's instance could not be used: 404/410 when the session is not
/// live (any more), else 500 (its instance died under it).
pub(super) fn ended(ctx: &Ctx, id: &str) -> Response<Body> {
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

/// An error of a file operation: a missing file is 404, other refusals 422.
fn file_error(e: &Error) -> Response<Body> {
    match e {
        Error::Path { reason, .. } if reason == crate::instance::NO_SUCH_FILE => {
            error(StatusCode::NOT_FOUND, "files", e.to_string())
        }
        e => engine_error(e),
    }
}

/// 503 with Retry-After: no room for another session.
pub(crate) fn full(message: &str) -> Response<Body> {
    unavailable("sessions", message)
}

/// Everything under `/v1/sessions`; `rest` is the path after it.
pub(crate) async fn route(
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
            Method::POST => create(ctx, req).await,
            m => method_not_allowed(&m, "/v1/sessions"),
        };
    }
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let s = match ctx.sessions.lookup(id) {
        Lookup::Live(s) => s,
        other => return not_live(id, &other),
    };
    match (method, sub) {
        (Method::GET, "") => json(StatusCode::OK, &s.view(lifecycle::usage(&s).await)),
        (Method::DELETE, "") => {
            lifecycle::end(&ctx, id, Ended::Deleted).await;
            json(StatusCode::OK, &json!({"id": id, "state": "deleted"}))
        }
        (Method::POST, "run") => run(ctx.clone(), &s, req, arrived).await,
        (_, "execute" | "contexts") => super::contexts::route(&ctx, &s, req, sub, arrived).await,
        (_, sub) if sub.starts_with("contexts/") => {
            super::contexts::route(&ctx, &s, req, sub, arrived).await
        }
        (Method::GET, "files") => list_files(&ctx, &s, &req).await,
        (m, sub) if sub.starts_with("files/") => {
            let Some(path) = percent_decode(&sub["files/".len()..]) else {
                return request_error("the file path is not valid percent-encoded UTF-8");
            };
            file_op(ctx.clone(), &s, m, path, req).await
        }
        (m, "" | "run" | "files") => method_not_allowed(&m, req.uri().path()),
        _ => no_endpoint(req.uri().path()),
    }
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

/// `POST /v1/sessions`.
async fn create(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let max_body = ctx.config.max_body;
    let spec = match read_json(req, max_body, |r: CreateRequest| spec(r, &ctx)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match lifecycle::create(&ctx, spec).await {
        Ok(s) => json(StatusCode::CREATED, &s.view(None)),
        Err(Refusal::Full(m)) => full(&m.to_string()),
        Err(Refusal::Engine(e)) => engine_error(&e),
    }
}

/// `POST /v1/sessions/{id}/run`.
async fn run(
    ctx: Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let max_body = ctx.config.max_body;
    let streamed = crate::daemon::http::wants_ndjson(&req);
    let mut job = match read_json(req, max_body, |r: RunRequest| session_job(r, &ctx)).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    if streamed {
        let s = s.clone();
        return crate::daemon::stream::stream(move |lines| async move {
            job.tap = Some(crate::daemon::stream::output_tap(lines));
            match lifecycle::run(&ctx, &s, job, arrived).await {
                Some(r) => native::end_line(r),
                None => crate::daemon::http::line(&json!({"type": "end", "error":
                    {"stage": "session", "message": format!("session {} has ended", s.id)}})),
            }
        });
    }
    match lifecycle::run(&ctx, s, job, arrived).await {
        Some((Ok(done), queued)) => match native::response(done, queued) {
            Some(r) => json(StatusCode::OK, &r),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "run", "no report"),
        },
        Some((Err(Failed::Refused(Refused::QueueFull)), _)) => {
            unavailable("queue", refusal_message(&Refused::QueueFull))
        }
        // Cancelled: the session ended, or the daemon is shutting down.
        Some((Err(Failed::Refused(Refused::Closed)), _)) => match ctx.sessions.lookup(&s.id) {
            Lookup::Live(_) => unavailable("queue", refusal_message(&Refused::Closed)),
            other => not_live(&s.id, &other),
        },
        Some((Err(Failed::Engine(Error::Gone)), _)) | None => ended(&ctx, &s.id),
        Some((Err(Failed::Engine(e)), _)) => engine_error(&e),
    }
}

/// `GET /v1/sessions/{id}/files?dir=...`.
async fn list_files(ctx: &Ctx, s: &Arc<Session>, req: &Request<Incoming>) -> Response<Body> {
    let dir = match query(req, "dir") {
        None => String::new(),
        Some(Ok(d)) => d,
        Some(Err(raw)) => {
            return request_error(
                RequestError::Value {
                    field: "dir",
                    value: raw.to_string(),
                    reason: "is not valid",
                }
                .to_string(),
            )
        }
    };
    match with_instance(s, move |i| i.list_dir(&dir)).await {
        Some(Ok(entries)) => json(StatusCode::OK, &json!({"entries": entries})),
        Some(Err(e @ (Error::Path { .. } | Error::Invalid { .. }))) => file_error(&e),
        Some(Err(_)) | None => ended(ctx, &s.id),
    }
}

/// The `mode` of a file upload (octal; default 0644).
fn upload_mode(req: &Request<Incoming>) -> Result<u32, RequestError> {
    let bad = |value: &str, reason| RequestError::Value {
        field: "mode",
        value: value.to_string(),
        reason,
    };
    match query(req, "mode") {
        None => Ok(0o644),
        Some(Ok(v)) => match u32::from_str_radix(&v, 8) {
            Ok(m) if m <= 0o7777 => Ok(m),
            _ => Err(bad(&v, "is not an octal file mode")),
        },
        Some(Err(v)) => Err(bad(v, "is not valid")),
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
    let r = match m {
        Method::PUT => {
            let mode = match upload_mode(&req) {
                Ok(m) => m,
                Err(e) => return request_error(e.to_string()),
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
            let max = ctx.config.max_body as u64;
            with_instance(s, move |i| {
                let data = i.get_file(&path, max)?;
                let mut r = Response::new(crate::daemon::http::whole(data));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
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
