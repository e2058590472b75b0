//! The Jupyter Server kernels API, so that any Jupyter client (Datalayer's code-sandboxes,
//! jupyter_kernel_client, ...) drives rsandbox kernels: `/api/status`, `/api/kernelspecs`,
//! `/api/kernels[/{id}[/interrupt|/restart]]` here, the kernel's websocket
//! (`/api/kernels/{id}/channels`) in `ws`, its messages in `msg`. A kernel is a session made
//! through this API (`"api": "jupyter"` in `/v1/sessions`) with one Python context; its id is
//! the session's. Errors have Jupyter Server's shape, `{"message", "reason"}`.

mod msg;
mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{json, read_body, whole, Body};
use super::native::{self, LimitsIn};
use super::server::Ctx;
use super::session::{self, Ended, Lookup, Refusal, Session, Spec};
use crate::{Context, Error};

/// The one kernel spec.
const SPEC_NAME: &str = "python3";

/// One kernel: its session, its context, its open websockets.
pub(crate) struct Kernel {
    session: Arc<Session>,
    context: Arc<Context>,
    connections: AtomicUsize,
    /// The last cell's execution count.
    count: AtomicU64,
}

impl Kernel {
    fn id(&self) -> &str {
        &self.session.id
    }

    /// Jupyter Server's kernel model.
    fn model(&self) -> Value {
        let v = self.session.view(None);
        let last = v["last_used_at"].as_f64().unwrap_or(0.0);
        let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(last.max(0.0));
        json!({
            "id": self.id(),
            "name": SPEC_NAME,
            "last_activity": msg::iso8601(last),
            "execution_state": if self.context.is_busy() { "busy" } else { "idle" },
            "connections": self.connections.load(Ordering::SeqCst),
        })
    }
}

/// The kernels made through this API, by id (their sessions may have ended meanwhile).
#[derive(Default)]
pub(crate) struct Kernels(Mutex<HashMap<String, Arc<Kernel>>>);

impl Kernels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Kernel>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live kernels, oldest first; forgets those whose session ended.
    fn live(&self, ctx: &Ctx) -> Vec<Arc<Kernel>> {
        let mut all = self.lock();
        all.retain(|id, _| matches!(ctx.sessions.lookup(id), Lookup::Live(_)));
        let mut v: Vec<Arc<Kernel>> = all.values().cloned().collect();
        v.sort_by(|a, b| {
            a.session.view(None)["created_at"]
                .as_f64()
                .partial_cmp(&b.session.view(None)["created_at"].as_f64())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        v
    }

    /// The live kernel `id`.
    fn get(&self, ctx: &Ctx, id: &str) -> Option<Arc<Kernel>> {
        let k = self.lock().get(id).cloned()?;
        match ctx.sessions.lookup(id) {
            Lookup::Live(_) => Some(k),
            _ => {
                self.lock().remove(id);
                None
            }
        }
    }
}

/// Jupyter Server's error shape.
fn failure(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(code, &json!({"message": message.into(), "reason": null}))
}

fn no_kernel(id: &str) -> Response<Body> {
    failure(
        StatusCode::NOT_FOUND,
        format!("Kernel does not exist: {id}"),
    )
}

fn empty(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(whole(Bytes::new()));
    *r.status_mut() = code;
    r
}

/// Answers a request under `/api`.
pub(crate) async fn route(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(2).collect();
    let m = req.method().clone();
    match (&m, parts.as_slice()) {
        (&Method::GET, ["status"]) => status(&ctx),
        (&Method::GET, ["kernelspecs"]) => json(StatusCode::OK, &kernelspecs()),
        (&Method::GET, ["kernelspecs", name]) if *name == SPEC_NAME => {
            json(StatusCode::OK, &kernelspecs()["kernelspecs"][SPEC_NAME])
        }
        (&Method::GET, ["kernels"]) => {
            let all: Vec<Value> = ctx.kernels.live(&ctx).iter().map(|k| k.model()).collect();
            json(StatusCode::OK, &all)
        }
        (&Method::POST, ["kernels"]) => start(&ctx, req).await,
        (&Method::GET, ["kernels", id]) => match ctx.kernels.get(&ctx, id) {
            Some(k) => json(StatusCode::OK, &k.model()),
            None => no_kernel(id),
        },
        (&Method::DELETE, ["kernels", id]) => {
            if ctx.kernels.get(&ctx, id).is_none() {
                return no_kernel(id);
            }
            shut_down(&ctx, id).await;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["kernels", id, "interrupt"]) => match ctx.kernels.get(&ctx, id) {
            Some(k) => {
                let c = k.context.clone();
                let _ = tokio::task::spawn_blocking(move || c.interrupt()).await;
                empty(StatusCode::NO_CONTENT)
            }
            None => no_kernel(id),
        },
        (&Method::POST, ["kernels", id, "restart"]) => match ctx.kernels.get(&ctx, id) {
            Some(k) => {
                let c = k.context.clone();
                match tokio::task::spawn_blocking(move || c.restart())
                    .await
                    .unwrap_or(Err(Error::Gone))
                {
                    Ok(()) => json(StatusCode::OK, &k.model()),
                    Err(e) => failure(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("restarting kernel {id}: {e}"),
                    ),
                }
            }
            None => no_kernel(id),
        },
        (&Method::GET, ["kernels", id, "channels"]) => match ctx.kernels.get(&ctx, id) {
            Some(k) => ws::upgrade(ctx.clone(), k, req),
            None => no_kernel(id),
        },
        (m, ["status" | "kernelspecs" | "kernels"] | ["kernels", _]) => failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed on {path}"),
        ),
        (m, ["kernels", _, "interrupt" | "restart" | "channels"]) => failure(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed on {path}"),
        ),
        _ => failure(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path} (see api/openapi.yaml)"),
        ),
    }
}

