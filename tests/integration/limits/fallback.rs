//! Without cgroups: the memory and CPU-time watchdogs and RLIMIT_NPROC, in the library and CLI.

use std::time::Duration;

use rsandbox::{Command, Limit, Status};

use super::{assert_status, FORK_BOMB, MEMORY_BOMB, MIB};
use crate::util;

/// Whether this pass runs without cgroups (the rlimit/watchdog fallback), as a non-root user.
fn fallback_pass() -> bool {
    if !util::require("userns") || !util::require("nonroot") {
        return false;
    }
    if let Ok(s) = rsandbox::testing::cgroup::setup() {
        eprintln!("SKIP: this user has {} (a delegated subtree), so the fallback is not used here; see the CLI fallback tests", s.name());
        return false;
    }
    true
}

/// Without cgroups (a non-root user on a v1 host) the memory limit is the supervisor's watchdog,
/// which stops a memory bomb and reports it as `memory`.
#[test]
fn fallback_watchdog_stops_a_memory_bomb() {
    let _g = util::shared();
    if !fallback_pass() {
        return;
    }
    let sb = util::builder().memory(64 * MIB).build().unwrap();
    assert_eq!(
        (
            sb.enforcement().memory.as_str(),
            sb.enforcement().pids.as_str()
        ),
        ("watchdog", "rlimit")
    );
    assert_eq!(sb.enforcement().cpu, "none");
    let o = util::py(&sb, MEMORY_BOMB);
    assert_status(&o, Status::Memory, Limit::Memory);
    assert!(!util::stdout(&o).contains("survived"), "{o:#?}");
    assert_eq!(
        (o.enforcement.memory.as_str(), o.enforcement.pids.as_str()),
        ("watchdog", "rlimit")
    );
    assert!(o.wall_ms < 10_000.0, "{o:#?}");
}

/// Without cgroups, pids is RLIMIT_NPROC (per user namespace, so per instance): a fork bomb
/// fails to fork and the run ends. The hit is enforced but not attributed: the kernel reports
/// no event, so the status is the program's own failure and `pids` is not in `limits_hit`.
#[test]
fn fallback_rlimit_stops_a_fork_bomb() {
    let _g = util::shared();
    if !fallback_pass() {
        return;
    }
    let sb = util::builder().pids(20).build().unwrap();
    let o = util::sh(&sb, FORK_BOMB);
    assert!(
        o.stderr.as_deref().unwrap_or("").contains("Cannot fork"),
        "the fork bomb did not see a fork failure: {o:#?}"
    );
    assert!(util::stdout(&o).is_empty(), "{o:#?}");
    assert_eq!((o.status, o.exit_code), (Status::Exit, Some(2)), "{o:#?}");
    assert!(
        !o.limits_hit.contains(&Limit::Pids),
        "rlimit hits are not attributed (update the docs if they are now): {o:#?}"
    );
    assert!(o.wall_ms < 5000.0, "{o:#?}");
    assert_eq!(o.enforcement.pids, "rlimit");
    // Python sees the same limit as EAGAIN.
    let o = util::py(&sb, "import os\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n            import time; time.sleep(100)\nexcept BlockingIOError as e:\n    print('EAGAIN', e.errno)\n");
    assert_eq!(
        util::stdout(&o),
        format!("EAGAIN {}\n", libc::EAGAIN),
        "{o:#?}"
    );
}

/// `rsandbox run` with `RSANDBOX_NO_CGROUPS=1 --json`: the report.
fn cli_without_cgroups(args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new(util::bin())
        .arg("run")
        .arg("--json")
        .args(args)
        .env("RSANDBOX_NO_CGROUPS", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running rsandbox");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not a JSON report ({e}): {o:?}"))
}

/// Without cgroups the CPU-time watchdog counts each exec of an instance alone: two runs of
/// 0.35 s each under a 0.5 s limit both finish (the reaper's count of what earlier runs used is
/// not the next run's), and a third that loops is stopped near the limit.
#[test]
fn fallback_cpu_time_counts_each_exec_of_an_instance_alone() {
    let _g = util::shared();
    if !fallback_pass() {
        return;
    }
    let sb = util::builder()
        .cpu_time(Duration::from_millis(500))
        .build()
        .unwrap();
    let inst = sb.create().unwrap();
    let burn = "import time
while time.process_time() < 0.35: pass
print('done')";
    for run in 1..=2 {
        let o = inst
            .exec(&Command::new("/usr/bin/python3").args(["-c", burn]))
            .unwrap();
        assert_eq!(
            (o.status, util::stdout(&o).as_str()),
            (Status::Ok, "done\n"),
            "run {run}: {o:#?}"
        );
    }
    let o = inst
        .exec(&Command::new("/usr/bin/python3").args(["-c", "while True: pass"]))
        .unwrap();
    assert_eq!(o.status, Status::CpuTime, "{o:#?}");
    assert!((500.0..900.0).contains(&o.cpu_ms), "{o:#?}");
    inst.destroy().unwrap();
}

