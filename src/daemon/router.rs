//! Who may ask (peer credentials on the Unix socket, a bearer token on TCP; Jupyter's token
//! forms on `/api/*`; no web page on the compatible APIs) and which handler answers each
//! method and path.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};

use super::http::{error, json, method_not_allowed, no_endpoint, Body};
use super::seed::{aic, e2b, msb};
use super::server::Ctx;
use super::{browser, compat, health, jupyter, listen, maze, native, run_jupyter, session};

/// Where a connection came from, as far as access checks go.
#[derive(Clone, Copy)]
pub(crate) enum Peer {
    Unix { allowed: bool, uid: u32 },
    Tcp,
}

/// The answer to a client that may not use the daemon; `None`: it may.
fn refuse(ctx: &Ctx, peer: Peer, req: &Request<Incoming>) -> Option<Response<Body>> {
    match peer {
        Peer::Unix {
            allowed: false,
            uid,
        } => Some(error(
            StatusCode::FORBIDDEN,
            "access",
            format!(
                "uid {uid} may not use this daemon (peer credentials: owner, root or the --group)"
            ),
        )),
        Peer::Tcp => {
            let token = ctx.config.token.as_ref()?;
            let presented = presented_token(req);
            if presented.is_some_and(|p| listen::token_matches(&p, token.as_bytes())) {
                return None;
            }
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "access",
                "a bearer token is required (Authorization: Bearer TOKEN)",
            );
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Peer::Unix { .. } => None,
    }
}

/// The token a request presents: `Authorization: Bearer T`; on the Jupyter API (`/api/*`)
/// also `Authorization: token T` and `?token=T`, as Jupyter clients send it.
fn presented_token(req: &Request<Incoming>) -> Option<Vec<u8>> {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if let Some(t) = header.and_then(|v| v.strip_prefix(b"Bearer ")) {
        return Some(t.to_vec());
    }
    if !req.uri().path().starts_with("/api/") {
        return None;
    }
    if let Some(t) = header.and_then(|v| v.strip_prefix(b"token ")) {
        return Some(t.to_vec());
    }
    super::http::query(req, "token").and_then(|t| t.ok().map(String::into_bytes))
}

