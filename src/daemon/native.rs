//! The native API, `POST /v1/run`: the request (code or argv, files, limits...) checked
//! against the daemon's maxima and turned into a `Job`, and the answer (the report of
//! DESIGN.md §5 plus fetched files and `queued_ms`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::job::{Done, GpuAsk, Job, Policy, Program, Step};
use super::{lang, Maxima};
use crate::outcome::Outcome;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Source code in `language` (default python). Exactly one of `code` and `argv`.
    #[serde(default)]
    pub code: Option<String>,
    /// A program and its arguments, looked up on the sandbox's PATH.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub stdin_b64: Option<String>,
    #[serde(default)]
    pub files: Vec<FileIn>,
    /// Work-dir files to return after the run.
    #[serde(default)]
    pub fetch: Vec<String>,
    #[serde(default)]
    pub limits: LimitsIn,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `default` or `strict`.
    #[serde(default)]
    pub seccomp: Option<String>,
}

impl RunRequest {
    /// A request with every default (Python code), for the default policy.
    pub fn default_code() -> RunRequest {
        RunRequest {
            code: Some(String::new()),
            ..Default::default()
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileIn {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub content_b64: Option<String>,
    #[serde(default)]
    pub mode: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    /// Wall-clock seconds of the run.
    pub timeout: Option<f64>,
    /// Wall-clock seconds of the compile step (compiled languages).
    pub compile_timeout: Option<f64>,
    /// CPU seconds of the run, all its processes together.
    pub cpu_time: Option<f64>,
    /// `none` or `loopback`.
    pub network: Option<String>,
    /// GPUs for the run: how many (any free ones), or which (`gpu_devices`, host indices).
    pub gpus: Option<u32>,
    pub gpu_devices: Option<Vec<u32>>,
    /// Share the GPUs with other runs that also ask to share (default: exclusive).
    pub gpu_share: Option<bool>,
}

/// Files fetched at most per request.
const MAX_FETCH_FILES: usize = 256;

/// Seconds from a request (`field` names it in the message): positive, at most `max`.
pub fn secs(
    field: &str,
    v: Option<f64>,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    match v {
        None => Ok(default.min(max)),
        Some(s) if !s.is_finite() || s <= 0.0 => {
            Err(format!("{field}: {s} must be a positive number of seconds"))
        }
        Some(s) if s > max.as_secs_f64() => Err(format!(
            "{field}: {s} is above this daemon's maximum of {} s",
            max.as_secs_f64()
        )),
        Some(s) => Ok(Duration::from_secs_f64(s)),
    }
}

/// Decodes and checks one file of a request.
pub fn check_file_path(path: &str) -> Result<(), String> {
    crate::instance::components(path)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks environment variables of a request.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!(
                "env: {k:?}: names must be non-empty without '=' or NUL, values without NUL"
            ));
        }
    }
    Ok(())
}

/// The sandbox policy of `limits` and `seccomp` (a run's or a session's), checked against the
/// maxima; `Err` is the 422 message.
pub fn policy(l: &LimitsIn, seccomp: Option<&str>, max: &Maxima) -> Result<Policy, String> {
    let cpu_time = l
        .cpu_time
        .map(|v| secs("limits.cpu_time", Some(v), max.timeout, max.timeout))
        .transpose()?;
    let cpus = l.cpus.unwrap_or(crate::defaults::CPUS.min(max.cpus));
    if !(0.01..=max.cpus).contains(&cpus) {
        return Err(format!(
            "limits.cpus: {cpus} is outside 0.01..={} (this daemon's maximum)",
            max.cpus
        ));
    }
    let memory = match l.memory_mb {
        None => crate::defaults::MEMORY.min(max.memory),
        Some(m) if m < 8 => return Err(format!("limits.memory_mb: {m} is below the minimum of 8")),
        Some(m) if m.saturating_mul(1 << 20) > max.memory => {
            return Err(format!(
                "limits.memory_mb: {m} is above this daemon's maximum of {}",
                max.memory >> 20
            ))
        }
        Some(m) => m << 20,
    };
    let pids = match l.pids {
        None => crate::defaults::PIDS.min(max.pids),
        Some(0) => return Err("limits.pids: must be at least 1".into()),
        Some(p) if p > max.pids => {
            return Err(format!(
                "limits.pids: {p} is above this daemon's maximum of {}",
                max.pids
            ))
        }
        Some(p) => p,
    };
    let loopback = match l.network.as_deref() {
        None | Some("none") => false,
        Some("loopback") => true,
        Some(n) => return Err(format!("limits.network: {n:?} is not none or loopback")),
    };
    let seccomp = match seccomp {
        None | Some("default") => "default",
        Some("strict") => "strict",
        Some(s) => {
            return Err(format!(
                "seccomp: {s:?} is not offered by the daemon (default or strict)"
            ))
        }
    };
    let gpus = match (l.gpus, l.gpu_devices.clone()) {
        (Some(_), Some(_)) => {
            return Err("limits.gpus and limits.gpu_devices: give one of them, not both".into())
        }
        (_, Some(d)) if d.is_empty() => {
            return Err("limits.gpu_devices: empty (leave it out for no GPU)".into())
        }
        (n, d) => GpuAsk {
            count: n.unwrap_or(0),
            devices: d,
            share: l.gpu_share.unwrap_or(false),
        },
    };
    Ok(Policy {
        cpus_centi: (cpus * 100.0).round() as u32,
        memory,
        pids,
        loopback,
        seccomp,
        cpu_time_ms: cpu_time.map(|d| d.as_millis().max(1) as u64),
        gpus,
    })
}

