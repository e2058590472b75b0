//! microsandbox's server API (its Python SDK 0.1.8, the last JSON-RPC one): `POST /api/v1/rpc`
//! with JSON-RPC 2.0 (`sandbox.start`, `sandbox.stop`, `sandbox.repl.run`,
//! `sandbox.command.run`, `sandbox.metrics.get`) and `GET /api/v1/health`. A sandbox is a
//! session named by (namespace, name); its REPL is the session's default Python context, run
//! with `echo` (every top-level expression statement prints its repr, as `python -i` does).

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{argv, cell_timeout, run_command, spec, timed_out, valid_name, Trouble};
use crate::daemon::http::{json, read_body, Body};
use crate::daemon::server::Ctx;
use crate::daemon::session::contexts::{context_for, run_cell, Cell};
use crate::daemon::session::{self, usage, with_instance, Ended, Session};
use crate::{CellOptions, CellStatus, FileKind};

const API: &str = "microsandbox";

/// JSON-RPC 2.0's error codes.
const INVALID_REQUEST: i64 = -32600;
const NO_METHOD: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL: i64 = -32603;
const PARSE: i64 = -32700;

/// `GET /api/v1/health`.
pub(crate) fn health() -> Response<Body> {
    json(StatusCode::OK, &json!({"message": "Service is healthy"}))
}

fn rpc_error(
    status: StatusCode,
    code: i64,
    message: impl Into<String>,
    id: &Value,
) -> Response<Body> {
    json(
        status,
        &json!({"jsonrpc": "2.0", "error": {"code": code, "message": message.into()}, "id": id}),
    )
}

/// A failure as a JSON-RPC error: the request's fault is `-32602`, the daemon's `-32603`.
fn trouble(t: Trouble, id: &Value) -> Response<Body> {
    let code = if t.status.is_client_error() && t.status != StatusCode::REQUEST_TIMEOUT {
        INVALID_PARAMS
    } else {
        INTERNAL
    };
    rpc_error(t.status, code, t.message, id)
}

fn bad_params(message: impl Into<String>) -> Trouble {
    Trouble::new(StatusCode::BAD_REQUEST, message)
}

/// `POST /api/v1/rpc`.
pub(crate) async fn rpc(ctx: Arc<Ctx>, req: Request<Incoming>, arrived: Instant) -> Response<Body> {
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                PARSE,
                format!("parse error: {e}"),
                &Value::Null,
            )
        }
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let invalid = |m: &str| rpc_error(StatusCode::BAD_REQUEST, INVALID_REQUEST, m, &id);
    if !v.is_object() {
        return invalid("invalid request: not a JSON object");
    }
    if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("invalid request: jsonrpc must be \"2.0\"");
    }
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return invalid("invalid request: method must be a string");
    };
    let params = v.get("params").cloned().unwrap_or(json!({}));
    let r = match method {
        "sandbox.start" => start(&ctx, params).await,
        "sandbox.stop" => stop(&ctx, params).await,
        "sandbox.repl.run" => repl(&ctx, params, arrived).await,
        "sandbox.command.run" => command(&ctx, params, arrived).await,
        "sandbox.metrics.get" => metrics(&ctx, params).await,
        m => {
            return rpc_error(
                StatusCode::NOT_FOUND,
                NO_METHOD,
                format!("method not found: {m}"),
                &id,
            )
        }
    };
    match r {
        Ok(result) => json(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "result": result, "id": id}),
        ),
        Err(t) => trouble(t, &id),
    }
}

fn params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, Trouble> {
    serde_json::from_value(p).map_err(|e| bad_params(format!("invalid params: {e}")))
}

/// A sandbox's session key, its names checked.
fn key(namespace: &str, sandbox: &str) -> Result<String, Trouble> {
    for (field, n) in [("namespace", namespace), ("sandbox", sandbox)] {
        if !valid_name(n) {
            return Err(bad_params(format!(
                "invalid params: {field} {n:?} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,62}}"
            )));
        }
    }
    Ok(format!("{namespace}/{sandbox}"))
}

