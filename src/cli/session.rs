//! `rsandbox session create|run|put|get|ls|rm`: a daemon's sessions (`/v1/sessions`) from the
//! command line, over its Unix socket.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use clap::{Args, Subcommand};
use rsandbox::Net;
use serde_json::{json, Value};

use super::client;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
ID=$(rsandbox session create --mem 256 --net loopback)\n  \
rsandbox session put $ID data.csv\n  \
rsandbox session run $ID -c 'import csv; print(sum(1 for _ in open(\"data.csv\")))'\n  \
rsandbox session run $ID -- /bin/sh -c 'python3 -m http.server 8000 >log 2>&1 &'\n  \
rsandbox session get $ID log -\n  \
rsandbox session ls $ID\n  \
rsandbox session rm $ID")]
pub struct SessionArgs {
    /// The daemon's Unix socket [default: /run/rsandbox/rsandbox.sock as root,
    /// $XDG_RUNTIME_DIR/rsandbox.sock otherwise]
    #[arg(long, value_name = "SOCKET", global = true)]
    daemon: Option<PathBuf>,
    #[command(subcommand)]
    cmd: SessionCmd,
}

#[derive(Subcommand)]
enum SessionCmd {
    /// Create a session; prints its id.
    Create {
        /// CPU quota, in CPUs.
        #[arg(long, value_name = "CPUS")]
        cpus: Option<f64>,
        /// Memory limit of the whole session in MiB (no swap).
        #[arg(long, value_name = "MB")]
        mem: Option<u64>,
        /// Maximum processes and threads of the whole session.
        #[arg(long, value_name = "N")]
        pids: Option<u64>,
        /// Network: none, loopback, allowlist or all (see `rsandbox run --help`) [default: none]
        #[arg(long, value_name = "MODE")]
        net: Option<Net>,
        /// A destination the session may reach through the proxy. Repeatable; implies --net
        /// allowlist.
        #[arg(long, value_name = "PATTERN")]
        allow_host: Vec<rsandbox::egress::Rule>,
        /// seccomp profile: default or strict.
        #[arg(long, value_name = "PROFILE", default_value = "default")]
        seccomp: String,
        /// GPUs the session holds for its life.
        #[arg(long, value_name = "N")]
        gpus: Option<u32>,
        /// Set an environment variable for every run. Repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_env)]
        env: Vec<(String, String)>,
        /// End the session after this long without a run or file operation [default: the daemon's]
        #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
        idle_timeout: Option<Duration>,
        /// End the session this long after it was created [default: the daemon's]
        #[arg(long, value_name = "SECS", value_parser = super::parse_secs)]
        lifetime: Option<Duration>,
        /// Print the session as JSON instead of its id.
        #[arg(long)]
        json: bool,
    },
    /// Run code (-c) or a program (after --) in a session; output and exit status as
    /// `rsandbox run`'s.
    Run {
        id: String,
        /// Code to run, in --language.
        #[arg(short = 'c', value_name = "CODE", conflicts_with = "program")]
        code: Option<String>,
        /// The language of -c (python, bash, cpp, ...: see the daemon's /v1/health).
        #[arg(long, value_name = "LANG", default_value = "python", requires = "code")]
        language: String,
        /// Wall-clock timeout of this run in seconds (it kills this run's processes only).
        #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "30")]
        timeout: Duration,
        /// Set an environment variable for this run. Repeatable.
        #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_env)]
        env: Vec<(String, String)>,
        /// Feed the program's stdin from a file, or - for this process's stdin.
        #[arg(long, value_name = "FILE|-")]
        stdin: Option<PathBuf>,
        /// Print the JSON report instead of passing output through.
        #[arg(long)]
        json: bool,
        /// A program and its arguments, after --.
        #[arg(last = true, value_name = "PROGRAM")]
        program: Vec<OsString>,
    },
    /// Run a Python cell in a session's stateful context (variables persist between cells):
    /// output as it is written, then the cell's value. Exit status: 0, 1 when the cell raised,
    /// 124 when it timed out, 130 when it was interrupted, 125 when the interpreter died.
    Execute {
        id: String,
        /// The context (default: the session's default context, made on first use).
        #[arg(long, value_name = "CONTEXT_ID")]
        context: Option<String>,
        /// The cell's code; without it (or with -c -), read from stdin.
        #[arg(short = 'c', value_name = "CODE")]
        code: Option<String>,
        /// The cell's timeout in seconds (it is interrupted; the state survives).
        #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "30")]
        timeout: Duration,
        /// Print the answer as JSON at the end instead of the output as it comes.
        #[arg(long)]
        json: bool,
    },
    /// Copy a host file into a session's work dir (INSIDE defaults to its name).
    Put {
        id: String,
        host: PathBuf,
        inside: Option<String>,
        /// Octal mode [default: 0755 for an executable host file, else 0644]
        #[arg(long, value_name = "MODE")]
        mode: Option<String>,
    },
    /// Copy a file out of a session's work dir to HOST (- or nothing: stdout).
    Get {
        id: String,
        inside: String,
        host: Option<PathBuf>,
    },
    /// List the sessions, or with ID the files of a session's work dir (or of DIR in it).
    Ls {
        id: Option<String>,
        dir: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a session, or with PATH one file (or empty directory) of its work dir.
    Rm { id: String, path: Option<String> },
}

/// Percent-encodes a work-dir path for a URL (keeps `/` and unreserved characters).
fn encode_path(p: &str) -> String {
    let mut out = String::new();
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A session id as it goes into a URL (ids are hex; anything else is refused here).
fn id(id: &str) -> anyhow::Result<&str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("{id:?} is not a session id");
    }
    Ok(id)
}

