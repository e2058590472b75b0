//! A session's stateful contexts over HTTP: create, list, delete, restart and interrupt them
//! (`/v1/sessions/{id}/contexts...`), and run cells (`/v1/sessions/{id}/execute`), answered
//! whole or streamed as NDJSON.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::registry::new_id;
use super::Session;
use crate::daemon::admission::{in_slot, refusal_message, Failed};
use crate::daemon::cells::{self, event_line, Utf8Carry};
use crate::daemon::error::RequestError;
use crate::daemon::http::{
    engine_error, error, json, line, method_not_allowed, no_endpoint, read_json, unavailable,
    wants_ndjson, whole, Body,
};
use crate::daemon::native;
use crate::daemon::pool::Refused;
use crate::daemon::server::Ctx;
use crate::daemon::stream::stream_with;
use crate::{CellOptions, Context, ContextOptions, Error, Event, Execution};

/// The contexts of one session, and the ids of those deleted (410 rather than 404).
#[derive(Default)]
pub(crate) struct Contexts {
    live: BTreeMap<String, Arc<Context>>,
    ended: BTreeSet<String>,
    /// The context `execute` uses without a `context_id`, made on first use.
    default: Option<String>,
}

impl Contexts {
    /// Takes every context out (the session ended).
    pub(super) fn close(&mut self) -> Vec<Arc<Context>> {
        self.default = None;
        std::mem::take(&mut self.live).into_values().collect()
    }
}

/// `POST /v1/sessions/{id}/contexts`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
struct CreateRequest {
    language: Option<String>,
    /// false: the standard-library path even where IPython is importable.
    ipython: Option<bool>,
}

/// `POST /v1/sessions/{id}/execute`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    code: String,
    #[serde(default)]
    context_id: Option<String>,
    #[serde(default)]
    limits: ExecuteLimits,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
struct ExecuteLimits {
    /// Seconds; a cell's timeout interrupts it, then kills it.
    timeout: Option<f64>,
}

/// Routes `contexts...` and `execute` of a live session; None: not a context route.
pub(super) async fn route(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    sub: &str,
    arrived: Instant,
) -> Response<Body> {
    let m = req.method().clone();
    let parts: Vec<&str> = sub.split('/').collect();
    match (m, parts.as_slice()) {
        (Method::POST, ["execute"]) => execute(ctx, s, req, arrived).await,
        (Method::GET, ["contexts"]) => list(s),
        (Method::POST, ["contexts"]) => create(ctx, s, req).await,
        (Method::DELETE, ["contexts", cid]) => delete(s, cid).await,
        (Method::POST, ["contexts", cid, "restart"]) => restart(s, cid).await,
        (Method::POST, ["contexts", cid, "interrupt"]) => interrupt(s, cid).await,
        (m, ["execute" | "contexts"] | ["contexts", _, "restart" | "interrupt"]) => {
            method_not_allowed(&m, req.uri().path())
        }
        _ => no_endpoint(req.uri().path()),
    }
}

fn view(id: &str, c: &Context) -> serde_json::Value {
    json!({"id": id, "language": "python", "busy": c.is_busy()})
}

fn list(s: &Session) -> Response<Body> {
    let cs = s.contexts();
    let all: Vec<_> = cs.live.iter().map(|(id, c)| view(id, c)).collect();
    json(StatusCode::OK, &json!({"contexts": all}))
}

/// A context id that names no live context of the session.
pub(crate) enum Missing {
    Deleted,
    Unknown,
}

impl Missing {
    /// 410 for a deleted context, 404 for an id never seen.
    pub(crate) fn answer(self, s: &Session, cid: &str) -> Response<Body> {
        match self {
            Missing::Deleted => error(
                StatusCode::GONE,
                "context",
                format!("context {cid} was deleted"),
            ),
            Missing::Unknown => error(
                StatusCode::NOT_FOUND,
                "context",
                format!("no context {cid} in session {}", s.id),
            ),
        }
    }
}

/// The context `cid` of `s`.
pub(crate) fn lookup(s: &Session, cid: &str) -> Result<Arc<Context>, Missing> {
    let cs = s.contexts();
    match cs.live.get(cid) {
        Some(c) => Ok(c.clone()),
        None if cs.ended.contains(cid) => Err(Missing::Deleted),
        None => Err(Missing::Unknown),
    }
}

async fn create(ctx: &Arc<Ctx>, s: &Arc<Session>, req: Request<Incoming>) -> Response<Body> {
    let r = match read_json(req, ctx.config.max_body, |r: CreateRequest| {
        match r.language.as_deref() {
            None | Some("python" | "python3") => Ok(r),
            Some(other) => Err(RequestError::Value {
                field: "language",
                value: other.to_string(),
                reason: "is not offered: contexts run python",
            }),
        }
    })
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let opts = ContextOptions {
        ipython: r.ipython,
        ..Default::default()
    };
    match new_context(ctx, s, opts, false).await {
        Ok((id, _)) => json(
            StatusCode::CREATED,
            &json!({"id": id, "language": "python"}),
        ),
        Err(resp) => resp,
    }
}