/// Answers one request.
pub(crate) async fn route(ctx: Arc<Ctx>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let arrived = Instant::now();
    let no_auth_tcp = matches!(peer, Peer::Tcp) && ctx.config.token.is_none();
    if let Some(refusal) = browser::refuse(&req, no_auth_tcp) {
        return refusal;
    }
    if let Some(refusal) = refuse(&ctx, peer, &req) {
        return refusal;
    }
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/v1/run") => native::v1_run(ctx, req, arrived).await,
        (&Method::POST, "/run_code") => compat::run_code(ctx, req, arrived).await,
        (&Method::POST, "/run_jupyter") => run_jupyter::run_jupyter(ctx, req, arrived).await,
        (&Method::GET, "/v1/health") => health::health(&ctx),
        (&Method::GET, "/v1/ping") => json(StatusCode::OK, &"pong"),
        (&Method::GET, "/metrics") => health::metrics(&ctx),
        (_, "/v1/sessions") => session::api::route(ctx, req, "", arrived).await,
        (_, p) if p.starts_with("/v1/sessions/") => {
            session::api::route(ctx, req, &path["/v1/sessions".len()..], arrived).await
        }
        (&Method::POST, "/create_session") => maze::create(ctx, req).await,
        (&Method::POST, p) if p.starts_with("/execute/") => {
            maze::execute(ctx, req, &path["/execute/".len()..], arrived).await
        }
        (&Method::DELETE, p) if p.starts_with("/close/") => {
            maze::close(ctx, &path["/close/".len()..]).await
        }
        (&Method::POST, "/api/v1/rpc") => msb::rpc(ctx, req, arrived).await,
        (&Method::GET, "/api/v1/health") => msb::health(),
        (&Method::POST, "/dev/token") => aic::token(&ctx),
        (_, p) if p.starts_with("/api/v1/sandbox/") => {
            aic::route(ctx, req, &path["/api/v1/sandbox".len()..], arrived).await
        }
        (&Method::GET, "/health") => e2b::health(),
        (_, "/execute" | "/contexts") => e2b::route(ctx, req, arrived).await,
        (_, p) if p.starts_with("/contexts/") => e2b::route(ctx, req, arrived).await,
        // After microsandbox's and AI Computer's /api/v1/... routes: the rest of /api/* is
        // Jupyter Server's.
        (_, p) if p == "/api" || p.starts_with("/api/") => jupyter::route(ctx, req).await,
        (
            m,
            "/v1/run" | "/run_code" | "/run_jupyter" | "/v1/health" | "/v1/ping" | "/metrics"
            | "/create_session" | "/api/v1/rpc" | "/api/v1/health" | "/dev/token" | "/health",
        ) => method_not_allowed(m, &path),
        _ => no_endpoint(&path),
    }
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
            "/v1/sessions/{id}/contexts",
            "/v1/sessions/{id}/contexts/{context_id}",
            "/v1/sessions/{id}/contexts/{context_id}/restart",
            "/v1/sessions/{id}/contexts/{context_id}/interrupt",
            "/v1/sessions/{id}/execute",
            "/run_jupyter",
            "/create_session",
            "/execute/{session_id}",
            "/close/{session_id}",
            "/api/status",
            "/api/kernelspecs",
            "/api/kernels",
            "/api/kernels/{kernel_id}",
            "/api/kernels/{kernel_id}/interrupt",
            "/api/kernels/{kernel_id}/restart",
            "/api/kernels/{kernel_id}/channels",
            "/api/v1/rpc",
            "/api/v1/health",
            "/dev/token",
            "/api/v1/sandbox/create",
            "/api/v1/sandbox/{sandbox_id}",
            "/api/v1/sandbox/{sandbox_id}/status",
            "/api/v1/sandbox/{sandbox_id}/execute",
            "/api/v1/sandbox/{sandbox_id}/execute/stream",
            "/api/v1/sandbox/{sandbox_id}/execute/file/stream",
            "/api/v1/sandbox/{sandbox_id}/execute/shell",
            "/api/v1/sandbox/{sandbox_id}/files/upload",
            "/api/v1/sandbox/{sandbox_id}/files",
            "/execute",
            "/contexts",
            "/contexts/{context_id}",
            "/contexts/{context_id}/restart",
            "/health",
        ] {
            assert!(
                spec.contains(&format!("\n  {path}:\n")),
                "{path} is missing from api/openapi.yaml"
            );
        }
    }

    /// The report's fields and the egress settings are described: every key of a report, the
    /// network modes, `allowed_hosts`, the proxy's figures and its metrics.
    #[test]
    fn the_openapi_file_describes_the_report_and_egress() {
        let spec = include_str!("../../api/openapi.yaml");
        let report = spec
            .split("\n    Report:\n")
            .nth(1)
            .and_then(|r| r.split("\n    RunResponse:").next())
            .expect("a Report schema");
        let mut out: crate::Outcome =
            serde_json::from_str(include_str!("../../tests/data/report-ok.json")).unwrap();
        out.network = Some(Default::default());
        let v = serde_json::to_value(&out).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(
                report.contains(&format!("\n        {key}:")),
                "the report's {key} is missing from api/openapi.yaml"
            );
        }
        for key in v["network"].as_object().unwrap().keys() {
            assert!(
                report.contains(&format!("\n            {key}:")),
                "network.{key}"
            );
        }
        assert_eq!(
            spec.matches("enum: [none, loopback, allowlist, all]")
                .count(),
            3
        );
        assert_eq!(spec.matches("\n            allowed_hosts:").count(), 3);
        for m in [
            "rsandbox_egress_decisions_total",
            "rsandbox_egress_bytes_total",
        ] {
            assert!(spec.contains(m), "{m}");
        }
    }
}
