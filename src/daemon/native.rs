//! The native API, `POST /v1/run`: the request (code or argv, files, limits...) checked
//! against the daemon's maxima and turned into a `Job`, and the answer (the report of
//! DESIGN.md §5 plus fetched files and `queued_ms`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admission::{refusal_message, refused, run_job, Admitted, Failed};
use super::error::RequestError;
use super::http::{engine_error, error, json, line, read_json, wants_ndjson, Body};
use super::job::{Done, GpuAsk, Job, Policy, Program, Step};
use super::server::Ctx;
use super::stream::{output_tap, stream};
use super::{lang, Maxima, NetworkCap};
use crate::Net;
use crate::Outcome;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// Source code in `language` (default python). Exactly one of `code` and `argv`.
    #[serde(default)]
    pub(crate) code: Option<String>,
    /// A program and its arguments, looked up on the sandbox's PATH.
    #[serde(default)]
    pub(crate) argv: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) language: Option<String>,
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    #[serde(default)]
    pub(crate) stdin_b64: Option<String>,
    #[serde(default)]
    pub(crate) files: Vec<FileIn>,
    /// Work-dir files to return after the run.
    #[serde(default)]
    pub(crate) fetch: Vec<String>,
    #[serde(default)]
    pub(crate) limits: LimitsIn,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    /// `default` or `strict`.
    #[serde(default)]
    pub(crate) seccomp: Option<String>,
    /// Run on a pty of the instance (for programs that only behave on a terminal): the output
    /// is the terminal's one stream, in `stdout`; `stdin` is typed into it.
    #[serde(default)]
    pub(crate) tty: bool,
}

impl RunRequest {
    /// A request with every default (Python code), for the default policy.
    pub(crate) fn default_code() -> RunRequest {
        RunRequest {
            code: Some(String::new()),
            ..Default::default()
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileIn {
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) content_b64: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsIn {
    pub(crate) cpus: Option<f64>,
    pub(crate) memory_mb: Option<u64>,
    pub(crate) pids: Option<u64>,
    /// Wall-clock seconds of the run.
    pub(crate) timeout: Option<f64>,
    /// Wall-clock seconds of the compile step (compiled languages).
    pub(crate) compile_timeout: Option<f64>,
    /// CPU seconds of the run, all its processes together.
    pub(crate) cpu_time: Option<f64>,
    /// `none`, `loopback`, `allowlist` or `all` (at most the daemon's `--max-network`).
    pub(crate) network: Option<String>,
    /// Destinations for `allowlist` (implied when `network` is absent).
    pub(crate) allowed_hosts: Option<Vec<String>>,
    /// GPUs for the run: how many (any free ones), or which (`gpu_devices`, host indices).
    pub(crate) gpus: Option<u32>,
    pub(crate) gpu_devices: Option<Vec<u32>>,
    /// Share the GPUs with other runs that also ask to share (default: exclusive).
    pub(crate) gpu_share: Option<bool>,
}

/// Files fetched at most per request.
const MAX_FETCH_FILES: usize = 256;

/// Seconds from a request (`field` names it in the message): positive, at most `max`.
pub(crate) fn secs(
    field: &'static str,
    v: Option<f64>,
    default: Duration,
    max: Duration,
) -> Result<Duration, RequestError> {
    match v {
        None => Ok(default.min(max)),
        Some(value) if !value.is_finite() || value <= 0.0 => {
            Err(RequestError::NotPositive { field, value })
        }
        Some(value) if value > max.as_secs_f64() => Err(RequestError::AboveMaxSecs {
            field,
            value,
            max: max.as_secs_f64(),
        }),
        Some(s) => Ok(Duration::from_secs_f64(s)),
    }
}

/// Checks one file path of a request's `field` (`files`, `fetch`...): relative, inside the
/// work dir.
pub(crate) fn check_file_path(field: &'static str, path: &str) -> Result<(), RequestError> {
    crate::instance::components(path)
        .map(drop)
        .map_err(|source| RequestError::Path { field, source })
}

/// Checks environment variables of a request.
pub(crate) fn check_env(env: &BTreeMap<String, String>) -> Result<(), RequestError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(RequestError::Env { name: k.clone() });
        }
    }
    Ok(())
}