/// Ends kernel `id`: its session, its context, and (as their reads end) its websockets.
async fn shut_down(ctx: &Ctx, id: &str) {
    ctx.kernels.lock().remove(id);
    session::end(ctx, id, Ended::Deleted).await;
}

fn status(ctx: &Ctx) -> Response<Body> {
    let kernels = ctx.kernels.live(ctx);
    let started = SystemTime::now() - ctx.started.elapsed();
    json(
        StatusCode::OK,
        &json!({
            "started": msg::iso8601(started),
            "last_activity": msg::iso8601(SystemTime::now()),
            "connections": kernels.iter().map(|k| k.connections.load(Ordering::SeqCst)).sum::<usize>(),
            "kernels": kernels.len(),
        }),
    )
}

fn kernelspecs() -> Value {
    json!({
        "default": SPEC_NAME,
        "kernelspecs": {SPEC_NAME: {
            "name": SPEC_NAME,
            "spec": {
                "argv": [],
                "display_name": "Python 3 (rsandbox)",
                "language": "python",
                "interrupt_mode": "message",
                "env": {},
                "metadata": {},
            },
            "resources": {},
        }},
    })
}

/// `POST /api/kernels`'s body (Jupyter Server's; unknown fields are ignored, as it does).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct StartRequest {
    name: Option<String>,
}

/// `POST /api/kernels`: a new session with the daemon's default limits and its context.
async fn start(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return failure(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        }
    };
    if let Some(name) = r
        .name
        .as_deref()
        .filter(|n| !matches!(*n, SPEC_NAME | "python"))
    {
        return failure(
            StatusCode::NOT_FOUND,
            format!("No such kernel named {name}: this daemon offers {SPEC_NAME}"),
        );
    }
    let policy = match native::policy(&LimitsIn::default(), None, &ctx.config.max) {
        Ok(p) => p,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let c = &ctx.sessions.config;
    let spec = Spec {
        policy,
        env: Vec::new(),
        idle: c.idle,
        lifetime: c.lifetime,
        api: "jupyter",
        name: None,
    };
    let s = match session::create(ctx, spec).await {
        Ok(s) => s,
        Err(Refusal::Full(f)) => return failure(StatusCode::SERVICE_UNAVAILABLE, f.to_string()),
        Err(Refusal::Engine(e)) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("starting a kernel: {e}"),
            )
        }
    };
    let context = match session::default_context(ctx, &s).await {
        Ok((_, c)) => c,
        Err(resp) => {
            session::end(ctx, &s.id, Ended::Deleted).await;
            return resp;
        }
    };
    let k = Arc::new(Kernel {
        session: s,
        context,
        connections: AtomicUsize::new(0),
        count: AtomicU64::new(0),
    });
    ctx.kernels.lock().insert(k.id().to_string(), k.clone());
    let mut resp = json(StatusCode::CREATED, &k.model());
    if let Ok(loc) = hyper::header::HeaderValue::from_str(&format!("/api/kernels/{}", k.id())) {
        resp.headers_mut().insert(hyper::header::LOCATION, loc);
    }
    resp
}
