//! Keeping web pages away from the compatible APIs. A browser lets any page send requests to a
//! loopback daemon (a form post, `fetch` without reading the answer, a websocket, which the
//! same-origin policy does not cover), and DNS rebinding lets a page of its own origin reach
//! it by a name it controls. A browser always says where a request comes from (`Origin`) and
//! which name it dialled (`Host`); other clients send no `Origin`. So on every compatible route
//! a request from another origin is refused, and under `--no-auth` (no token to stand in the
//! way) so is a request that dialled any name but a loopback address or `localhost`.

use hyper::header::{HOST, ORIGIN};
use hyper::{Request, StatusCode};

use super::http::{error, Body};

/// The compatible APIs' routes: each entry is a path, or a prefix ending in `/`. The one list
/// the checks apply to; a new compatible API adds its routes here.
pub(crate) const COMPAT_ROUTES: &[&str] = &[
    // Jupyter Server (`/api/kernels...`), microsandbox (`/api/v1/rpc`), AI Computer
    // (`/api/v1/sandbox/...`).
    "/api",
    "/api/",
    // AI Computer's token route.
    "/dev/token",
    // E2B (`/execute`, `/contexts...`, `/health`) and Maze (`/execute/{id}`).
    "/execute",
    "/execute/",
    "/contexts",
    "/contexts/",
    "/health",
    // Maze.
    "/create_session",
    "/close/",
    // SandboxFusion.
    "/run_code",
    "/run_jupyter",
    "/v1/ping",
];

/// Whether `path` is one of the compatible APIs' routes.
pub(crate) fn is_compat(path: &str) -> bool {
    COMPAT_ROUTES.iter().any(|r| {
        if r.ends_with('/') {
            path.starts_with(r)
        } else {
            path == *r
        }
    })
}

/// Whether `host` (a Host header's value: a name or address, maybe with a port) names this
/// machine's loopback: `localhost`, a name under `.localhost`, 127.0.0.0/8 or `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, port)) if port.is_empty() || port.starts_with(':') => addr,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// Whether `origin` (an Origin header's value) is the origin of a page served by `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The 403 for a request a browser may have sent on a page's behalf; `None`: it may go on.
/// `no_auth_tcp`: the request came over TCP to a daemon without a token.
pub(crate) fn refuse<B>(req: &Request<B>, no_auth_tcp: bool) -> Option<hyper::Response<Body>> {
    if !is_compat(req.uri().path()) {
        return None;
    }
    let host = req
        .headers()
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !same_origin(&origin, &host) {
            return Some(error(
                StatusCode::FORBIDDEN,
                "access",
                format!(
                    "the Origin header {origin:?} is not this daemon's origin (http://{host}): \
                     web pages may not use the compatible APIs"
                ),
            ));
        }
    }
    if no_auth_tcp && !is_loopback_host(&host) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "access",
            format!(
                "the Host header {host:?} is not a loopback address or localhost: without a \
                 token (--no-auth) the compatible APIs answer only those (DNS rebinding)"
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn compat_routes_are_listed_and_native_ones_are_not() {
        for p in [
            "/api/kernels",
            "/api/v1/rpc",
            "/dev/token",
            "/execute",
            "/execute/abc",
            "/contexts/x/restart",
            "/health",
            "/close/abc",
            "/run_code",
        ] {
            assert!(is_compat(p), "{p}");
        }
        for p in ["/v1/run", "/v1/sessions", "/metrics", "/apix", "/executex"] {
            assert!(!is_compat(p), "{p}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8888",
            "LOCALHOST.",
            "a.localhost:1",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:8888",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:80",
            "[::2]:1",
            "[::1]x",
            "localhost:80x",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn other_origins_and_rebound_hosts_are_refused() {
        let own = [
            ("host", "127.0.0.1:8888"),
            ("origin", "http://127.0.0.1:8888"),
        ];
        assert!(refuse(&req("/api/kernels", &own), true).is_none());
        let hostile = [
            ("host", "127.0.0.1:8888"),
            ("origin", "http://evil.example"),
        ];
        assert!(refuse(&req("/api/kernels", &hostile), false).is_some());
        assert!(refuse(&req("/v1/run", &hostile), false).is_none());
        let null = [("host", "localhost"), ("origin", "null")];
        assert!(refuse(&req("/execute", &null), false).is_some());
        // DNS rebinding: the page's own origin, a name that is not loopback.
        let rebound = [
            ("host", "evil.example:8888"),
            ("origin", "http://evil.example:8888"),
        ];
        assert!(refuse(&req("/api/kernels", &rebound), true).is_some());
        assert!(refuse(&req("/api/kernels", &rebound), false).is_none());
        assert!(refuse(&req("/api/kernels", &[("host", "localhost")]), true).is_none());
    }
}
