//! The daemon under load, side by side in one run: N clients sending hello-world Python to
//! `rsandbox serve` (SandboxFusion's `/run_code`, a fresh interpreter per run, all layers on)
//! against N workers running bare `python3 -c` on the same cores. Prints requests/s and
//! p50/p90/p99 latency of each, and the ratio of throughputs (the goal: at least 0.85).
//!
//! `cargo bench --bench daemon` (env: `BENCH_N` requests per round, default 300; `BENCH_CONC`
//! clients, default 2 per core; `BENCH_ROUNDS` alternating rounds, default 3; medians of the
//! rounds are reported; `BENCH_BIN` another rsandbox binary to drive, for A/B comparisons).

#[path = "support/serve.rs"]
mod serve;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CODE: &str = "print('hello world')";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round: `n` jobs over `conc` threads; (requests/s, sorted latencies in ms).
fn round(n: u64, conc: u64, job: Arc<dyn Fn() + Send + Sync>) -> (f64, Vec<f64>) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let t = Instant::now();
                    job();
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (rate, lat)
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn post(socket: &Path, body: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connecting to the daemon");
    write!(
        s,
        "POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The daemon's warm-pool counters from `/metrics` (whether the pool kept up with the load).
fn pool_counters(socket: &Path) -> String {
    let mut s = UnixStream::connect(socket).expect("connecting to the daemon");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| l.starts_with("rsandbox_warm_total"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let n = env_num("BENCH_N", 300);
    let conc = env_num("BENCH_CONC", 2 * cores);
    let rounds = env_num("BENCH_ROUNDS", 3);
    // The interpreter the sandbox runs: the real one, never a pyenv shim.
    let python = PathBuf::from("/usr/bin/python3");

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bench.sock");
    let mut daemon = serve::start(&socket);

    let body = serde_json::json!({"code": CODE, "language": "python"}).to_string();
    let reply = post(&socket, &body);
    assert!(reply.contains("\"status\":\"Success\""), "{reply}");
    let s = socket.clone();
    let daemon_job: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let r = post(&s, &body);
        assert!(r.contains("hello world"), "{r}");
    });
    let py = python.clone();
    let bare_job: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let o = Command::new(&py)
            .args(["-c", CODE])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success() && o.stdout == b"hello world\n");
    });
    // Warm-up of both.
    round(20, conc, daemon_job.clone());
    round(20, conc, bare_job.clone());

    let (mut rates, mut lats) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for r in 0..rounds {
        for (i, job) in [&bare_job, &daemon_job].into_iter().enumerate() {
            let (rate, lat) = round(n, conc, job.clone());
            eprintln!(
                "round {r}: {} {rate:.1}/s p50 {:.1} ms",
                ["bare", "daemon"][i],
                pct(&lat, 0.5)
            );
            rates[i].push(rate);
            lats[i].push(lat);
        }
    }
    let pool = pool_counters(&socket);
    // A graceful stop: the daemon tears its warm instances down (cgroups, state records), so
    // the bench leaves nothing behind (SIGKILL would leave them to the next start's sweep).
    // SAFETY: kill(2) on the daemon this bench started and has not reaped.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    println!(
        "\n{n} requests per round, {conc} concurrent, {cores} cores, {rounds} rounds (medians of the rounds); `{}` -c \"{CODE}\"\n",
        python.display()
    );
    println!("| run | requests/s | p50 ms | p90 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let mut med_rate = [0.0; 2];
    for (i, name) in ["bare python3 -c, in parallel", "rsandbox serve, /run_code"]
        .iter()
        .enumerate()
    {
        med_rate[i] = median(rates[i].clone());
        let m = |p: f64| median(lats[i].iter().map(|l| pct(l, p)).collect());
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            med_rate[i],
            m(0.5),
            m(0.9),
            m(0.99)
        );
    }
    println!(
        "\ndaemon / bare throughput: {:.2} (goal: at least 0.85)",
        med_rate[1] / med_rate[0]
    );
    println!("warm pool, whole run: {pool}");
}
