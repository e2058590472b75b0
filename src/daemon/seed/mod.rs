//! The seed systems' own clients, served unchanged on the same listener: microsandbox's JSON-RPC
//! (`msb`), AI Computer's REST API (`aic`) and E2B's code interpreter in debug mode (`e2b`).
//! Each is a thin shape over the same sessions and contexts as `/v1/sessions`: one way to run
//! a cell (`session::contexts::{run_cell, stream_cell}`) or a command (`session::run`), many
//! shapes on the wire. What they share lives here: a session's spec from a client's few
//! limits, creating one, and running a command in it.

pub(crate) mod aic;
pub(crate) mod e2b;
pub(crate) mod msb;
mod multipart;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;

use super::admission::{refusal_message, Failed};
use super::native::{self, LimitsIn, RunRequest};
use super::pool::Refused;
use super::server::Ctx;
use super::session::{self, Lookup, Refusal, Session, Spec};
use crate::{Outcome, Status};

/// Why a facade's request failed, for the facade to put in its own error shape.
#[derive(Debug)]
pub(crate) struct Trouble {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl Trouble {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Trouble {
        Trouble {
            status,
            message: message.into(),
        }
    }
}

/// The spec of a session a seed client asks for: the daemon's default limits, with `memory_mb`
/// and `cpus` when the client gives them (clamped to the maxima, as the other compatible
/// APIs do), no network (the native default), the daemon's idle timeout and lifetime.
pub(crate) fn spec(
    ctx: &Ctx,
    api: &'static str,
    name: Option<String>,
    memory_mb: Option<u64>,
    cpus: Option<f64>,
) -> Result<Spec, Trouble> {
    let max = &ctx.config.max;
    let limits = LimitsIn {
        memory_mb: memory_mb.map(|m| m.clamp(16, max.memory >> 20)),
        cpus: cpus.map(|c| c.clamp(0.01, max.cpus)),
        ..Default::default()
    };
    let policy = native::policy(&limits, None, max)
        .map_err(|e| Trouble::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let c = &ctx.sessions.config;
    Ok(Spec {
        policy,
        env: Vec::new(),
        idle: c.idle,
        lifetime: c.lifetime,
        api,
        name,
    })
}

/// Creates a session of `spec`: 503 when the daemon is full, 500 when the engine failed.
pub(crate) async fn create(ctx: &Arc<Ctx>, spec: Spec) -> Result<Arc<Session>, Trouble> {
    session::create(ctx, spec).await.map_err(|r| match r {
        Refusal::Full(m) => Trouble::new(StatusCode::SERVICE_UNAVAILABLE, m.to_string()),
        Refusal::Engine(e) => Trouble::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("creating the sandbox: {e}"),
        ),
    })
}

/// A command's argv: the program and its arguments as given; without arguments the command
/// is a shell command line (`sh -c`), as the clients' users write it.
pub(crate) fn argv(command: &str, args: &[String]) -> Result<Vec<String>, Trouble> {
    if command.trim().is_empty() {
        return Err(Trouble::new(
            StatusCode::BAD_REQUEST,
            "command: an empty command",
        ));
    }
    Ok(if args.is_empty() {
        vec!["/bin/sh".into(), "-c".into(), command.into()]
    } else {
        std::iter::once(command.to_string())
            .chain(args.iter().cloned())
            .collect()
    })
}

/// Runs `argv` in the session's work dir (after its earlier runs, in a daemon slot) within
/// `timeout` seconds (default: the daemon's run default; above the maximum: clamped).
pub(crate) async fn run_command(
    ctx: &Arc<Ctx>,
    s: &Arc<Session>,
    argv: Vec<String>,
    timeout: Option<f64>,
    arrived: Instant,
) -> Result<Outcome, Trouble> {
    let timeout = timeout.map(|t| super::compat::clamp_secs(t, ctx.config.max.timeout));
    let run = RunRequest {
        argv: Some(argv),
        limits: LimitsIn {
            timeout: timeout.map(|t| t.as_secs_f64()),
            ..Default::default()
        },
        ..Default::default()
    };
    let job = native::to_session_job(run, &ctx.config.max)
        .map_err(|e| Trouble::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let internal = |m: String| Trouble::new(StatusCode::INTERNAL_SERVER_ERROR, m);
    match session::run(ctx, s, job, arrived).await {
        Some((Ok(done), _)) => done.run.ok_or_else(|| internal("no report".into())),
        Some((Err(Failed::Refused(r @ Refused::QueueFull)), _)) => Err(Trouble::new(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal_message(&r),
        )),
        Some((Err(Failed::Refused(Refused::Closed)), _)) | None => match ctx.sessions.lookup(&s.id)
        {
            Lookup::Live(_) => Err(Trouble::new(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal_message(&Refused::Closed),
            )),
            _ => Err(Trouble::new(StatusCode::NOT_FOUND, "the sandbox has ended")),
        },
        Some((Err(Failed::Engine(e)), _)) => Err(internal(e.to_string())),
    }
}

/// Whether a command's report says its time ran out.
pub(crate) fn timed_out(o: &Outcome) -> bool {
    matches!(o.status, Status::Timeout | Status::CpuTime)
}

/// A cell's timeout from a client's seconds: the daemon's default without one, clamped to the
/// maximum (a client that asks for more gets what the daemon allows, as on `/run_code`).
pub(crate) fn cell_timeout(ctx: &Ctx, secs: Option<f64>) -> Duration {
    match secs {
        Some(t) if t > 0.0 => super::compat::clamp_secs(t, ctx.config.max.timeout),
        _ => crate::defaults::TIMEOUT.min(ctx.config.max.timeout),
    }
}

/// Whether a client's name is one microsandbox and E2B accept:
/// `[A-Za-z0-9][A-Za-z0-9_-]{0,62}`.
pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_microsandboxs_rule() {
        assert!(valid_name("a") && valid_name("sandbox-1a2b_c"));
        assert!(valid_name(&"a".repeat(63)) && !valid_name(&"a".repeat(64)));
        for bad in ["", "-a", "_a", "a/b", "a b", "..", "a.b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn commands_without_arguments_are_shell_lines() {
        assert_eq!(argv("ls -l", &[]).unwrap(), ["/bin/sh", "-c", "ls -l"]);
        assert_eq!(argv("ls", &["-l".into()]).unwrap(), ["ls", "-l"]);
        assert!(argv(" ", &[]).is_err());
    }
}