/// Starts a context in the session (on the blocking pool: the interpreter starts now) and
/// registers it; `as_default`: it becomes the one `execute` uses without an id.
pub(crate) async fn new_context(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    opts: ContextOptions,
    as_default: bool,
) -> Result<(String, Arc<Context>), Response<Body>> {
    let max = ctx.sessions.config.max_contexts;
    if s.contexts().live.len() >= max {
        return Err(too_many(max));
    }
    let Some(_in_use) = s.begin() else {
        return Err(super::api::ended(ctx, &s.id));
    };
    let session = s.clone();
    let made = tokio::task::spawn_blocking(move || match session.instance() {
        Some(inst) => inst.context(opts),
        None => Err(Error::Gone),
    })
    .await
    .unwrap_or(Err(Error::Gone));
    let c = match made {
        Ok(c) => Arc::new(c),
        Err(Error::Gone) => return Err(super::api::ended(ctx, &s.id)),
        Err(e) => return Err(engine_error(&e)),
    };
    let id = new_id().map_err(|e| engine_error(&e))?;
    let mut cs = s.contexts();
    if cs.live.len() >= max {
        drop(cs);
        drop_blocking(c);
        return Err(too_many(max));
    }
    if as_default {
        if let Some(existing) = cs.default.as_ref().and_then(|d| cs.live.get(d)) {
            // Another request made the default meanwhile: use that one.
            let pair = (cs.default.clone().unwrap(), existing.clone());
            drop(cs);
            drop_blocking(c);
            return Ok(pair);
        }
        cs.default = Some(id.clone());
    }
    cs.live.insert(id.clone(), c.clone());
    Ok((id, c))
}

fn too_many(max: usize) -> Response<Body> {
    unavailable(
        "contexts",
        &format!("this session has {max} contexts, the most this daemon allows (--max-contexts)"),
    )
}

/// Drops a context on the blocking pool (ending its interpreter waits for its processes).
fn drop_blocking(c: Arc<Context>) {
    tokio::task::spawn_blocking(move || drop(c));
}