/// The sandbox policy of `limits` and `seccomp` (a run's or a session's), checked against the
/// maxima.
pub(crate) fn policy(
    l: &LimitsIn,
    seccomp: Option<&str>,
    max: &Maxima,
) -> Result<Policy, RequestError> {
    let cpu_time = l
        .cpu_time
        .map(|v| secs("limits.cpu_time", Some(v), max.timeout, max.timeout))
        .transpose()?;
    let cpus = cpus(l.cpus, max)?;
    Ok(Policy {
        cpus_centi: (cpus * 100.0).round() as u32,
        memory: memory(l.memory_mb, max)?,
        pids: pids(l.pids, max)?,
        net: network(l, max)?,
        seccomp: seccomp_profile(seccomp)?,
        cpu_time_ms: cpu_time.map(|d| d.as_millis().max(1) as u64),
        gpus: gpus(l)?,
    })
}

fn cpus(v: Option<f64>, max: &Maxima) -> Result<f64, RequestError> {
    let cpus = v.unwrap_or(crate::defaults::CPUS.min(max.cpus));
    if !(0.01..=max.cpus).contains(&cpus) {
        return Err(RequestError::Cpus {
            value: cpus,
            max: max.cpus,
        });
    }
    Ok(cpus)
}

/// `limits.memory_mb` in bytes.
fn memory(v: Option<u64>, max: &Maxima) -> Result<u64, RequestError> {
    let field = "limits.memory_mb";
    match v {
        None => Ok(crate::defaults::MEMORY.min(max.memory)),
        Some(m) if m < 8 => Err(RequestError::BelowMin {
            field,
            value: m,
            min: 8,
        }),
        Some(m) if m.saturating_mul(1 << 20) > max.memory => Err(RequestError::AboveMax {
            field,
            value: m,
            max: max.memory >> 20,
        }),
        Some(m) => Ok(m << 20),
    }
}

fn pids(v: Option<u64>, max: &Maxima) -> Result<u64, RequestError> {
    let field = "limits.pids";
    match v {
        None => Ok(crate::defaults::PIDS.min(max.pids)),
        Some(0) => Err(RequestError::Field {
            field,
            reason: "must be at least 1",
        }),
        Some(p) if p > max.pids => Err(RequestError::AboveMax {
            field,
            value: p,
            max: max.pids,
        }),
        Some(p) => Ok(p),
    }
}

/// `limits.network` and `limits.allowed_hosts`, checked against `--max-network`; the
/// patterns are parsed here, so a bad one is refused before anything starts.
fn network(l: &LimitsIn, max: &Maxima) -> Result<Net, RequestError> {
    let mode = match l.network.as_deref() {
        None if l.allowed_hosts.is_some() => "allowlist",
        None => "none",
        Some(n) => n,
    };
    let net = match mode {
        "none" => Net::None,
        "loopback" => Net::Loopback,
        "all" => Net::All,
        "allowlist" => {
            let patterns = l.allowed_hosts.as_deref().unwrap_or_default();
            Net::allowlist(patterns).map_err(|source| RequestError::Pattern { source })?
        }
        n => {
            return Err(RequestError::Value {
                field: "limits.network",
                value: n.to_string(),
                reason: "is not none, loopback, allowlist or all",
            })
        }
    };
    if l.allowed_hosts.is_some() && !matches!(net, Net::Allowlist(_)) {
        return Err(RequestError::Conflict(
            "limits.allowed_hosts goes with limits.network \"allowlist\"",
        ));
    }
    if NetworkCap::of(&net) > max.network {
        return Err(RequestError::NetworkAboveMax {
            value: net.name(),
            max: max.network.name(),
        });
    }
    Ok(net)
}

fn seccomp_profile(v: Option<&str>) -> Result<&'static str, RequestError> {
    match v {
        None | Some("default") => Ok("default"),
        Some("strict") => Ok("strict"),
        Some(s) => Err(RequestError::Value {
            field: "seccomp",
            value: s.to_string(),
            reason: "is not offered by the daemon (default or strict)",
        }),
    }
}

