//! SandboxFusion compatibility: `POST /run_code` and `GET /v1/ping`, byte-compatible with its
//! request and response, on the same listener and with the same isolation as `/v1/run`.
//! Program failures are HTTP 200 with status `Failed`; `SandboxError` is only for faults of
//! the sandbox (or a language this host cannot run), never for the user's code. Limits above
//! the daemon's maxima are clamped, not refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::admission::{refused, run_job, Failed};
use super::error::RequestError;
use super::http::{json, read_body, unprocessable, Body};
use super::job::{Done, Job, Policy};
use super::lang::{self, LangError};
use super::native::{check_file_path, program_steps};
use super::server::Ctx;
use super::Maxima;
use crate::{Error, Outcome, Status};

fn ten() -> f64 {
    10.0
}
fn minus_one() -> f64 {
    -1.0
}

/// SandboxFusion's `RunCodeRequest`. Unknown fields are ignored, as pydantic does.
#[derive(Deserialize, Debug)]
pub(crate) struct RunCodeRequest {
    #[serde(default = "ten")]
    pub(crate) compile_timeout: f64,
    #[serde(default = "ten")]
    pub(crate) run_timeout: f64,
    #[serde(default = "minus_one", rename = "memory_limit_MB")]
    pub(crate) memory_limit_mb: f64,
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    pub(crate) language: String,
    /// Path -> base64 content (`null`: skipped).
    #[serde(default)]
    pub(crate) files: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub(crate) fetch_files: Vec<String>,
}

/// SandboxFusion's `CommandRunResult`.
#[derive(Serialize, Debug, PartialEq)]
pub(crate) struct CommandRunResult {
    pub(crate) status: &'static str,
    pub(crate) execution_time: Option<f64>,
    pub(crate) return_code: Option<i32>,
    pub(crate) stdout: Option<String>,
    pub(crate) stderr: Option<String>,
}

/// SandboxFusion's `RunCodeResponse`, fields in its order.
#[derive(Serialize, Debug)]
pub(crate) struct RunCodeResponse {
    pub(crate) status: &'static str,
    pub(crate) message: String,
    pub(crate) compile_result: Option<CommandRunResult>,
    pub(crate) run_result: Option<CommandRunResult>,
    pub(crate) executor_pod_name: Option<String>,
    pub(crate) files: BTreeMap<String, String>,
}

impl RunCodeResponse {
    pub(crate) fn sandbox_error(message: String) -> RunCodeResponse {
        RunCodeResponse {
            status: "SandboxError",
            message,
            compile_result: None,
            run_result: None,
            executor_pod_name: pod_name(),
            files: BTreeMap::new(),
        }
    }
}

/// What SandboxFusion puts in `executor_pod_name`: its `MY_POD_NAME`, else null.
fn pod_name() -> Option<String> {
    std::env::var("MY_POD_NAME").ok()
}

pub(crate) fn clamp_secs(v: f64, max: Duration) -> Duration {
    let v = if v.is_finite() && v > 0.0 { v } else { ten() };
    Duration::from_secs_f64(v.clamp(0.01, max.as_secs_f64()))
}

/// Why a `/run_code` request runs nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompatError {
    /// Malformed: a 422.
    #[error(transparent)]
    Malformed(#[from] RequestError),
    /// A language this host cannot run: a `SandboxError` answer.
    #[error(transparent)]
    Unsupported(#[from] LangError),
}

/// A request as a job, limits clamped.
pub(crate) fn to_job(r: RunCodeRequest, max: &Maxima) -> Result<Job, CompatError> {
    let lang = lang::find(&r.language)?;
    let mut files = files_in(r.files)?;
    for p in &r.fetch_files {
        check_file_path("fetch_files", p)?;
    }
    let (source, compile, run) = program_steps(
        lang,
        None,
        r.code.into_bytes(),
        clamp_secs(r.compile_timeout, max.timeout),
        clamp_secs(r.run_timeout, max.timeout),
    );
    files.push(source);
    Ok(Job {
        policy: policy(r.memory_limit_mb, max),
        files,
        compile,
        run,
        stdin: r.stdin.unwrap_or_default().into_bytes(),
        env: lang
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fetch: r.fetch_files,
        tty: false,
        tap: None,
    })
}

/// The policy of a SandboxFusion request: its memory (`-1`, or anything not positive: the
/// daemon's maximum; above it: clamped), the daemon's CPUs (SandboxFusion has no CPU limit).
pub(crate) fn policy(memory_limit_mb: f64, max: &Maxima) -> Policy {
    let memory = if memory_limit_mb.is_finite() && memory_limit_mb > 0.0 {
        ((memory_limit_mb as u64).max(16) << 20).min(max.memory)
    } else {
        max.memory
    };
    Policy {
        cpus_centi: (max.cpus * 100.0).round() as u32,
        memory,
        pids: crate::defaults::PIDS.min(max.pids),
        net: crate::Net::None,
        seccomp: "default",
        cpu_time_ms: None,
        gpus: Default::default(),
    }
}

/// The request's files (path -> base64, `null` skipped) as (path, content, mode).
pub(crate) fn files_in(
    files: BTreeMap<String, Option<String>>,
) -> Result<Vec<(String, Vec<u8>, u32)>, RequestError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for (path, content) in files {
        check_file_path("files", &path)?;
        let Some(content) = content else { continue };
        match b64.decode(content.trim()) {
            Ok(data) => out.push((path, data, 0o644)),
            Err(source) => return Err(RequestError::CompatFileBase64 { path, source }),
        }
    }
    Ok(out)
}