#[derive(Deserialize)]
struct Named {
    namespace: String,
    sandbox: String,
}

fn running(ctx: &Ctx, p: &Named) -> Result<Arc<Session>, Trouble> {
    let k = key(&p.namespace, &p.sandbox)?;
    ctx.sessions.by_name(API, &k).ok_or_else(|| {
        Trouble::new(
            StatusCode::NOT_FOUND,
            format!("sandbox {k} is not running (sandbox.start it first)"),
        )
    })
}

#[derive(Deserialize)]
struct StartParams {
    namespace: String,
    sandbox: String,
    #[serde(default)]
    config: StartConfig,
}

#[derive(Deserialize, Default)]
struct StartConfig {
    /// Accepted and not used: the language comes with each REPL call.
    #[serde(default)]
    #[allow(dead_code)]
    image: Option<String>,
    /// MiB.
    #[serde(default)]
    memory: Option<u64>,
    #[serde(default)]
    cpus: Option<f64>,
}

async fn start(ctx: &Arc<Ctx>, p: Value) -> Result<Value, Trouble> {
    let p: StartParams = params(p)?;
    let k = key(&p.namespace, &p.sandbox)?;
    // Two starts of one new name at once must not make two sessions.
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = STARTING.lock().await;
    if ctx.sessions.by_name(API, &k).is_some() {
        return Ok(json!(format!("Sandbox {k} is already running")));
    }
    let spec = spec(ctx, API, Some(k.clone()), p.config.memory, p.config.cpus)?;
    super::create(ctx, spec).await?;
    Ok(json!(format!("Sandbox {k} started successfully")))
}

async fn stop(ctx: &Arc<Ctx>, p: Value) -> Result<Value, Trouble> {
    let p: Named = params(p)?;
    let s = running(ctx, &p)?;
    session::end(ctx, &s.id, Ended::Deleted).await;
    Ok(json!(format!(
        "Sandbox {}/{} stopped successfully",
        p.namespace, p.sandbox
    )))
}

#[derive(Deserialize)]
struct ReplParams {
    namespace: String,
    sandbox: String,
    #[serde(default)]
    language: Option<String>,
    code: String,
}

/// Output as microsandbox gives it: one item per line, without its newline.
fn lines(stream: &str, text: &str, out: &mut Vec<Value>) {
    if text.is_empty() {
        return;
    }
    for l in text.strip_suffix('\n').unwrap_or(text).split('\n') {
        out.push(json!({"stream": stream, "text": l}));
    }
}

async fn repl(ctx: &Arc<Ctx>, p: Value, arrived: Instant) -> Result<Value, Trouble> {
    let p: ReplParams = params(p)?;
    let language = p.language.unwrap_or_else(|| "python".into());
    if language != "python" {
        // Contexts run Python; a Node.js REPL is not offered yet, even where node exists.
        return Err(bad_params(format!(
            "language {language:?} is not offered: rsandbox's REPL runs python (nodejs is not \
             offered yet)"
        )));
    }
    let s = running(
        ctx,
        &Named {
            namespace: p.namespace,
            sandbox: p.sandbox,
        },
    )?;
    let (_, c) = context_for(ctx, &s, None).await.map_err(|_| {
        Trouble::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sandbox's Python REPL could not be started",
        )
    })?;
    let cell = Cell {
        code: p.code,
        opts: CellOptions::default().echo(true),
        timeout: cell_timeout(ctx, None),
        arrived,
    };
    let e = run_cell(ctx, &s, c, cell).await.map_err(|_| {
        Trouble::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the cell did not run (the sandbox ended or the daemon is full)",
        )
    })?;
    let mut output = Vec::new();
    lines("stdout", &e.stdout, &mut output);
    lines("stderr", &e.stderr, &mut output);
    if let Some(err) = &e.error {
        lines("stderr", &err.traceback, &mut output);
    }
    match e.status {
        CellStatus::Timeout => lines(
            "stderr",
            &format!(
                "timed out after {} seconds",
                cell_timeout(ctx, None).as_secs()
            ),
            &mut output,
        ),
        CellStatus::Died => lines("stderr", "the interpreter died", &mut output),
        _ => {}
    }
    let status = if e.status == CellStatus::Ok {
        "success"
    } else {
        "error"
    };
    Ok(json!({"status": status, "language": language, "output": output}))
}