fn gpus(l: &LimitsIn) -> Result<GpuAsk, RequestError> {
    match (l.gpus, l.gpu_devices.clone()) {
        (Some(_), Some(_)) => Err(RequestError::Field {
            field: "limits.gpus and limits.gpu_devices",
            reason: "give one of them, not both",
        }),
        (_, Some(d)) if d.is_empty() => Err(RequestError::Field {
            field: "limits.gpu_devices",
            reason: "empty (leave it out for no GPU)",
        }),
        (n, d) => Ok(GpuAsk {
            count: n.unwrap_or(0),
            devices: d,
            share: l.gpu_share.unwrap_or(false),
        }),
    }
}

/// Checks a request against the maxima and turns it into a job.
pub(crate) fn to_job(r: RunRequest, max: &Maxima) -> Result<Job, RequestError> {
    build_job(r, max, None)
}

/// [`to_job`] for a run in a session: code goes to [`lang::SESSION_STEM`] files, never over
/// the session's own `main.py`.
pub(crate) fn to_session_job(r: RunRequest, max: &Maxima) -> Result<Job, RequestError> {
    build_job(r, max, Some(lang::SESSION_STEM))
}

fn build_job(r: RunRequest, max: &Maxima, stem: Option<&str>) -> Result<Job, RequestError> {
    let timeout = secs(
        "limits.timeout",
        r.limits.timeout,
        crate::defaults::TIMEOUT,
        max.timeout,
    )?;
    let compile_timeout = secs(
        "limits.compile_timeout",
        r.limits.compile_timeout,
        crate::defaults::TIMEOUT,
        max.timeout,
    )?;
    let policy = policy(&r.limits, r.seccomp.as_deref(), max)?;
    let mut files = files_in(r.files)?;
    check_fetch(&r.fetch)?;
    check_env(&r.env)?;
    let stdin = stdin_bytes(r.stdin, r.stdin_b64)?;
    let mut env: Vec<(String, String)> = r.env.into_iter().collect();
    let (compile, run) = match (r.code, r.argv) {
        (Some(code), None) => {
            let lang = lang::find(r.language.as_deref().unwrap_or("python"))?;
            env.extend(lang.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let (source, compile, run) =
                program_steps(lang, stem, code.into_bytes(), compile_timeout, timeout);
            files.push(source);
            (compile, run)
        }
        (None, Some(argv)) => (None, argv_step(argv, r.language.is_some(), timeout)?),
        _ => return Err(RequestError::Conflict("give exactly one of code and argv")),
    };
    Ok(Job {
        policy,
        files,
        compile,
        run,
        stdin,
        env,
        fetch: r.fetch,
        tty: r.tty,
        tap: None,
    })
}

/// The request's files as (path, content, mode), each checked.
fn files_in(files: Vec<FileIn>) -> Result<Vec<(String, Vec<u8>, u32)>, RequestError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for f in files {
        check_file_path("files", &f.path)?;
        let data = match (f.content, f.content_b64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => match b64.decode(b.trim()) {
                Ok(d) => d,
                Err(source) => {
                    return Err(RequestError::FileBase64 {
                        path: f.path,
                        source,
                    })
                }
            },
            _ => return Err(RequestError::FileContent { path: f.path }),
        };
        let mode = f.mode.unwrap_or(0o644);
        if mode > 0o7777 {
            return Err(RequestError::FileMode { path: f.path, mode });
        }
        out.push((f.path, data, mode));
    }
    Ok(out)
}

fn check_fetch(fetch: &[String]) -> Result<(), RequestError> {
    if fetch.len() > MAX_FETCH_FILES {
        return Err(RequestError::TooManyFetch {
            max: MAX_FETCH_FILES,
        });
    }
    fetch.iter().try_for_each(|p| check_file_path("fetch", p))
}

fn stdin_bytes(text: Option<String>, b64: Option<String>) -> Result<Vec<u8>, RequestError> {
    match (text, b64) {
        (None, None) => Ok(Vec::new()),
        (Some(s), None) => Ok(s.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|source| RequestError::StdinBase64 { source }),
        _ => Err(RequestError::Conflict(
            "give at most one of stdin and stdin_b64",
        )),
    }
}

