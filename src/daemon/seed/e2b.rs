//! E2B's code interpreter (its Python client 2.11.5 in debug mode: `E2B_DEBUG=true`,
//! `E2B_SANDBOX_URL`): `POST /execute` streamed as NDJSON, `/contexts` (create, list, delete,
//! restart) and `GET /health`. The client makes no control-plane calls and never creates a
//! sandbox: the `E2b-Sandbox-Id` header names the session, made on its first `/execute` or
//! `/contexts` call (every debug-mode client sends `debug_sandbox_id`, so they share it).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{cell_timeout, spec, valid_name, Trouble};
use crate::daemon::admission::Failed;
use crate::daemon::cells::Utf8Carry;
use crate::daemon::http::{json, line, read_body, whole, Body};
use crate::daemon::server::Ctx;
use crate::daemon::session::contexts::{
    context_for, ids, new_context, remove, restart_context, stream_cell, Cell, Missing,
};
use crate::daemon::session::Session;
use crate::{CellOptions, CellStatus, ContextOptions, Event, Execution};

const API: &str = "e2b";

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(whole(message.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn fail(t: Trouble) -> Response<Body> {
    text(t.status, t.message)
}

/// `GET /health`.
pub(crate) fn health() -> Response<Body> {
    text(StatusCode::OK, "OK")
}

/// The session the request's `E2b-Sandbox-Id` names, made now when there is none.
async fn sandbox(ctx: &Arc<Ctx>, req: &Request<Incoming>) -> Result<Arc<Session>, Trouble> {
    let id = req
        .headers()
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Trouble::new(
                StatusCode::BAD_REQUEST,
                "the E2b-Sandbox-Id header is required",
            )
        })?;
    if !valid_name(id) {
        return Err(Trouble::new(
            StatusCode::BAD_REQUEST,
            format!("E2b-Sandbox-Id {id:?} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,62}}"),
        ));
    }
    if let Some(s) = ctx.sessions.by_name(API, id) {
        return Ok(s);
    }
    // Two first calls at once could both create one: serialise the creation.
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = CREATING.lock().await;
    if let Some(s) = ctx.sessions.by_name(API, id) {
        return Ok(s);
    }
    super::create(ctx, spec(ctx, API, Some(id.to_string()), None, None)?).await
}

/// `/execute` and `/contexts...`.
pub(crate) async fn route(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let m = req.method().clone();
    let s = match sandbox(&ctx, &req).await {
        Ok(s) => s,
        Err(t) => return fail(t),
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let r = match (m, parts.as_slice()) {
        (Method::POST, ["execute"]) => execute(&ctx, &s, req, arrived).await,
        (Method::POST, ["contexts"]) => create(&ctx, &s, req).await,
        (Method::GET, ["contexts"]) => Ok(list(&s)),
        (Method::DELETE, ["contexts", cid]) => delete(&s, cid).await,
        (Method::POST, ["contexts", cid, "restart"]) => restart(&s, cid).await,
        (m, _) => Err(Trouble::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {m} {path}"),
        )),
    };
    r.unwrap_or_else(fail)
}

fn context_view(id: &str) -> Value {
    json!({"id": id, "language": "python", "cwd": crate::defaults::WORK_DIR})
}

async fn body_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<T, Trouble> {
    let body = read_body(req, ctx.config.max_body)
        .await
        .map_err(|r| Trouble::new(r.status(), "the request body could not be read"))?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    serde_json::from_slice(body)
        .map_err(|e| Trouble::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))
}

fn check_language(l: Option<&str>) -> Result<(), Trouble> {
    match l {
        None | Some("python" | "python3") => Ok(()),
        Some(other) => Err(Trouble::new(
            StatusCode::BAD_REQUEST,
            format!("language {other:?} is not offered: contexts run python"),
        )),
    }
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(default)]
    language: Option<String>,
    /// Accepted: every context's working directory is the work dir.
    #[serde(default)]
    #[allow(dead_code)]
    cwd: Option<String>,
}

