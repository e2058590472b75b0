//! Stateful contexts against one-shot runs, side by side in one run, over the daemon's Unix
//! socket: a trivial cell (`x = x + 1`) in a live context against a fresh-interpreter
//! `/v1/run` of the same code (the goal: the cell's median at most 0.2 times the run's); the
//! first cell of a new context (made and run) against a one-shot run; and the memory (PSS) of
//! an idle context without and with IPython.
//!
//! `cargo bench --bench context` (env: `BENCH_N` cells and runs per round, default 200;
//! `BENCH_ROUNDS` alternating rounds, default 3; `BENCH_BIN` another rsandbox binary).

#[path = "support/serve.rs"]
mod serve;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One request with a JSON body: (status, body as JSON).
fn call(socket: &Path, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).expect("connecting to the daemon");
    let body = body.to_string();
    // A DELETE is answered (and the connection closed) before its body is read: a write that
    // finds the socket closed is fine, the answer is still there to read.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// PSS in KiB of the context's interpreter: the newest python3 process of the sandbox user
/// (uid mapped from 1000) that runs the driver.
fn driver_pss_kb() -> Option<u64> {
    let mut newest: Option<(u64, u32)> = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = b"rsandbox context driver";
        if !cmd.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let start: u64 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(19)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        if newest.map_or(true, |(s, _)| start > s) {
            newest = Some((start, pid));
        }
    }
    let (_, pid) = newest?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let n = env_num("BENCH_N", 200);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let mut daemon = serve::start(&socket);

    let (_, s) = call(&socket, "POST", "/v1/sessions", &json!({}));
    let sid = s["id"].as_str().expect("a session").to_string();
    let (_, c) = call(
        &socket,
        "POST",
        &format!("/v1/sessions/{sid}/contexts"),
        &json!({"ipython": false}),
    );
    let cid = c["id"].as_str().expect("a context").to_string();
    let exec = format!("/v1/sessions/{sid}/execute");
    let cell = json!({"code": "x = x + 1", "context_id": cid});
    let (st, v) = call(
        &socket,
        "POST",
        &exec,
        &json!({"code": "x = 0", "context_id": cid}),
    );
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")), "{v}");
    let run = json!({"code": "x = 0\nx = x + 1"});

    let (mut cells, mut runs) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let mut c = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let (st, v) = call(&socket, "POST", &exec, &cell);
            assert!(st == 200 && v["status"] == "ok", "{v}");
            c.push(ms(t));
        }
        let mut o = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let (st, v) = call(&socket, "POST", "/v1/run", &run);
            assert!(st == 200 && v["status"] == "ok", "{v}");
            o.push(ms(t));
        }
        eprintln!(
            "round {r}: cell {:.2} ms, one-shot run {:.2} ms (medians)",
            median(c.clone()),
            median(o.clone())
        );
        cells.push(median(c));
        runs.push(median(o));
    }
    let (cell_ms, run_ms) = (median(cells), median(runs));

    // The first cell of a new context: the interpreter starts, then the cell runs.
    let mut firsts = Vec::new();
    let mut first_runs = Vec::new();
    let mut pss = Vec::new();
    for ipython in [false, true] {
        let mut f = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let (_, c) = call(
                &socket,
                "POST",
                &format!("/v1/sessions/{sid}/contexts"),
                &json!({"ipython": ipython}),
            );
            let id = c["id"].as_str().expect("a context").to_string();
            let (_, v) = call(
                &socket,
                "POST",
                &exec,
                &json!({"code": "x = 1", "context_id": id}),
            );
            assert_eq!(v["status"], "ok", "{v}");
            f.push(ms(t));
            pss.push((ipython, driver_pss_kb()));
            call(
                &socket,
                "DELETE",
                &format!("/v1/sessions/{sid}/contexts/{id}"),
                &json!({}),
            );
        }
        firsts.push(median(f));
        let mut o = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            call(&socket, "POST", "/v1/run", &json!({"code": "x = 1"}));
            o.push(ms(t));
        }
        first_runs.push(median(o));
    }
    call(
        &socket,
        "DELETE",
        &format!("/v1/sessions/{sid}"),
        &json!({}),
    );
    // SAFETY: kill(2) on the daemon this bench started and has not reaped.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    let pss_of = |ipy: bool| {
        let v: Vec<f64> = pss
            .iter()
            .filter(|(i, p)| *i == ipy && p.is_some())
            .map(|(_, p)| p.unwrap() as f64 / 1024.0)
            .collect();
        if v.is_empty() {
            "n/a".to_string()
        } else {
            format!("{:.1} MiB", median(v))
        }
    };
    println!("\n{n} cells and runs per round, {rounds} rounds (medians of the round medians)\n");
    println!("| what | median ms |");
    println!("|---|---:|");
    println!("| trivial cell `x = x + 1` in a live context | {cell_ms:.2} |");
    println!("| one-shot `/v1/run` of the same code (fresh interpreter) | {run_ms:.2} |");
    println!(
        "| first cell of a new context, without IPython (start + cell) | {:.2} |",
        firsts[0]
    );
    println!(
        "| first cell of a new context, with IPython | {:.2} |",
        firsts[1]
    );
    println!(
        "| one-shot `/v1/run` beside them | {:.2} |",
        median(first_runs.clone())
    );
    println!(
        "\ncell / one-shot run: {:.3} (goal: at most 0.2)",
        cell_ms / run_ms
    );
    println!(
        "first cell (no IPython) / one-shot run: {:.2} (goal: at most 1)",
        firsts[0] / median(first_runs)
    );
    println!(
        "idle context PSS after one cell: without IPython {}, with IPython {} (goal without: at most 12 MiB)",
        pss_of(false),
        pss_of(true)
    );
}
