//! AI Computer's sandbox API (its Python client 0.3.4): `POST /dev/token`, `POST
//! /api/v1/sandbox/create`, and under `/api/v1/sandbox/{id}`: `status`, `DELETE`, `execute`
//! (whole, `/stream`, `/file/stream`), `execute/shell`, `files/upload` (multipart) and `files`
//! (download). A sandbox is a session; code runs in its default Python context. The client's
//! `/workspace` is the work dir, as is its name inside the sandbox (`/home/sandbox`); any other
//! absolute path is refused.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{argv, cell_timeout, run_command, spec, timed_out, Trouble};
use crate::daemon::cells::Utf8Carry;
use crate::daemon::http::{json, line, percent_decode, query, read_body, whole, Body};
use crate::daemon::server::Ctx;
use crate::daemon::session::contexts::{context_for, run_cell, stream_cell, Cell};
use crate::daemon::session::{self, with_instance, Ended, Lookup, Session};
use crate::{CellOptions, CellStatus, Event, Execution};

const API: &str = "ai-computer";

/// The client's default sandbox directory, which is the work dir here.
const WORKSPACE: &str = "/workspace";

/// Any answer but 200 is a failure whose body the client shows: plain text.
fn fail(t: Trouble) -> Response<Body> {
    let mut r = Response::new(whole(t.message));
    *r.status_mut() = t.status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `POST /dev/token`: a token for a daemon without one (with a token, clients pass it).
pub(crate) fn token(ctx: &Ctx) -> Response<Body> {
    match ctx.config.token {
        None => json(
            StatusCode::OK,
            &json!({"access_token": "rsandbox-no-auth", "token_type": "bearer"}),
        ),
        Some(_) => fail(Trouble::new(
            StatusCode::FORBIDDEN,
            "this daemon has a token: pass it to SandboxClient(token=...)",
        )),
    }
}

/// Everything under `/api/v1/sandbox`; `rest` is the path after it.
pub(crate) async fn route(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    rest: &str,
    arrived: Instant,
) -> Response<Body> {
    let m = req.method().clone();
    if rest == "/create" {
        return match m {
            Method::POST => create(&ctx).await,
            _ => fail(Trouble::new(StatusCode::METHOD_NOT_ALLOWED, "use POST")),
        };
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let s = match ctx.sessions.lookup(id) {
        Lookup::Live(s) if s.spec.api == API => s,
        _ => {
            return fail(Trouble::new(
                StatusCode::NOT_FOUND,
                format!("sandbox {id} not found"),
            ))
        }
    };
    let r = match (m, sub) {
        (Method::GET, "status") => Ok(json(StatusCode::OK, &json!({"status": "ready"}))),
        (Method::DELETE, "") => {
            session::end(&ctx, id, Ended::Deleted).await;
            Ok(json(StatusCode::OK, &json!({"message": "Sandbox deleted"})))
        }
        (Method::POST, "execute") => execute(&ctx, &s, req, arrived, false).await,
        (Method::POST, "execute/stream" | "execute/file/stream") => {
            execute(&ctx, &s, req, arrived, true).await
        }
        (Method::POST, "execute/shell") => shell(&ctx, &s, req, arrived).await,
        (Method::POST, "files/upload") => upload(&ctx, &s, req).await,
        (Method::GET, "files") => download(&ctx, &s, &req).await,
        (m, sub) => Err(Trouble::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {m} /api/v1/sandbox/{{id}}/{sub}"),
        )),
    };
    r.unwrap_or_else(fail)
}

async fn create(ctx: &Arc<Ctx>) -> Response<Body> {
    let made = match spec(ctx, API, None, None, None) {
        Ok(sp) => super::create(ctx, sp).await,
        Err(t) => Err(t),
    };
    match made {
        Ok(s) => json(
            StatusCode::OK,
            &json!({"sandbox_id": s.id, "status": "ready"}),
        ),
        Err(t) => fail(t),
    }
}

async fn body_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<T, Trouble> {
    let body = read_body(req, ctx.config.max_body)
        .await
        .map_err(|r| Trouble::new(r.status(), "the request body could not be read"))?;
    serde_json::from_slice(&body).map_err(|e| {
        Trouble::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bad request: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct ExecuteRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    environment: Option<std::collections::BTreeMap<String, String>>,
}

/// The cell of an execute request: its code, or the Python file at `file_path` run in the
/// context's namespace.
fn cell_code(r: &ExecuteRequest) -> Result<String, Trouble> {
    let bad = |m: &str| Trouble::new(StatusCode::UNPROCESSABLE_ENTITY, m.to_string());
    let mut code = match (&r.code, &r.file_path) {
        (Some(c), None) => c.clone(),
        (None, Some(p)) => {
            let inside = format!("{}/{}", crate::defaults::WORK_DIR, work_path(p)?);
            let p = serde_json::to_string(&inside).expect("a string");
            format!("exec(compile(open({p}).read(), {p}, 'exec'))")
        }
        _ => return Err(bad("give exactly one of code and file_path")),
    };
    if let Some(env) = r.environment.as_ref().filter(|e| !e.is_empty()) {
        // Set on the cell's first line, which it shares: its own lines keep their numbers.
        let env = serde_json::to_string(env).expect("a map");
        code = format!("__import__('os').environ.update({env}); {code}");
    }
    Ok(code)
}

async fn execute(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
    stream: bool,
) -> Result<Response<Body>, Trouble> {
    let r: ExecuteRequest = body_json(ctx, req).await?;
    let code = cell_code(&r)?;
    let timeout = cell_timeout(ctx, r.timeout);
    let (_, c) = context_for(ctx, s, None).await.map_err(|_| {
        Trouble::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the sandbox's Python could not be started",
        )
    })?;
    let cell = Cell {
        code,
        opts: CellOptions::default().json_value(true),
        timeout,
        arrived,
    };
    if stream {
        let secs = timeout.as_secs_f64();
        return Ok(stream_cell(
            ctx,
            s,
            c,
            cell,
            Box::new(event_line),
            line(&json!({"type": "keepalive", "data": ""})),
            Box::new(move |r| end_lines(r, secs)),
        ));
    }
    let e = run_cell(ctx, s, c, cell).await.map_err(|_| {
        Trouble::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cell did not run (the sandbox ended or the daemon is full)",
        )
    })?;
    Ok(json(
        StatusCode::OK,
        &answer(&e, &s.id, timeout.as_secs_f64()),
    ))
}

/// The main result's value: as JSON where it is serialisable, else its repr; null without one.
fn value(e: &Execution) -> Value {
    let Some(main) = e.results.iter().find(|r| r.main) else {
        return Value::Null;
    };
    main.data
        .get("application/json")
        .or_else(|| main.data.get("text/plain"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn error_of(e: &Execution, secs: f64) -> Value {
    match (&e.error, e.status) {
        (Some(err), _) => {
            json!({"name": err.name, "value": err.value, "traceback": err.traceback})
        }
        (None, CellStatus::Timeout) => json!({"name": "TimeoutError",
            "value": format!("timed out after {secs} seconds"), "traceback": ""}),
        (None, CellStatus::Died) => json!({"name": "SandboxError",
            "value": "the interpreter died; its variables are gone", "traceback": ""}),
        (None, CellStatus::Interrupted) => {
            json!({"name": "KeyboardInterrupt", "value": "", "traceback": ""})
        }
        _ => Value::Null,
    }
}

fn answer(e: &Execution, id: &str, secs: f64) -> Value {
    json!({
        "success": e.status == CellStatus::Ok,
        "output": e.stdout,
        "stderr": e.stderr,
        "result": value(e),
        "error": error_of(e, secs),
        "execution_count": e.execution_count,
        "sandbox_id": id,
    })
}

fn event_line(ev: &Event<'_>, carry: &mut [Utf8Carry; 2]) -> Option<Bytes> {
    let v = match ev {
        Event::Stdout(b) => json!({"type": "stdout", "data": text(carry[0].take(b)?)}),
        Event::Stderr(b) => json!({"type": "stderr", "data": text(carry[1].take(b)?)}),
        Event::Result(r) => {
            let shown = r.data.get("text/plain").cloned().unwrap_or(Value::Null);
            json!({"type": "info", "data": shown})
        }
        Event::Error(e) => json!({"type": "error", "data": e.traceback}),
    };
    Some(line(&v))
}

/// Stream text; bytes that are not UTF-8 arrive as base64 and are shown replaced.
fn text((field, value): (&'static str, String)) -> String {
    if field == "text" {
        return value;
    }
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD
        .decode(&value)
        .unwrap_or_default();
    String::from_utf8_lossy(&b).into_owned()
}

fn end_lines(r: Result<Execution, crate::daemon::admission::Failed>, secs: f64) -> Vec<Bytes> {
    match r {
        Ok(e) => {
            let mut out = Vec::new();
            if e.error.is_none() && e.status != CellStatus::Ok {
                let err = error_of(&e, secs);
                out.push(line(&json!({"type": "error", "data": err["value"]})));
            }
            out.push(line(&json!({"type": "completed", "data": "",
                "result": value(&e), "success": e.status == CellStatus::Ok})));
            out
        }
        Err(_) => vec![
            line(&json!({"type": "error", "data": "the cell did not run"})),
            line(&json!({"type": "completed", "data": "", "success": false})),
        ],
    }
}

#[derive(Deserialize)]
struct ShellRequest {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    timeout: Option<f64>,
}

async fn shell(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Result<Response<Body>, Trouble> {
    let r: ShellRequest = body_json(ctx, req).await?;
    let o = run_command(ctx, s, argv(&r.command, &r.args)?, r.timeout, arrived).await?;
    let timed_out = timed_out(&o);
    Ok(json(
        StatusCode::OK,
        &json!({
            "output": String::from_utf8_lossy(&o.stdout_bytes()),
            "stderr": String::from_utf8_lossy(&o.stderr_bytes()),
            "exit_code": if timed_out { -1 } else { o.exit_code_for_cli() },
            "timed_out": timed_out,
        }),
    ))
}

/// A client path as a work-dir path: under `/workspace` (or relative) it is the work dir's;
/// any other absolute path is refused. `..` and the like are refused later, by the instance.
pub(crate) fn work_path(p: &str) -> Result<String, Trouble> {
    // The work dir's own name inside the sandbox is the same directory (the client's
    // execute_file checks its path from inside, where /workspace does not exist).
    let p = match p.strip_prefix(crate::defaults::WORK_DIR) {
        Some(r) if r.is_empty() || r.starts_with('/') => format!("{WORKSPACE}{r}"),
        _ => p.to_string(),
    };
    let p = p.as_str();
    let rel = match p.strip_prefix(WORKSPACE) {
        Some("") => "",
        Some(r) if r.starts_with('/') => r.trim_start_matches('/'),
        _ if p.starts_with('/') => {
            return Err(Trouble::new(
                StatusCode::BAD_REQUEST,
                format!("{p}: only paths under {WORKSPACE} (the sandbox's work dir) are served"),
            ))
        }
        _ => p,
    };
    Ok(rel.trim_end_matches('/').to_string())
}

/// Decodes `%XX` escapes until none is left (the client encodes the path twice): a path that
/// still has an escape after that is refused.
fn decode_fully(mut p: String) -> Result<String, Trouble> {
    for _ in 0..4 {
        if !p.contains('%') {
            return Ok(p);
        }
        p = percent_decode(&p).ok_or_else(|| {
            Trouble::new(
                StatusCode::BAD_REQUEST,
                "path: not valid percent-encoded UTF-8",
            )
        })?;
    }
    Err(Trouble::new(
        StatusCode::BAD_REQUEST,
        "path: still percent-encoded after four decodings",
    ))
}

fn file_trouble(e: crate::Error) -> Trouble {
    match &e {
        crate::Error::Path { reason, .. } if reason == crate::instance::NO_SUCH_FILE => {
            Trouble::new(StatusCode::NOT_FOUND, e.to_string())
        }
        crate::Error::Path { .. } | crate::Error::Invalid { .. } => {
            Trouble::new(StatusCode::BAD_REQUEST, e.to_string())
        }
        _ => Trouble::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn download(
    ctx: &Ctx,
    s: &Arc<Session>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, Trouble> {
    let raw = match query(req, "path") {
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(Trouble::new(StatusCode::BAD_REQUEST, "path: not valid")),
        None => return Err(Trouble::new(StatusCode::BAD_REQUEST, "path: required")),
    };
    let path = work_path(&decode_fully(raw)?)?;
    let name = path.rsplit('/').next().unwrap_or("file").to_string();
    let max = ctx.config.max_body as u64;
    let data = with_instance(s, move |i| i.get_file(&path, max))
        .await
        .ok_or_else(|| Trouble::new(StatusCode::NOT_FOUND, "the sandbox has ended"))?
        .map_err(file_trouble)?;
    let mut r = Response::new(whole(data));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace(['"', '\\'], "_")
    )) {
        r.headers_mut().insert("content-disposition", v);
    }
    Ok(r)
}

async fn upload(
    ctx: &Ctx,
    s: &Arc<Session>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Trouble> {
    let boundary = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::multipart::boundary)
        .ok_or_else(|| {
            Trouble::new(
                StatusCode::BAD_REQUEST,
                "a multipart/form-data body with a boundary is required",
            )
        })?;
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Trouble::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is over this daemon's limit of {} bytes (--max-body)",
                    ctx.config.max_body
                ),
            ))
        }
        Err(r) => return Err(Trouble::new(r.status(), "the body could not be read")),
    };
    let parts = super::multipart::parse(&body, &boundary)
        .map_err(|m| Trouble::new(StatusCode::BAD_REQUEST, m.to_string()))?;
    let file = parts
        .iter()
        .find(|p| p.name == "file")
        .ok_or_else(|| Trouble::new(StatusCode::BAD_REQUEST, "the form has no file field"))?;
    let dest = parts.iter().find(|p| p.name == "path").map_or_else(
        || WORKSPACE.to_string(),
        |p| String::from_utf8_lossy(&p.data).into(),
    );
    let filename = file.filename.clone().unwrap_or_else(|| "upload".into());
    let rel = work_path(&dest)?;
    // A directory (the client's default) takes the part's filename; else the full path.
    let data = file.data.clone();
    let size = data.len();
    let (target, rel2) = (rel.clone(), filename.clone());
    let written = with_instance(s, move |i| {
        let is_dir = target.is_empty() || i.list_dir(&target).is_ok() || dest.ends_with('/');
        let path = if is_dir {
            if target.is_empty() {
                rel2
            } else {
                format!("{target}/{rel2}")
            }
        } else {
            target
        };
        i.put_file(&path, &data, 0o644)?;
        Ok(path)
    })
    .await
    .ok_or_else(|| Trouble::new(StatusCode::NOT_FOUND, "the sandbox has ended"))?
    .map_err(file_trouble)?;
    let shown = format!("{WORKSPACE}/{written}");
    Ok(json(
        StatusCode::OK,
        &json!({"filename": written.rsplit('/').next().unwrap_or(&filename), "size": size,
            "path": shown, "message": "File uploaded successfully"}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths_map_to_the_work_dir() {
        assert_eq!(work_path("/workspace").unwrap(), "");
        assert_eq!(work_path("/workspace/a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(work_path("a.txt").unwrap(), "a.txt");
        assert_eq!(work_path("/home/sandbox/a.txt").unwrap(), "a.txt");
        assert!(work_path("/home/sandboxx").is_err());
        assert!(work_path("/etc/passwd").is_err());
        assert!(work_path("/workspacex/a").is_err());
    }

    #[test]
    fn paths_are_decoded_until_no_escape_is_left() {
        assert_eq!(decode_fully("%252e%252e%252fx".into()).unwrap(), "../x");
        assert_eq!(
            decode_fully("%2Fworkspace%2Fa".into()).unwrap(),
            "/workspace/a"
        );
        assert!(decode_fully("%25252525252e".into()).is_err());
        assert!(decode_fully("%zz".into()).is_err());
    }
}