/// The run step of an `argv` request (`language` goes only with `code`).
fn argv_step(argv: Vec<String>, language: bool, timeout: Duration) -> Result<Step, RequestError> {
    if language {
        return Err(RequestError::Conflict(
            "language goes with code, not with argv",
        ));
    }
    if argv.first().map_or(true, |a| a.is_empty()) {
        return Err(RequestError::Field {
            field: "argv",
            reason: "the program name is empty",
        });
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(RequestError::Field {
            field: "argv",
            reason: "arguments may not contain NUL",
        });
    }
    Ok(Step {
        program: Program::Argv(argv),
        timeout,
    })
}

/// The source file (path, content, mode) and the compile and run steps of `code` in a
/// language; `stem` replaces the file stem `main` ([`lang::SESSION_STEM`] in sessions).
pub(crate) fn program_steps(
    lang: &lang::Language,
    stem: Option<&str>,
    code: Vec<u8>,
    compile_timeout: Duration,
    timeout: Duration,
) -> ((String, Vec<u8>, u32), Option<Step>, Step) {
    let (source, compile, run) = lang.names(stem);
    let compile = compile.map(|c| Step {
        program: Program::Argv(c),
        timeout: compile_timeout,
    });
    let program = if run[0] == lang::PYTHON {
        Program::PythonScript(run[1].clone())
    } else {
        Program::Argv(run)
    };
    ((source, code, 0o644), compile, Step { program, timeout })
}

/// The answer to `/v1/run`: the report of the step that ended the job (the run, or a compile
/// step that failed), plus the compile step's report, fetched files and refusals.
#[derive(Serialize)]
pub(crate) struct RunResponse {
    #[serde(flatten)]
    pub(crate) report: Outcome,
    /// `run`, or `compile` when the compile step failed and nothing ran.
    pub(crate) stage: &'static str,
    pub(crate) compile: Option<Outcome>,
    /// Fetched files, base64.
    pub(crate) files: BTreeMap<String, String>,
    /// Files asked for and not returned: path -> reason.
    pub(crate) files_refused: BTreeMap<String, String>,
}

pub(crate) fn response(done: Done, queued: Duration) -> Option<RunResponse> {
    let files = done.files_b64();
    let (mut report, stage, compile) = match (done.run, done.compile) {
        (Some(run), compile) => (run, "run", compile),
        (None, Some(compile)) => (compile.clone(), "compile", Some(compile)),
        (None, None) => return None,
    };
    report.queued_ms = Some(queued.as_secs_f64() * 1000.0);
    Some(RunResponse {
        report,
        stage,
        compile,
        files,
        files_refused: done.refused,
    })
}

/// `POST /v1/run`.
pub(crate) async fn v1_run(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let max_body = ctx.config.max_body;
    let streamed = wants_ndjson(&req);
    let mut job = match read_json(req, max_body, |r| to_job(r, &ctx.config.max)).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    if streamed {
        return stream(move |lines| async move {
            job.tap = Some(output_tap(lines));
            end_line(run_job(&ctx, job, arrived).await)
        });
    }
    match run_job(&ctx, job, arrived).await {
        (Ok(done), queued) => match response(done, queued) {
            Some(r) => json(StatusCode::OK, &r),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "run", "no report"),
        },
        (Err(Failed::Refused(r)), _) => refused(&r),
        (Err(Failed::Engine(e)), _) => engine_error(&e),
    }
}

