//! Startup cost, side by side in one run: bare `/bin/true` and `python3 -c pass`, the same
//! through the library (hot loop), through `rsandbox run` (a fresh process each time), and
//! through `unshare` and bubblewrap with the same namespaces when they are installed; hot, and
//! cold (after an idle spell). Prints a markdown table of medians and p99s.
//!
//! `cargo bench --bench startup` (env: `BENCH_N` iterations per row, default 200;
//! `BENCH_COLD` cold samples, default 3; `BENCH_IDLE_S` idle before each, default 10).

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use rsandbox::{Command, Sandbox, Status};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    name: String,
    samples: Vec<f64>,
}

fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99))
}

fn time<F: FnMut()>(n: u64, mut f: F) -> Vec<f64> {
    for _ in 0..n.min(10) {
        f(); // warm-up
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn proc_ok(argv: &[&str]) -> bool {
    Proc::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_proc(argv: &[String]) {
    let st = Proc::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    assert!(st.success(), "{argv:?} failed: {st}");
}

fn rsandbox_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/startup-xxxx -> target/<profile>/rsandbox
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("rsandbox");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({} missing)",
        bin.display()
    );
    bin
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_num("BENCH_N", 200);
    let cold_n = env_num("BENCH_COLD", 3);
    let idle = Duration::from_secs(env_num("BENCH_IDLE_S", 10));
    let python = "/usr/bin/python3";
    let sb = Sandbox::builder().build().expect("sandbox");
    // The same policy with one instance created ahead of time and teardown after the report.
    let warm = Sandbox::builder().warm(1).build().expect("sandbox");
    let bin = rsandbox_bin();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let ns = [
        "--user",
        "--map-user=1000",
        "--mount",
        "--pid",
        "--fork",
        "--net",
        "--ipc",
        "--uts",
        "--cgroup",
    ];
    let unshare = proc_ok(&[&["unshare"][..], &ns, &["/bin/true"]].concat());
    let bwrap_args = |prog: &[&str]| {
        let mut v = s(&[
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]);
        v.extend(s(prog));
        v
    };
    let bwrap = proc_ok(
        &bwrap_args(&["/bin/true"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );

    // A daemon with its warm pool, for `rsandbox run --daemon` (the CLI without its own build).
    let daemon_dir = tempfile::tempdir().expect("tempdir");
    let socket = daemon_dir.path().join("rsandbox.sock");
    let mut daemon = Proc::new(&bin)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rsandbox serve");
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socket.exists(), "rsandbox serve did not create its socket");
    let daemon_flag = format!("--daemon={}", socket.display());

    let run_in = |sb: &Sandbox, cmd: &Command| {
        let o = sb.run(cmd).expect("run");
        assert_eq!(o.status, Status::Ok, "{o:?}");
    };
    let lib = |cmd: &Command| run_in(&sb, cmd);
    let mut rows: Vec<Row> = Vec::new();
    let mut add = |name: &str, samples: Vec<f64>| {
        rows.push(Row {
            name: name.into(),
            samples,
        })
    };

    for (label, prog) in [
        ("/bin/true", vec!["/bin/true"]),
        ("python3 -c pass", vec![python, "-c", "pass"]),
    ] {
        add(&format!("bare {label}"), time(n, || run_proc(&s(&prog))));
        let cmd = Command::new(prog[0]).args(&prog[1..]);
        add(
            &format!("library {label} (hot loop)"),
            time(n, || lib(&cmd)),
        );
        add(
            &format!("library {label} (hot loop, warm pool)"),
            time(n, || run_in(&warm, &cmd)),
        );
        let mut cli = vec![bin.display().to_string(), "run".into(), "--".into()];
        cli.extend(s(&prog));
        add(&format!("rsandbox run {label}"), time(n, || run_proc(&cli)));
        let mut via = vec![
            bin.display().to_string(),
            "run".into(),
            daemon_flag.clone(),
            "--".into(),
        ];
        via.extend(s(&prog));
        add(
            &format!("rsandbox run --daemon {label}"),
            time(n, || run_proc(&via)),
        );
        if unshare {
            let mut u = s(&["unshare"]);
            u.extend(s(&ns));
            u.extend(s(&prog));
            add(
                &format!("unshare (7 namespaces) {label}"),
                time(n, || run_proc(&u)),
            );
        }
        if bwrap {
            add(
                &format!("bwrap --unshare-all {label}"),
                time(n, || run_proc(&bwrap_args(&prog))),
            );
        }
    }
    if cold_n > 0 {
        let true_cmd = Command::new("/bin/true");
        let mut cold_lib = Vec::new();
        let mut cold_bare = Vec::new();
        for _ in 0..cold_n {
            std::thread::sleep(idle);
            let t = Instant::now();
            run_proc(&s(&["/bin/true"]));
            cold_bare.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(idle);
            let t = Instant::now();
            lib(&true_cmd);
            cold_lib.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        add(
            &format!("bare /bin/true, cold (after {}s idle)", idle.as_secs()),
            cold_bare,
        );
        add(
            &format!("library /bin/true, cold (after {}s idle)", idle.as_secs()),
            cold_lib,
        );
    }

    // The cost of moving a process into a v1 cgroup, hot and after an idle spell (a global
    // rwsem's RCU grace period): what every instance pays on v1 hosts (v2 clones into place).
    if let Ok(rsandbox::testing::cgroup::Setup::V1 { bases }) = rsandbox::testing::cgroup::setup() {
        let mem = bases
            .iter()
            .find(|(c, _)| *c == "memory")
            .map(|(_, b)| b.join(format!("rsandbox-bench-{}", std::process::id())));
        if let Some(dir) = mem.filter(|d| std::fs::create_dir(d).is_ok()) {
            let attach = || {
                let mut child = Proc::new("/bin/sleep").arg("5").spawn().expect("sleep");
                let t = Instant::now();
                std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).expect("attach");
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let _ = child.kill();
                let _ = child.wait();
                ms
            };
            let hot: Vec<f64> = (0..n.min(50)).map(|_| attach()).collect();
            let cold: Vec<f64> = (0..cold_n)
                .map(|_| {
                    std::thread::sleep(idle);
                    attach()
                })
                .collect();
            add("v1 cgroup attach (write cgroup.procs), hot", hot);
            if !cold.is_empty() {
                add(
                    &format!("v1 cgroup attach, cold (after {}s idle)", idle.as_secs()),
                    cold,
                );
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }

    // SAFETY: kill(2) on the daemon this bench started and has not reaped.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\nstartup bench: n={n} per hot row, {cold_n} cold samples; {} CPUs, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim()
    );
    println!(
        "unshare: {}, bwrap: {}\n",
        if unshare {
            "yes"
        } else {
            "not installed/usable"
        },
        if bwrap { "yes" } else { "not installed/usable" }
    );
    println!("| run | median ms | p99 ms |");
    println!("|---|---:|---:|");
    let mut medians = std::collections::HashMap::new();
    for r in rows.iter_mut() {
        let (med, p99) = stats(&mut r.samples);
        medians.insert(r.name.clone(), med);
        println!("| {} | {med:.2} | {p99:.2} |", r.name);
    }
    let get = |k: &str| medians.get(k).copied();
    if let (Some(bare), Some(lib)) = (get("bare /bin/true"), get("library /bin/true (hot loop)")) {
        println!("\nlibrary adds {:.2} ms over bare /bin/true", lib - bare);
        if let Some(w) = get("library /bin/true (hot loop, warm pool)") {
            println!("library with a warm pool adds {:.2} ms", w - bare);
        }
        if let Some(u) = get("unshare (7 namespaces) /bin/true") {
            println!(
                "unshare adds {:.2} ms over bare /bin/true (goal: library adds less)",
                u - bare
            );
        }
        if let (Some(b), Some(c)) = (
            get("bwrap --unshare-all /bin/true"),
            get("rsandbox run /bin/true"),
        ) {
            println!(
                "rsandbox run adds {:.2} ms, bwrap adds {:.2} ms (goal: at most half)",
                c - bare,
                b - bare
            );
            if let Some(d) = get("rsandbox run --daemon /bin/true") {
                println!("rsandbox run --daemon adds {:.2} ms", d - bare);
            }
        }
    }
}