/// One request; `Err` for a transport failure or any answer but 2xx.
fn call(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<hyper::body::Bytes> {
    let (status, bytes) = client::call(socket, method, path, content_type, body)?;
    if !(200..300).contains(&status) {
        bail!("{}", client::error_message(status, &bytes).1);
    }
    Ok(bytes)
}

fn call_json(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
    let b = call(
        socket,
        method,
        path,
        "application/json",
        body.unwrap_or_default(),
    )?;
    serde_json::from_slice(&b).context("the daemon's answer is not JSON")
}

/// `rsandbox session ...`: returns the process exit code.
pub fn main(a: &SessionArgs) -> i32 {
    let socket = a
        .daemon
        .clone()
        .unwrap_or_else(rsandbox::daemon::listen::default_socket);
    if let SessionCmd::Run {
        id: sid,
        code,
        language,
        timeout,
        env,
        stdin,
        json,
        program,
    } = &a.cmd
    {
        let answer = run_body(code, language, *timeout, env, stdin, program).and_then(|b| {
            client::post(
                &socket,
                &format!("/v1/sessions/{}/run", id(sid)?),
                serde_json::to_vec(&b)?,
            )
        });
        return client::print_report(answer, *json, *timeout);
    }
    if let SessionCmd::Execute {
        id: sid,
        context,
        code,
        timeout,
        json,
    } = &a.cmd
    {
        return match execute(
            &socket,
            sid,
            context.as_deref(),
            code.as_deref(),
            *timeout,
            *json,
        ) {
            Ok(code) => code,
            Err(e) => client::report_error(*json, "session", &format!("{e:#}")),
        };
    }
    match command(&socket, &a.cmd) {
        Ok(()) => 0,
        Err(e) => client::report_error(false, "session", &format!("{e:#}")),
    }
}

/// `rsandbox session execute`: streams the cell's events; returns the exit code its status
/// gives.
fn execute(
    socket: &Path,
    sid: &str,
    context: Option<&str>,
    code: Option<&str>,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<i32> {
    let code = match code {
        Some(c) if c != "-" => c.to_string(),
        _ => {
            let mut c = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut c)
                .context("reading the cell from stdin")?;
            c
        }
    };
    let mut body = json!({"code": code, "limits": {"timeout": timeout.as_secs_f64()}});
    if let Some(c) = context {
        body["context_id"] = c.into();
    }
    let mut end = Value::Null;
    let path = format!("/v1/sessions/{}/execute", id(sid)?);
    let (status, err) = client::post_stream(socket, &path, serde_json::to_vec(&body)?, &mut |l| {
        let v: Value = serde_json::from_slice(l).unwrap_or_default();
        if v["type"] == "end" {
            end = v;
        } else if !json {
            print_cell_event(&v);
        }
    })?;
    if !(200..300).contains(&status) {
        bail!("{}", client::error_message(status, &err).1);
    }
    if json {
        println!("{end}");
    }
    Ok(match end["status"].as_str() {
        Some("ok") => 0,
        Some("error") => 1,
        Some("timeout") => 124,
        Some("interrupted") => 130,
        Some("failed") => bail!(
            "{}",
            end["message"].as_str().unwrap_or("the cell did not run")
        ),
        _ => 125,
    })
}

/// One streamed event of a cell, as a terminal shows it.
fn print_cell_event(v: &Value) {
    use std::io::Write;
    let bytes = |v: &Value| match (v["text"].as_str(), v["b64"].as_str()) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    match v["type"].as_str() {
        Some("stdout") => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes(v));
            let _ = out.flush();
        }
        Some("stderr") => {
            let _ = std::io::stderr().write_all(&bytes(v));
        }
        Some("result") => match v["data"]["text/plain"].as_str() {
            Some(t) => println!("{t}"),
            None => println!("<display data>"),
        },
        Some("error") => eprint!("{}", v["traceback"].as_str().unwrap_or("")),
        _ => {}
    }
}

fn run_body(
    code: &Option<String>,
    language: &str,
    timeout: Duration,
    env: &[(String, String)],
    stdin: &Option<PathBuf>,
    program: &[OsString],
) -> anyhow::Result<Value> {
    let mut body = json!({
        "limits": {"timeout": timeout.as_secs_f64()},
        "env": client::env_json(env),
    });
    match (code, program.is_empty()) {
        (Some(c), true) => {
            body["code"] = c.clone().into();
            body["language"] = language.into();
        }
        (None, false) => {
            let argv: Vec<String> = program
                .iter()
                .map(|s| s.to_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow!("arguments must be UTF-8 to go to a daemon"))?;
            body["argv"] = argv.into();
        }
        _ => bail!("nothing to run: give -c CODE or -- PROGRAM [ARGS...]"),
    }
    if let Some(s) = stdin {
        let data = if s == Path::new("-") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        } else {
            std::fs::read(s).with_context(|| format!("reading --stdin {}", s.display()))?
        };
        body["stdin_b64"] = base64::engine::general_purpose::STANDARD
            .encode(data)
            .into();
    }
    Ok(body)
}