/// The last line of a streamed run: `{"type": "end", "report": ...}` with the answer a
/// whole response would have had, or `{"type": "end", "error": ...}`.
pub(crate) fn end_line(r: Admitted) -> Bytes {
    let v = match r {
        (Ok(done), queued) => match response(done, queued) {
            Some(r) => json!({"type": "end", "report": r}),
            None => json!({"type": "end", "error": {"stage": "run", "message": "no report"}}),
        },
        (Err(Failed::Refused(r)), _) => {
            json!({"type": "end", "error": {"stage": "queue", "message": refusal_message(&r)}})
        }
        (Err(Failed::Engine(e)), _) => {
            json!({"type": "end", "error": {"stage": e.stage(), "message": e.to_string()}})
        }
    };
    line(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> Maxima {
        Maxima::for_tests()
    }

    fn job(v: serde_json::Value) -> Result<Job, String> {
        to_job(
            serde_json::from_value(v).map_err(|e| e.to_string())?,
            &max(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn limits_above_the_maxima_are_refused_by_name() {
        for (v, word) in [
            (
                serde_json::json!({"code": "1", "limits": {"memory_mb": 2048}}),
                "memory_mb",
            ),
            (
                serde_json::json!({"code": "1", "limits": {"timeout": 61}}),
                "timeout",
            ),
            (
                serde_json::json!({"code": "1", "limits": {"pids": 101}}),
                "pids",
            ),
            (
                serde_json::json!({"code": "1", "limits": {"cpus": 3}}),
                "cpus",
            ),
            (
                serde_json::json!({"code": "1", "limits": {"timeout": -1}}),
                "timeout",
            ),
            (
                serde_json::json!({"code": "1", "limits": {"network": "host"}}),
                "network",
            ),
        ] {
            let e = job(v).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
        let j = job(serde_json::json!({"code": "1", "limits": {"memory_mb": 1024, "timeout": 60}}))
            .unwrap();
        assert_eq!(j.policy.memory, 1 << 30);
    }

    #[test]
    fn network_modes_allowlists_and_the_cap() {
        let net = |limits: serde_json::Value, max: NetworkCap| {
            let mut m = Maxima::for_tests();
            m.network = max;
            let r =
                serde_json::from_value(serde_json::json!({"code": "1", "limits": limits})).unwrap();
            to_job(r, &m)
                .map(|j| j.policy.net)
                .map_err(|e| e.to_string())
        };
        let all = NetworkCap::All;
        assert_eq!(net(serde_json::json!({}), NetworkCap::None), Ok(Net::None));
        assert_eq!(
            net(serde_json::json!({"network": "loopback"}), NetworkCap::None),
            Ok(Net::Loopback)
        );
        assert_eq!(
            net(serde_json::json!({"network": "all"}), all),
            Ok(Net::All)
        );
        let want = Net::allowlist(["example.org", "127.0.0.1:8080"]).unwrap();
        let hosts = serde_json::json!(["example.org", "127.0.0.1:8080"]);
        assert_eq!(
            net(
                serde_json::json!({"network": "allowlist", "allowed_hosts": hosts}),
                all
            ),
            Ok(want.clone())
        );
        // allowed_hosts alone means allowlist.
        assert_eq!(
            net(serde_json::json!({"allowed_hosts": hosts}), all),
            Ok(want)
        );
        for (limits, max, words) in [
            (
                serde_json::json!({"network": "all"}),
                NetworkCap::Allowlist,
                "--max-network",
            ),
            (
                serde_json::json!({"allowed_hosts": ["a.org"]}),
                NetworkCap::None,
                "above this daemon's maximum (none",
            ),
            (
                serde_json::json!({"allowed_hosts": ["*"]}),
                all,
                "invalid allowlist pattern \"*\"",
            ),
            (
                serde_json::json!({"allowed_hosts": ["10.0.0.0/8"]}),
                all,
                "CIDR",
            ),
            (
                serde_json::json!({"network": "all", "allowed_hosts": ["a.org"]}),
                all,
                "goes with",
            ),
            (
                serde_json::json!({"network": "host"}),
                all,
                "none, loopback, allowlist or all",
            ),
        ] {
            let e = net(limits.clone(), max).unwrap_err();
            assert!(e.contains(words), "{limits}: {e}");
        }
    }

    #[test]
    fn bad_paths_and_shapes_are_refused() {
        for v in [
            serde_json::json!({"code": "1", "files": [{"path": "../x", "content": ""}]}),
            serde_json::json!({"code": "1", "files": [{"path": "/etc/passwd", "content": ""}]}),
            serde_json::json!({"code": "1", "files": [{"path": "a\u{0}b", "content": ""}]}),
            serde_json::json!({"code": "1", "fetch": ["a/../../b"]}),
            serde_json::json!({"code": "1", "argv": ["x"]}),
            serde_json::json!({}),
            serde_json::json!({"argv": []}),
            serde_json::json!({"code": "1", "language": "cobol"}),
            serde_json::json!({"code": "1", "seccomp": "none"}),
            serde_json::json!({"code": "1", "files": [{"path": "a", "content_b64": "!!"}]}),
        ] {
            assert!(job(v.clone()).is_err(), "{v} must be refused");
        }
        assert!(job(serde_json::json!({"code": 1})).is_err());
        assert!(job(serde_json::json!({"code": "1", "extra": true})).is_err());
    }
}