async fn create(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Trouble> {
    let r: CreateRequest = body_json(ctx, req).await?;
    check_language(r.language.as_deref())?;
    let (id, _) = new_context(ctx, s, ContextOptions::default(), false)
        .await
        .map_err(|resp| {
            Trouble::new(
                resp.status(),
                "the context could not be made (see the daemon's limits)",
            )
        })?;
    Ok(json(StatusCode::OK, &context_view(&id)))
}

fn list(s: &Session) -> Response<Body> {
    let all: Vec<Value> = ids(s).iter().map(|id| context_view(id)).collect();
    json(StatusCode::OK, &all)
}

fn missing(cid: &str, m: Missing) -> Trouble {
    let why = match m {
        Missing::Deleted => "was deleted",
        Missing::Unknown => "not found",
    };
    Trouble::new(StatusCode::NOT_FOUND, format!("context {cid} {why}"))
}

async fn delete(s: &Session, cid: &str) -> Result<Response<Body>, Trouble> {
    remove(s, cid).await.map_err(|m| missing(cid, m))?;
    let mut r = Response::new(whole(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

async fn restart(s: &Session, cid: &str) -> Result<Response<Body>, Trouble> {
    let c = crate::daemon::session::contexts::lookup(s, cid).map_err(|m| missing(cid, m))?;
    restart_context(c)
        .await
        .map_err(|e| Trouble::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(text(StatusCode::OK, ""))
}

#[derive(Deserialize)]
struct ExecuteRequest {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    env_vars: Option<std::collections::BTreeMap<String, String>>,
}

async fn execute(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Result<Response<Body>, Trouble> {
    let r: ExecuteRequest = body_json(ctx, req).await?;
    if r.context_id.is_some() && r.language.is_some() {
        return Err(Trouble::new(
            StatusCode::BAD_REQUEST,
            "give context_id or language, not both",
        ));
    }
    check_language(r.language.as_deref())?;
    let (_, c) = context_for(ctx, s, r.context_id.as_deref())
        .await
        .map_err(|resp| match resp.status() {
            StatusCode::NOT_FOUND | StatusCode::GONE => Trouble::new(
                StatusCode::NOT_FOUND,
                format!(
                    "context {} not found",
                    r.context_id.as_deref().unwrap_or("")
                ),
            ),
            st => Trouble::new(st, "the context could not be used"),
        })?;
    let mut code = r.code;
    if let Some(env) = r.env_vars.as_ref().filter(|e| !e.is_empty()) {
        let env = serde_json::to_string(env).expect("a map");
        code = format!("__import__('os').environ.update({env}); {code}");
    }
    let timeout = cell_timeout(ctx, None);
    let secs = timeout.as_secs_f64();
    let cell = Cell {
        code,
        opts: CellOptions::default(),
        timeout,
        arrived,
    };
    Ok(stream_cell(
        ctx,
        s,
        c,
        cell,
        Box::new(event_line),
        line(&json!({"type": "keepalive"})),
        Box::new(move |r| end_lines(r, secs)),
    ))
}

/// Nanoseconds since the epoch, as E2B stamps output.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A MIME bundle in E2B's result fields (the rest under `extra`).
fn result(data: &Map<String, Value>, main: bool) -> Value {
    let mut out = Map::new();
    let mut extra = Map::new();
    for (mime, v) in data {
        let field = match mime.as_str() {
            "text/plain" => "text",
            "text/html" => "html",
            "text/markdown" => "markdown",
            "image/svg+xml" => "svg",
            "image/png" => "png",
            "image/jpeg" => "jpeg",
            "application/pdf" => "pdf",
            "text/latex" => "latex",
            "application/json" => "json",
            "application/javascript" => "javascript",
            _ => {
                extra.insert(mime.clone(), v.clone());
                continue;
            }
        };
        out.insert(field.into(), v.clone());
    }
    out.insert("type".into(), json!("result"));
    out.insert("is_main_result".into(), json!(main));
    if !extra.is_empty() {
        out.insert("extra".into(), Value::Object(extra));
    }
    Value::Object(out)
}

fn event_line(ev: &Event<'_>, carry: &mut [Utf8Carry; 2]) -> Option<Bytes> {
    let stream = |kind: &str, (field, value): (&'static str, String)| {
        let text = if field == "text" {
            value
        } else {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD
                .decode(&value)
                .unwrap_or_default();
            String::from_utf8_lossy(&b).into_owned()
        };
        json!({"type": kind, "text": text, "timestamp": now_ns() as u64})
    };
    let v = match ev {
        Event::Stdout(b) => stream("stdout", carry[0].take(b)?),
        Event::Stderr(b) => stream("stderr", carry[1].take(b)?),
        Event::Result(r) => result(&r.data, r.main),
        Event::Error(e) => {
            json!({"type": "error", "name": e.name, "value": e.value, "traceback": e.traceback})
        }
    };
    Some(line(&v))
}

fn end_lines(r: Result<Execution, Failed>, secs: f64) -> Vec<Bytes> {
    let mut out = Vec::new();
    match r {
        Ok(e) => {
            let error = match e.status {
                CellStatus::Timeout => Some((
                    "TimeoutError",
                    format!("the cell timed out after {secs} seconds"),
                )),
                CellStatus::Died => Some((
                    "SandboxError",
                    "the interpreter died; its variables are gone".to_string(),
                )),
                CellStatus::Interrupted if e.error.is_none() => {
                    Some(("KeyboardInterrupt", "interrupted".to_string()))
                }
                _ => None,
            };
            if let Some((name, value)) = error.filter(|_| e.error.is_none()) {
                out.push(line(
                    &json!({"type": "error", "name": name, "value": value, "traceback": ""}),
                ));
            }
            out.push(line(&json!({"type": "number_of_executions",
                "execution_count": e.execution_count})));
        }
        Err(_) => out.push(line(&json!({"type": "error", "name": "SandboxError",
            "value": "the cell did not run (the sandbox ended or the daemon is full)",
            "traceback": ""}))),
    }
    out.push(line(&json!({"type": "end_of_execution"})));
    out
}
