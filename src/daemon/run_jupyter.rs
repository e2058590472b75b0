//! SandboxFusion's `POST /run_jupyter`: notebook cells run one after another in a fresh
//! instance's stateful context, in SandboxFusion's request and response shapes. A cell's
//! exception does not stop the later cells; `total_timeout` ends the run (`Failed`, no cells);
//! `SandboxError` only for a fault of the sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::admission::{in_slot, refused, Counted, Failed};
use super::compat::{clamp_secs, files_in, CommandRunResult};
use super::http::{json, read_body, unprocessable, Body};
use super::native::check_file_path;
use super::server::Ctx;
use crate::{Cancel, CellStatus, ContextOptions, Error, Execution, Sandbox};

fn forty_five() -> f64 {
    45.0
}
fn minus_one() -> f64 {
    -1.0
}
fn python3() -> String {
    "python3".into()
}

/// SandboxFusion's `RunJupyterRequest`; unknown fields are ignored, as pydantic does.
#[derive(Deserialize, Debug)]
struct RunJupyterRequest {
    cells: Vec<String>,
    /// Seconds per cell; 0: none (the total still applies).
    #[serde(default)]
    cell_timeout: f64,
    #[serde(default = "forty_five")]
    total_timeout: f64,
    #[serde(default = "minus_one", rename = "memory_limit_MB")]
    memory_limit_mb: f64,
    #[serde(default = "python3")]
    kernel: String,
    #[serde(default)]
    files: BTreeMap<String, Option<String>>,
    #[serde(default)]
    fetch_files: Vec<String>,
}

/// SandboxFusion's `CellRunResult`.
#[derive(Serialize, Debug)]
struct CellRunResult {
    stdout: String,
    stderr: String,
    display: Vec<serde_json::Map<String, Value>>,
    error: Vec<Value>,
}

/// SandboxFusion's `RunJupyterResponse`, fields in its order.
#[derive(Serialize, Debug)]
struct RunJupyterResponse {
    status: &'static str,
    message: String,
    driver: Option<CommandRunResult>,
    cells: Vec<CellRunResult>,
    executor_pod_name: Option<String>,
    files: BTreeMap<String, String>,
}

/// What running the notebook gave.
struct Notebook {
    cells: Vec<Execution>,
    /// The total timeout ended it.
    timed_out: bool,
    wall: Duration,
    files: BTreeMap<String, Vec<u8>>,
}

impl Counted for Notebook {
    fn outcome_name(&self) -> &'static str {
        if self.timed_out {
            "timeout"
        } else {
            "ok"
        }
    }
}

/// `POST /run_jupyter`.
pub(crate) async fn run_jupyter(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    arrived: Instant,
) -> Response<Body> {
    let body = match read_body(req, ctx.config.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r: RunJupyterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return unprocessable(e.to_string()),
    };
    if r.kernel != "python3" {
        return unprocessable(format!(
            "kernel: {:?} is not offered (only python3)",
            r.kernel
        ));
    }
    let max = &ctx.config.max;
    let files = match files_in(r.files.clone()) {
        Ok(f) => f,
        Err(e) => return unprocessable(e.to_string()),
    };
    for p in &r.fetch_files {
        if let Err(e) = check_file_path("fetch_files", p) {
            return unprocessable(e.to_string());
        }
    }
    // The limits /run_code gets for the same memory ask, clamped the same way.
    let policy = super::compat::policy(r.memory_limit_mb, max);
    let total = clamp_secs(r.total_timeout, max.timeout);
    let cell = (r.cell_timeout > 0.0).then(|| clamp_secs(r.cell_timeout, max.timeout));
    let c = ctx.clone();
    let sb = match tokio::task::spawn_blocking(move || c.sandboxes.get(&policy))
        .await
        .unwrap_or(Err(Error::Gone))
    {
        Ok(sb) => sb,
        Err(e) => return sandbox_error(e.to_string()),
    };
    let (cells, fetch) = (r.cells, r.fetch_files);
    let ran = in_slot(&ctx, arrived, move |cancel, tx| {
        let _ = tx.send(notebook(&sb, &files, &cells, cell, total, &fetch, cancel));
    })
    .await;
    match ran.0 {
        Ok(nb) => json(StatusCode::OK, &response(nb)),
        Err(Failed::Refused(r)) => refused(&r),
        Err(Failed::Engine(e @ Error::Path { .. })) => unprocessable(e.to_string()),
        Err(Failed::Engine(e)) => sandbox_error(e.to_string()),
    }
}