fn command(socket: &Path, cmd: &SessionCmd) -> anyhow::Result<()> {
    match cmd {
        SessionCmd::Create {
            cpus,
            mem,
            pids,
            net,
            allow_host,
            seccomp,
            gpus,
            env,
            idle_timeout,
            lifetime,
            json,
        } => {
            let net = super::network(net.as_ref(), allow_host)?;
            let mut limits = json!({ "network": net.name() });
            if let Net::Allowlist(rules) = &net {
                limits["allowed_hosts"] = rules.iter().map(|r| r.to_string()).collect();
            }
            for (k, v) in [
                ("cpus", cpus.map(Value::from)),
                ("memory_mb", mem.map(Value::from)),
                ("pids", pids.map(Value::from)),
                ("gpus", gpus.map(Value::from)),
            ] {
                if let Some(v) = v {
                    limits[k] = v;
                }
            }
            let mut body =
                json!({"limits": limits, "seccomp": seccomp, "env": client::env_json(env)});
            if let Some(t) = idle_timeout {
                body["idle_timeout"] = t.as_secs_f64().into();
            }
            if let Some(t) = lifetime {
                body["lifetime"] = t.as_secs_f64().into();
            }
            let s = call_json(socket, "POST", "/v1/sessions", Some(body))?;
            if *json {
                println!("{s}");
            } else {
                println!("{}", s["id"].as_str().unwrap_or_default());
            }
        }
        SessionCmd::Run { .. } | SessionCmd::Execute { .. } => unreachable!("handled by main"),
        SessionCmd::Put {
            id: sid,
            host,
            inside,
            mode,
        } => {
            let data =
                std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
            let inside = match inside {
                Some(i) => i.clone(),
                None => host
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow!("{} has no UTF-8 file name", host.display()))?
                    .to_string(),
            };
            let mode = match mode {
                Some(m) => m.clone(),
                None => format!("{:o}", super::file_mode(host)),
            };
            call(
                socket,
                "PUT",
                &format!(
                    "/v1/sessions/{}/files/{}?mode={}",
                    id(sid)?,
                    encode_path(&inside),
                    encode_path(&mode)
                ),
                "application/octet-stream",
                data,
            )?;
        }
        SessionCmd::Get {
            id: sid,
            inside,
            host,
        } => {
            let data = call(
                socket,
                "GET",
                &format!("/v1/sessions/{}/files/{}", id(sid)?, encode_path(inside)),
                "application/json",
                Vec::new(),
            )?;
            match host {
                Some(h) if h != Path::new("-") => {
                    std::fs::write(h, &data).with_context(|| format!("writing {}", h.display()))?
                }
                _ => std::io::stdout().write_all(&data)?,
            }
        }
        SessionCmd::Ls { id: None, json, .. } => {
            let v = call_json(socket, "GET", "/v1/sessions", None)?;
            if *json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<32}  {:<6}  {:<7}  {:>6}  {:>5}  API",
                "ID", "STATE", "MEMORY", "CPUS", "RUNS"
            );
            for s in v["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{:<32}  {:<6}  {:>4} MB  {:>6}  {:>5}  {}",
                    s["id"].as_str().unwrap_or_default(),
                    s["state"].as_str().unwrap_or_default(),
                    s["limits"]["memory_mb"].to_string(),
                    s["limits"]["cpus"].to_string(),
                    s["runs"].to_string(),
                    s["api"].as_str().unwrap_or_default(),
                );
            }
        }
        SessionCmd::Ls {
            id: Some(sid),
            dir,
            json,
        } => {
            let v = call_json(
                socket,
                "GET",
                &format!(
                    "/v1/sessions/{}/files?dir={}",
                    id(sid)?,
                    encode_path(dir.as_deref().unwrap_or(""))
                ),
                None,
            )?;
            if *json {
                println!("{v}");
                return Ok(());
            }
            for e in v["entries"].as_array().into_iter().flatten() {
                let kind = match e["type"].as_str() {
                    Some("dir") => 'd',
                    Some("symlink") => 'l',
                    Some("file") => '-',
                    _ => '?',
                };
                println!(
                    "{kind} {:04o} {:>10}  {}",
                    e["mode"].as_u64().unwrap_or(0),
                    e["size"].to_string(),
                    e["name"].as_str().unwrap_or_default()
                );
            }
        }
        SessionCmd::Rm { id: sid, path } => {
            let url = match path {
                Some(p) => format!("/v1/sessions/{}/files/{}", id(sid)?, encode_path(p)),
                None => format!("/v1/sessions/{}", id(sid)?),
            };
            call(socket, "DELETE", &url, "application/json", Vec::new())?;
        }
    }
    Ok(())
}