/// The fallback in every pass, through the CLI with cgroups turned off: a memory bomb is stopped
/// by the watchdog as `memory`, a fork bomb by RLIMIT_NPROC.
#[test]
fn cli_fallback_without_cgroups_stops_memory_and_fork_bombs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let v = cli_without_cgroups(&["--mem", "64", "-c", MEMORY_BOMB]);
    assert_eq!(
        (v["status"].as_str(), v["limits_hit"][0].as_str()),
        (Some("memory"), Some("memory")),
        "{v}"
    );
    assert_eq!(
        (
            v["enforcement"]["memory"].as_str(),
            v["enforcement"]["pids"].as_str()
        ),
        (Some("watchdog"), Some("rlimit")),
        "{v}"
    );
    assert_eq!(v["enforcement"]["cpu"], "none", "{v}");
    let v = cli_without_cgroups(&["--pids", "20", "--", "/bin/sh", "-c", FORK_BOMB]);
    assert!(v["stderr"].as_str().unwrap().contains("Cannot fork"), "{v}");
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("exit"), Some(2)),
        "{v}"
    );
}

/// Without cgroups the memory watchdog counts memory the way a cgroup would: pages that forked
/// children share with their parent once, and the interpreter's shared libraries not at all.
/// Seven processes sharing 40 MiB stay under a 100 MiB limit (summed resident sizes, 7 x 50
/// MiB, would have killed them), and a bomb in the same program shape is still stopped.
#[test]
fn cli_fallback_watchdog_counts_shared_memory_once() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let shared = "import os, time
b = bytearray(40 << 20)
for i in range(0, len(b), 4096): b[i] = 1
kids = []
for _ in range(6):
    p = os.fork()
    if p == 0:
        time.sleep(1.0)
        os._exit(0)
    kids.append(p)
for p in kids: os.waitpid(p, 0)
print('done')";
    let v = cli_without_cgroups(&["--mem", "100", "-c", shared]);
    assert_eq!(
        (v["status"].as_str(), v["stdout"].as_str()),
        (Some("ok"), Some("done\n")),
        "{v}"
    );
    assert_eq!(v["enforcement"]["memory"], "watchdog", "{v}");
    // Each child writes its own copy: 6 x 40 MiB of private memory.
    let bomb = shared.replace("time.sleep(1.0)", "b[:] = bytes(len(b)); time.sleep(1.0)");
    let v = cli_without_cgroups(&["--mem", "100", "-c", &bomb]);
    assert_eq!(
        (v["status"].as_str(), v["limits_hit"][0].as_str()),
        (Some("memory"), Some("memory")),
        "{v}"
    );
}

/// Without cgroups a CPU-time limit still ends an infinite loop and is reported as `cpu_time`
/// (DESIGN.md §5), near the limit asked for.
#[test]
fn cli_fallback_cpu_time_is_reported_as_cpu_time() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let v = cli_without_cgroups(&["--cpu-time", "0.5", "-c", "while True: pass"]);
    assert_eq!(v["status"], "cpu_time", "{v}");
    assert_eq!(v["limits_hit"], serde_json::json!(["cpu_time"]), "{v}");
    let cpu = v["cpu_ms"].as_f64().unwrap();
    assert!((500.0..900.0).contains(&cpu), "cpu_ms {cpu}: {v}");
    // Without --json: the program was SIGKILLed (137, not the sandbox's 125), and stderr says
    // which limit did it.
    let o = std::process::Command::new(util::bin())
        .args(["run", "--cpu-time", "0.5", "-c", "while True: pass"])
        .env("RSANDBOX_NO_CGROUPS", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(137), "{o:?}");
    assert!(err.contains("CPU-time limit (--cpu-time)"), "{err}");
}