/// Checks a request against the maxima and turns it into a job; `Err` is the 422 message.
pub fn to_job(r: RunRequest, max: &Maxima) -> Result<Job, String> {
    build_job(r, max, None)
}

/// [`to_job`] for a run in a session: code goes to [`lang::SESSION_STEM`] files, never over
/// the session's own `main.py`.
pub fn to_session_job(r: RunRequest, max: &Maxima) -> Result<Job, String> {
    build_job(r, max, Some(lang::SESSION_STEM))
}

fn build_job(r: RunRequest, max: &Maxima, stem: Option<&str>) -> Result<Job, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
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

    let mut files = Vec::new();
    for f in r.files {
        check_file_path(&f.path).map_err(|e| format!("files: {e}"))?;
        let data = match (f.content, f.content_b64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => b64
                .decode(b.trim())
                .map_err(|e| format!("files: {:?}: content_b64 is not base64: {e}", f.path))?,
            _ => {
                return Err(format!(
                    "files: {:?}: give exactly one of content and content_b64",
                    f.path
                ))
            }
        };
        let mode = f.mode.unwrap_or(0o644);
        if mode > 0o7777 {
            return Err(format!(
                "files: {:?}: mode {mode:o} is not a file mode",
                f.path
            ));
        }
        files.push((f.path, data, mode));
    }
    if r.fetch.len() > MAX_FETCH_FILES {
        return Err(format!("fetch: at most {MAX_FETCH_FILES} files"));
    }
    for p in &r.fetch {
        check_file_path(p).map_err(|e| format!("fetch: {e}"))?;
    }
    check_env(&r.env)?;
    let stdin = match (r.stdin, r.stdin_b64) {
        (None, None) => Vec::new(),
        (Some(s), None) => s.into_bytes(),
        (None, Some(b)) => b64
            .decode(b.trim())
            .map_err(|e| format!("stdin_b64 is not base64: {e}"))?,
        _ => return Err("give at most one of stdin and stdin_b64".into()),
    };
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
        (None, Some(argv)) => {
            if r.language.is_some() {
                return Err("language goes with code, not with argv".into());
            }
            if argv.first().map_or(true, |a| a.is_empty()) {
                return Err("argv: the program name is empty".into());
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err("argv: arguments may not contain NUL".into());
            }
            let run = Step {
                program: Program::Argv(argv),
                timeout,
            };
            (None, run)
        }
        _ => return Err("give exactly one of code and argv".into()),
    };
    Ok(Job {
        policy,
        files,
        compile,
        run,
        stdin,
        env,
        fetch: r.fetch,
    })
}

/// The source file (path, content, mode) and the compile and run steps of `code` in a
/// language; `stem` replaces the file stem `main` ([`lang::SESSION_STEM`] in sessions).
pub fn program_steps(
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
pub struct RunResponse {
    #[serde(flatten)]
    pub report: Outcome,
    /// `run`, or `compile` when the compile step failed and nothing ran.
    pub stage: &'static str,
    pub compile: Option<Outcome>,
    /// Fetched files, base64.
    pub files: BTreeMap<String, String>,
    /// Files asked for and not returned: path -> reason.
    pub files_refused: BTreeMap<String, String>,
}

pub fn response(done: Done, queued: Duration) -> Option<RunResponse> {
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