#[derive(Deserialize)]
struct CommandParams {
    namespace: String,
    sandbox: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    timeout: Option<f64>,
}

async fn command(ctx: &Arc<Ctx>, p: Value, arrived: Instant) -> Result<Value, Trouble> {
    let p: CommandParams = params(p)?;
    let s = running(
        ctx,
        &Named {
            namespace: p.namespace,
            sandbox: p.sandbox,
        },
    )?;
    let o = run_command(ctx, &s, argv(&p.command, &p.args)?, p.timeout, arrived).await?;
    if timed_out(&o) {
        return Err(Trouble::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "command timed out after {} seconds",
                p.timeout.map_or_else(
                    || crate::defaults::TIMEOUT.as_secs_f64(),
                    |t| t.min(ctx.config.max.timeout.as_secs_f64())
                )
            ),
        ));
    }
    let mut output = Vec::new();
    lines(
        "stdout",
        &String::from_utf8_lossy(&o.stdout_bytes()),
        &mut output,
    );
    lines(
        "stderr",
        &String::from_utf8_lossy(&o.stderr_bytes()),
        &mut output,
    );
    let code = o.exit_code_for_cli();
    Ok(json!({
        "command": p.command,
        "args": p.args,
        "exit_code": code,
        "success": code == 0,
        "output": output,
    }))
}

#[derive(Deserialize)]
struct MetricsParams {
    namespace: String,
    #[serde(default)]
    sandbox: Option<String>,
}

async fn metrics(ctx: &Arc<Ctx>, p: Value) -> Result<Value, Trouble> {
    let p: MetricsParams = params(p)?;
    if p.namespace != "*" {
        key(&p.namespace, p.sandbox.as_deref().unwrap_or("x"))?;
    }
    let mut out = Vec::new();
    for s in ctx.sessions.all() {
        let Some((ns, name)) = s
            .spec
            .name
            .as_deref()
            .filter(|_| s.spec.api == API)
            .and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        if (p.namespace != "*" && p.namespace != ns)
            || p.sandbox.as_deref().is_some_and(|n| n != name)
        {
            continue;
        }
        let (ns, name) = (ns.to_string(), name.to_string());
        let u = usage(&s).await;
        let age = s.age().as_secs_f64().max(0.001);
        let disk = with_instance(&s, |i| Ok(disk_usage(i))).await;
        out.push(json!({
            "namespace": ns,
            "name": name,
            "running": true,
            "cpu_usage": u.as_ref().map_or(0.0, |u| u.cpu_ms / 10.0 / age),
            "memory_usage": u.and_then(|u| u.memory_bytes).unwrap_or(0) >> 20,
            "disk_usage": disk.and_then(|d| d.ok()).unwrap_or(0),
        }));
    }
    Ok(json!({"sandboxes": out}))
}

/// Bytes of the files in the work dir (at most this many entries are looked at).
const DISK_ENTRIES: usize = 100_000;

fn disk_usage(i: &crate::Instance) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut dirs = vec![String::new()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = i.list_dir(&d) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > DISK_ENTRIES {
                return total;
            }
            let path = if d.is_empty() {
                e.name.clone()
            } else {
                format!("{d}/{}", e.name)
            };
            match e.kind {
                FileKind::Dir => dirs.push(path),
                _ => total += e.size,
            }
        }
    }
    total
}