async fn delete(s: &Session, cid: &str) -> Response<Body> {
    match remove(s, cid).await {
        Ok(()) => {
            let mut r = Response::new(whole(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(m) => m.answer(s, cid),
    }
}

/// Deletes the context `cid` of `s`, ending its interpreter.
pub(crate) async fn remove(s: &Session, cid: &str) -> Result<(), Missing> {
    let c = {
        let mut cs = s.contexts();
        let Some(c) = cs.live.remove(cid) else {
            drop(cs);
            return lookup(s, cid).map(|_| ());
        };
        cs.ended.insert(cid.to_string());
        if cs.default.as_deref() == Some(cid) {
            cs.default = None;
        }
        c
    };
    let _ = tokio::task::spawn_blocking(move || drop(c)).await;
    Ok(())
}

/// The ids of the session's live contexts.
pub(crate) fn ids(s: &Session) -> Vec<String> {
    s.contexts().live.keys().cloned().collect()
}

async fn restart(s: &Session, cid: &str) -> Response<Body> {
    let c = match lookup(s, cid) {
        Ok(c) => c,
        Err(m) => return m.answer(s, cid),
    };
    match restart_context(c).await {
        Ok(()) => json(StatusCode::OK, &json!({"id": cid, "status": "idle"})),
        Err(e) => engine_error(&e),
    }
}

/// Starts a context's interpreter afresh (on the blocking pool).
pub(crate) async fn restart_context(c: Arc<Context>) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap_or(Err(Error::Gone))
}

async fn interrupt(s: &Session, cid: &str) -> Response<Body> {
    let c = match lookup(s, cid) {
        Ok(c) => c,
        Err(m) => return m.answer(s, cid),
    };
    match tokio::task::spawn_blocking(move || c.interrupt())
        .await
        .unwrap_or(Err(Error::Gone))
    {
        Ok(true) => json(StatusCode::OK, &json!({"id": cid, "status": "interrupted"})),
        Ok(false) => json(StatusCode::OK, &json!({"id": cid, "status": "idle"})),
        Err(e) => engine_error(&e),
    }
}

/// `POST /v1/sessions/{id}/execute`: one cell, in a daemon slot, after the context's earlier
/// cells; the whole answer, or (`Accept: application/x-ndjson`) its events as they happen.
async fn execute(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let stream = wants_ndjson(&req);
    let max = ctx.config.max.timeout;
    let r = match read_json(req, ctx.config.max_body, |r: ExecuteRequest| {
        let t = native::secs("limits.timeout", r.limits.timeout, default_timeout(), max)?;
        Ok((r, t))
    })
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (r, timeout) = r;
    let (cid, c) = match context_for(ctx, s, r.context_id.as_deref()).await {
        Ok(pair) => pair,
        Err(resp) => return resp,
    };
    let cell = Cell {
        code: r.code,
        opts: CellOptions::default(),
        timeout,
        arrived,
    };
    if stream {
        let end_cid = cid.clone();
        return stream_cell(
            ctx,
            s,
            c,
            cell,
            Box::new(event_line),
            line(&json!({"type": "keepalive"})),
            Box::new(move |r| vec![end_line(r, &end_cid)]),
        );
    }
    match run_cell(ctx, s, c, cell).await {
        Ok(e) => json(StatusCode::OK, &cells::answer(&e, &cid)),
        Err(resp) => resp,
    }
}

/// The session's default Python context, made on first use.
pub(crate) async fn default_context(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
) -> Result<(String, Arc<Context>), Response<Body>> {
    context_for(ctx, s, None).await
}

/// The context `cid` of the session, or (None) its default Python context, made on first use.
pub(crate) async fn context_for(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    cid: Option<&str>,
) -> Result<(String, Arc<Context>), Response<Body>> {
    if let Some(cid) = cid {
        return lookup(s, cid)
            .map(|c| (cid.to_string(), c))
            .map_err(|m| m.answer(s, cid));
    }
    let existing = {
        let cs = s.contexts();
        cs.default
            .as_ref()
            .and_then(|d| cs.live.get(d).map(|c| (d.clone(), c.clone())))
    };
    match existing {
        Some(pair) => Ok(pair),
        None => new_context(ctx, s, ContextOptions::default(), true).await,
    }
}

/// One cell to run: what every facade asks of a context.
pub(crate) struct Cell {
    pub(crate) code: String,
    pub(crate) opts: CellOptions,
    pub(crate) timeout: Duration,
    pub(crate) arrived: Instant,
}

/// Runs a cell in a daemon slot and answers when it is over (Err: the answer for a cell that
/// did not run, in the native shape).
pub(crate) async fn run_cell(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    c: Arc<Context>,
    cell: Cell,
) -> Result<Execution, Response<Body>> {
    let Some(in_use) = s.begin() else {
        return Err(super::api::ended(ctx, &s.id));
    };
    let Cell {
        code,
        opts,
        timeout,
        arrived,
    } = cell;
    let ran = in_slot(ctx, arrived, move |cancel, tx| {
        let _ = tx.send(c.execute_with(&code, &opts, Some(timeout), Some(cancel), &mut |_| {}));
    })
    .await;
    drop(in_use);
    ran.0.map_err(|f| failed(ctx, s, f))
}

/// The default cell timeout: the daemon's run default.
fn default_timeout() -> Duration {
    crate::defaults::TIMEOUT
}

/// The answer for a cell that did not run.
pub(crate) fn failed(ctx: &Ctx, s: &Session, f: Failed) -> Response<Body> {
    match f {
        Failed::Refused(r @ Refused::QueueFull) => unavailable("queue", refusal_message(&r)),
        Failed::Refused(Refused::Closed) | Failed::Engine(Error::Gone) => {
            super::api::ended(ctx, &s.id)
        }
        Failed::Engine(e) => engine_error(&e),
    }
}

/// How a facade writes a streamed cell's event (None: nothing to send yet).
pub(crate) type EventLine = Box<dyn FnMut(&Event<'_>, &mut [Utf8Carry; 2]) -> Option<Bytes> + Send>;
/// How a facade ends a streamed cell: its last lines.
pub(crate) type EndLines = Box<dyn FnOnce(Result<Execution, Failed>) -> Vec<Bytes> + Send>;

/// Streams a cell: output, results and errors as lines while it runs (`event`), `keepalive`
/// while it is silent, then the `end` lines. A client that goes away drops the body: the cell
/// is interrupted (its slot's `Cancel` fires as the work's future is dropped).
pub(crate) fn stream_cell(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    c: Arc<Context>,
    cell: Cell,
    mut event: EventLine,
    keepalive: Bytes,
    end: EndLines,
) -> Response<Body> {
    let Some(in_use) = s.begin() else {
        return super::api::ended(ctx, &s.id);
    };
    let ctx = ctx.clone();
    stream_with(keepalive, move |lines| async move {
        let Cell {
            code,
            opts,
            timeout,
            arrived,
        } = cell;
        let work = in_slot(&ctx, arrived, move |cancel, done| {
            let mut carry = [Utf8Carry::default(), Utf8Carry::default()];
            let r = c.execute_with(&code, &opts, Some(timeout), Some(cancel), &mut |ev| {
                if let Some(l) = event(&ev, &mut carry) {
                    if !lines.send_blocking(l) {
                        cancel.cancel();
                    }
                }
            });
            let _ = done.send(r);
        });
        let r = work.await.0;
        drop(in_use);
        end(r)
    })
}

fn end_line(r: Result<Execution, Failed>, cid: &str) -> Bytes {
    match r {
        Ok(e) => {
            let mut v = cells::answer(&e, cid);
            v["type"] = json!("end");
            line(&v)
        }
        Err(f) => {
            let message = match f {
                Failed::Refused(r) => refusal_message(&r).to_string(),
                Failed::Engine(e) => e.to_string(),
            };
            line(&json!({"type": "end", "status": "failed", "message": message}))
        }
    }
}