/// Runs the cells in one context of a fresh instance of `sb`.
fn notebook(
    sb: &Sandbox,
    files: &[(String, Vec<u8>, u32)],
    cells: &[String],
    cell_timeout: Option<Duration>,
    total: Duration,
    fetch: &[String],
    cancel: &Cancel,
) -> crate::Result<Notebook> {
    let start = Instant::now();
    let deadline = start + total;
    let inst = Arc::new(sb.instance()?);
    for (path, data, mode) in files {
        inst.put_file(path, data, *mode)?;
    }
    let ctx = inst.context(ContextOptions::default())?;
    let mut out = Vec::new();
    let mut timed_out = false;
    for code in cells {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = cell_timeout.map_or(left, |c| c.min(left));
        if t.is_zero() {
            timed_out = true;
            break;
        }
        let e = ctx.execute(code, Some(t), Some(cancel), &mut |_| {})?;
        // A cell stopped by the total rather than by its own timeout ends the notebook.
        if e.status == CellStatus::Timeout && cell_timeout.map_or(true, |c| c >= left) {
            timed_out = true;
            break;
        }
        out.push(e);
    }
    cancel.check()?;
    let mut fetched = BTreeMap::new();
    let mut budget = crate::defaults::MAX_FETCH;
    for path in fetch {
        if let Ok(data) = inst.get_file(path, budget) {
            budget -= data.len() as u64;
            fetched.insert(path.clone(), data);
        }
    }
    drop(ctx);
    if let Ok(inst) = Arc::try_unwrap(inst) {
        let _ = sb.retire(inst);
    }
    Ok(Notebook {
        cells: out,
        timed_out,
        wall: start.elapsed(),
        files: fetched,
    })
}

fn response(nb: Notebook) -> RunJupyterResponse {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let driver = CommandRunResult {
        status: if nb.timed_out {
            "TimeLimitExceeded"
        } else {
            "Finished"
        },
        execution_time: Some(nb.wall.as_secs_f64()),
        return_code: (!nb.timed_out).then_some(0),
        stdout: Some(String::new()),
        stderr: Some(String::new()),
    };
    let cells = if nb.timed_out {
        Vec::new()
    } else {
        nb.cells.iter().map(cell_result).collect()
    };
    RunJupyterResponse {
        status: if nb.timed_out { "Failed" } else { "Success" },
        message: String::new(),
        driver: Some(driver),
        cells,
        executor_pod_name: std::env::var("MY_POD_NAME").ok(),
        files: nb
            .files
            .iter()
            .map(|(k, v)| (k.clone(), b64.encode(v)))
            .collect(),
    }
}

/// A cell as SandboxFusion shows it: results and display data both under `display`, the
/// error's traceback as a list of lines.
fn cell_result(e: &Execution) -> CellRunResult {
    let error = match &e.error {
        Some(err) => vec![serde_json::json!({
            "ename": err.name,
            "evalue": err.value,
            "traceback": err.traceback.lines().collect::<Vec<_>>(),
        })],
        None if e.status == CellStatus::Died => vec![serde_json::json!({
            "ename": "DeadKernelError",
            "evalue": "the kernel died while running this cell",
            "traceback": Vec::<String>::new(),
        })],
        None => Vec::new(),
    };
    CellRunResult {
        stdout: e.stdout.clone(),
        stderr: e.stderr.clone(),
        display: e.results.iter().map(|r| r.data.clone()).collect(),
        error,
    }
}

fn sandbox_error(message: String) -> Response<Body> {
    json(
        StatusCode::OK,
        &RunJupyterResponse {
            status: "SandboxError",
            message,
            driver: None,
            cells: Vec::new(),
            executor_pod_name: std::env::var("MY_POD_NAME").ok(),
            files: BTreeMap::new(),
        },
    )
}