fn text(o: &Outcome, stdout: bool) -> String {
    let bytes = if stdout {
        o.stdout_bytes()
    } else {
        o.stderr_bytes()
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One step's report as SandboxFusion shows it.
pub(crate) fn command_result(o: &Outcome) -> CommandRunResult {
    let tle = matches!(o.status, Status::Timeout | Status::CpuTime);
    CommandRunResult {
        status: if tle { "TimeLimitExceeded" } else { "Finished" },
        execution_time: Some(o.wall_ms / 1000.0),
        return_code: if tle {
            None
        } else {
            Some(o.exit_code_for_cli())
        },
        stdout: Some(text(o, true)),
        stderr: Some(text(o, false)),
    }
}

pub(crate) fn response(done: Done) -> RunCodeResponse {
    let compile_result = done.compile.as_ref().map(command_result);
    let run_result = done.run.as_ref().map(command_result);
    let failed = compile_result
        .iter()
        .chain(run_result.iter())
        .any(|r| r.status != "Finished" || r.return_code != Some(0));
    RunCodeResponse {
        status: if failed { "Failed" } else { "Success" },
        message: String::new(),
        compile_result,
        run_result,
        executor_pod_name: pod_name(),
        files: done.files_b64(),
    }
}

/// `POST /run_code`.
pub(crate) async fn run_code(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed: RunCodeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return unprocessable(e.to_string()),
    };
    let job = match to_job(parsed, &ctx.config.max) {
        Ok(j) => j,
        Err(CompatError::Malformed(e)) => return unprocessable(e.to_string()),
        Err(CompatError::Unsupported(e)) => {
            return json(
                StatusCode::OK,
                &RunCodeResponse::sandbox_error(e.to_string()),
            )
        }
    };
    match run_job(&ctx, job, arrived).await {
        (Ok(done), _) => json(StatusCode::OK, &response(done)),
        (Err(Failed::Refused(r)), _) => refused(&r),
        // A refused file path is the request's fault, not the sandbox's.
        (Err(Failed::Engine(e @ Error::Path { .. })), _) => unprocessable(e.to_string()),
        (Err(Failed::Engine(e)), _) => json(
            StatusCode::OK,
            &RunCodeResponse::sandbox_error(e.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> Maxima {
        Maxima::for_tests()
    }

    #[test]
    fn limits_are_clamped_and_minus_one_is_the_maximum() {
        let r: RunCodeRequest = serde_json::from_value(serde_json::json!({
            "code": "print(1)", "language": "python", "run_timeout": 1e9,
            "memory_limit_MB": -1, "stdin": null
        }))
        .unwrap();
        let j = to_job(r, &max()).unwrap();
        assert_eq!(j.policy.memory, 1 << 30);
        assert_eq!(j.policy.cpus_centi, 200);
        assert_eq!(j.run.timeout, Duration::from_secs(60));
        let r: RunCodeRequest = serde_json::from_value(serde_json::json!({
            "code": "", "language": "python", "memory_limit_MB": 100, "run_timeout": 0
        }))
        .unwrap();
        let j = to_job(r, &max()).unwrap();
        assert_eq!(j.policy.memory, 100 << 20);
        assert_eq!(j.run.timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_languages_are_sandbox_errors_and_bad_files_are_malformed() {
        let r: RunCodeRequest =
            serde_json::from_value(serde_json::json!({"code": "", "language": "cobol"})).unwrap();
        assert!(matches!(
            to_job(r, &max()),
            Err(CompatError::Unsupported(_))
        ));
        let r: RunCodeRequest = serde_json::from_value(serde_json::json!({
            "code": "", "language": "python", "files": {"../x": ""}
        }))
        .unwrap();
        assert!(matches!(to_job(r, &max()), Err(CompatError::Malformed(_))));
    }
}
