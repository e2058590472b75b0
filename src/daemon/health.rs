//! What the daemon says about itself: `GET /v1/health` (can it run sandboxes, with what, how
//! busy) and `GET /metrics` (Prometheus text: runs, queue, warm pools, sessions, the process).

use std::fmt::Write;
use std::path::Path;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::http::{json, Body};
use super::lang;
use super::native::{to_job, RunRequest};
use super::server::Ctx;
use crate::Error;

/// `GET /v1/health`.
pub(crate) fn health(ctx: &Ctx) -> Response<Body> {
    // The default policy's sandbox, built once and cached like every request's.
    let sb = match to_job(RunRequest::default_code(), &ctx.config.max) {
        Ok(job) => ctx.sandboxes.get(&job.policy),
        Err(m) => Err(Error::Invalid {
            field: "maxima",
            message: m.to_string(),
        }),
    };
    let max = &ctx.config.max;
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
                "timeout": max.timeout.as_secs_f64(),
                "memory_mb": max.memory >> 20,
                "pids": max.pids,
                "cpus": max.cpus,
            },
        }),
    )
}

/// `GET /metrics`.
pub(crate) fn metrics(ctx: &Ctx) -> Response<Body> {
    let mut out = String::new();
    ctx.pool.metrics(&mut out);
    ctx.sandboxes.metrics(&mut out);
    ctx.sessions.metrics(&mut out);
    egress_metrics(&mut out);
    process_metrics(&mut out);
    let mut r = Response::new(crate::daemon::http::whole(out));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The egress proxies' decisions and bytes, every instance of this daemon together.
fn egress_metrics(out: &mut String) {
    use std::fmt::Write;
    let t = crate::egress::totals();
    let _ = writeln!(out, "# HELP rsandbox_egress_decisions_total Proxy requests by the allowlist's decision.\n# TYPE rsandbox_egress_decisions_total counter\nrsandbox_egress_decisions_total{{decision=\"allowed\"}} {}\nrsandbox_egress_decisions_total{{decision=\"denied\"}} {}", t.allowed, t.denied);
    let _ = writeln!(out, "# HELP rsandbox_egress_bytes_total Bytes relayed by the egress proxies, out of instances (up) and into them (down).\n# TYPE rsandbox_egress_bytes_total counter\nrsandbox_egress_bytes_total{{direction=\"up\"}} {}\nrsandbox_egress_bytes_total{{direction=\"down\"}} {}", t.bytes_up, t.bytes_down);
}

/// This process's figures for `/metrics`: RSS, fds, threads, its memory cgroup's usage.
fn process_metrics(out: &mut String) {
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

/// A number in a cgroup file.
fn number(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Memory charged to the daemon and its instances: the cgroup they are made beneath
/// (`memory.current` on v2, the memory hierarchy's `memory.usage_in_bytes` on v1). When that is
/// a v2 root cgroup, which has no `memory.current`, the sum over its `rsandbox-*` children: the
/// daemon's own leaf and its instances.
fn cgroup_memory() -> Option<(&'static str, u64)> {
    let setup = crate::cgroup::setup().as_ref().ok()?;
    let (file, dir) = setup.memory_usage_file()?;
    if let Some(v) = number(&dir.join(file)) {
        return Some((file, v));
    }
    if !setup.is_v2() {
        return None;
    }
    // A root cgroup has no memory.current: add up rsandbox's own cgroups beneath it.
    let sum = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rsandbox-"))
        .filter_map(|e| number(&e.path().join(file)))
        .sum();
    Some((file, sum))
}
