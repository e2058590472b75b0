//! `rsandbox run --daemon=SOCKET`: the run as a `/v1/run` request to a daemon, its report
//! printed as a local run's would be; the HTTP-over-Unix-socket client `rsandbox session` uses
//! too.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rsandbox::Outcome;

use super::RunArgs;

/// Builds the `/v1/run` body from the options the daemon supports.
fn request(a: &RunArgs) -> anyhow::Result<serde_json::Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let unsupported = [
        (!a.ro.is_empty(), "--ro"),
        (!a.rw.is_empty(), "--rw"),
        (a.rootfs.is_some(), "--rootfs"),
        (a.python.is_some(), "--python"),
        (a.strict, "--strict"),
        (a.tmp_size != rsandbox::defaults::TMP_SIZE, "--tmp-size"),
        (a.work_size != rsandbox::defaults::WORK_SIZE, "--work-size"),
        (
            a.output_limit != rsandbox::defaults::OUTPUT_LIMIT,
            "--output-limit",
        ),
        (
            matches!(
                a.seccomp,
                rsandbox::seccomp::Profile::File(_) | rsandbox::seccomp::Profile::Unconfined
            ),
            "--seccomp FILE|none",
        ),
    ];
    if let Some((_, opt)) = unsupported.iter().find(|(on, _)| *on) {
        bail!("{opt} is not supported with --daemon (the daemon decides it)");
    }
    let mut files = Vec::new();
    let mut body = serde_json::json!({});
    if let Some(code) = &a.code {
        body["code"] = code.clone().into();
        body["language"] = "python".into();
    } else if !a.program.is_empty() {
        let argv: Vec<String> = a
            .program
            .iter()
            .map(|s| s.to_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("arguments must be UTF-8 to go to a daemon"))?;
        body["argv"] = argv.into();
    } else if let Some(script) = &a.script {
        let (name, data) = super::read_script(script)?;
        let kind = super::Script::of(&name, &data)?;
        let mut argv = match kind {
            super::Script::Python => vec!["python3".to_string(), name.clone()],
            super::Script::Shell => vec!["/bin/sh".to_string(), name.clone()],
            super::Script::Shebang => vec![format!("./{name}")],
        };
        let mode = kind.mode().max(super::file_mode(script));
        for s in &a.script_args {
            argv.push(
                s.to_str()
                    .ok_or_else(|| anyhow!("arguments must be UTF-8 to go to a daemon"))?
                    .to_string(),
            );
        }
        files.push(
            serde_json::json!({"path": name, "content_b64": b64.encode(&data), "mode": mode}),
        );
        body["argv"] = argv.into();
    } else {
        bail!("nothing to run: give a SCRIPT, -c CODE, or -- PROGRAM [ARGS...]");
    }
    for (host, inside) in &a.file {
        let data =
            std::fs::read(host).with_context(|| format!("reading --file {}", host.display()))?;
        files.push(serde_json::json!({"path": inside, "content_b64": b64.encode(&data), "mode": super::file_mode(host)}));
    }
    body["files"] = files.into();
    if let Some(s) = &a.stdin {
        let data = if s == Path::new("-") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        } else {
            std::fs::read(s).with_context(|| format!("reading --stdin {}", s.display()))?
        };
        body["stdin_b64"] = b64.encode(data).into();
    }
    body["env"] = env_json(&a.env);
    let mut limits = serde_json::json!({
        "cpus": a.cpus, "memory_mb": a.mem, "pids": a.pids,
        "timeout": a.timeout.as_secs_f64(),
    });
    let net = super::network(a.net.as_ref(), &a.allow_host)?;
    limits["network"] = net.name().into();
    if let rsandbox::Net::Allowlist(rules) = &net {
        limits["allowed_hosts"] = rules.iter().map(|r| r.to_string()).collect();
    }
    if let Some(t) = a.cpu_time {
        limits["cpu_time"] = t.as_secs_f64().into();
    }
    body["limits"] = limits;
    if matches!(a.seccomp, rsandbox::seccomp::Profile::Strict) {
        body["seccomp"] = "strict".into();
    }
    Ok(body)
}

/// Environment variables as a JSON object.
pub fn env_json(env: &[(String, String)]) -> serde_json::Value {
    env.iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Connects to the daemon at `socket` and sends one request (`accept`: an Accept header).
async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    accept: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the daemon at {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, content_type);
    if let Some(a) = accept {
        req = req.header(hyper::header::ACCEPT, a);
    }
    Ok(sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Sends one request to the daemon at `socket`: (HTTP status, response body).
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    runtime()?.block_on(async {
        let resp = send(socket, method, path, content_type, None, body).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    })
}

/// POSTs a JSON `body` asking for an NDJSON stream and hands each line to `on_line` as it
/// arrives: (HTTP status, the body of an answer that is not a 2xx stream).
pub fn post_stream(
    socket: &Path,
    path: &str,
    body: Vec<u8>,
    on_line: &mut dyn FnMut(&[u8]),
) -> anyhow::Result<(u16, Bytes)> {
    runtime()?.block_on(async {
        let ndjson = Some("application/x-ndjson");
        let resp = send(socket, "POST", path, "application/json", ndjson, body).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            return Ok((status, body.collect().await?.to_bytes()));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                pending.extend_from_slice(&data);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    on_line(&line);
                }
            }
        }
        Ok((status, Bytes::new()))
    })
}

/// POSTs a JSON `body` to `path` on the daemon at `socket`: (HTTP status, response body).
pub fn post(socket: &Path, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Bytes)> {
    call(socket, "POST", path, "application/json", body)
}

/// The message of a daemon's error answer (its `error.message`, else the body).
pub fn error_message(status: u16, bytes: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let msg = v["error"]["message"]
        .as_str()
        .or(v["detail"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    let stage = v["error"]["stage"].as_str().unwrap_or("daemon").to_string();
    (stage, format!("the daemon answered {status}: {msg}"))
}

/// `rsandbox run --daemon`: returns the process exit code.
pub fn run(a: &RunArgs, socket: &Path) -> i32 {
    let result = request(a).and_then(|body| post(socket, "/v1/run", serde_json::to_vec(&body)?));
    print_report(result, a.json, a.timeout)
}

/// Prints the answer to a run (`/v1/run` or a session's) as a local run's would be; returns the
/// exit code.
pub fn print_report(
    answer: anyhow::Result<(u16, Bytes)>,
    json: bool,
    timeout: std::time::Duration,
) -> i32 {
    let (status, bytes) = match answer {
        Ok(r) => r,
        Err(e) => {
            return report_error(json, "daemon", &format!("{e:#}"));
        }
    };
    if status != 200 {
        let (stage, msg) = error_message(status, &bytes);
        return report_error(json, &stage, &msg);
    }
    let out: Outcome = match serde_json::from_slice(&bytes) {
        Ok(o) => o,
        Err(e) => return report_error(json, "daemon", &format!("unreadable report: {e}")),
    };
    if json {
        println!("{}", String::from_utf8_lossy(&bytes));
    } else {
        let _ = std::io::stdout().write_all(&out.stdout_bytes());
        let _ = std::io::stderr().write_all(&out.stderr_bytes());
        super::notes(&out, timeout);
    }
    out.exit_code_for_cli()
}

pub fn report_error(json: bool, stage: &str, message: &str) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::json!({"error": {"stage": stage, "message": message}})
        );
    } else {
        eprintln!("rsandbox: {message}");
    }
    125
}
