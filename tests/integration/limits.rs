//! Resource limits: memory, pids, CPU quota, CPU time and affinity under cgroup v1 or v2, the
//! rlimit/watchdog fallback without cgroups, how hits are reported, and a soak that leaves no
//! cgroups (live or dying) behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsandbox::{Command, Limit, Outcome, Sandbox, Status};

use crate::util::{self, Fingerprint};

const MIB: u64 = 1 << 20;

/// Grows by 10 MiB (zero-filled, so resident) at a time up to 2 GiB, then says it survived: a
/// limit that does not hold fails the test without taking the host down.
const MEMORY_BOMB: &str = "b = []\nfor i in range(200):\n    b.append(bytearray(10 << 20))\nprint('survived', flush=True)\n";

/// Starts up to 200 background sleeps, one at a time.
const FORK_BOMB: &str =
    "i=0; while [ $i -lt 200 ]; do sleep 100 & i=$((i+1)); done; echo 'all forked'";

fn sh_cmd(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

/// The cgroup mechanism rsandbox uses in this process ("cgroup1" or "cgroup2"), or `None` with a
/// SKIP line when it cannot use cgroups. Fails instead when the host's layout is listed in
/// `RSANDBOX_TEST_EXPECT` and this pass should have it: as root, or on a v2 host (where an
/// unprivileged user is given a delegated subtree). An unprivileged user on a v1/hybrid host
/// never has cgroups (v1 is not delegated), so that pass skips.
fn cgroups() -> Option<&'static str> {
    if !util::require("userns") {
        return None;
    }
    match rsandbox::cgroup::setup() {
        Ok(s) => util::require(s.name()).then_some(s.name()),
        Err(why) => {
            let v2 = rsandbox::probe::host().cgroup_layout == rsandbox::probe::CgroupLayout::V2;
            let feature = if v2 { "cgroup2" } else { "cgroup1" };
            let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
            if expected.split(',').any(|f| f.trim() == feature) && (util::is_root() || v2) {
                panic!("{feature} is listed in RSANDBOX_TEST_EXPECT but rsandbox cannot use cgroups: {why}");
            }
            eprintln!("SKIP: rsandbox cannot use cgroups in this pass ({why}); test not run");
            None
        }
    }
}

/// Whether this pass runs without cgroups (the rlimit/watchdog fallback), as a non-root user.
fn fallback_pass() -> bool {
    if !util::require("userns") || !util::require("nonroot") {
        return false;
    }
    if let Ok(s) = rsandbox::cgroup::setup() {
        eprintln!("SKIP: this user has {} (a delegated subtree), so the fallback is not used here; see the CLI fallback tests", s.name());
        return false;
    }
    true
}

/// The first of `dirs` that has `file` (the controller's directory on v1; the one on v2).
fn with_file<'a>(dirs: &'a [PathBuf], file: &str) -> Option<&'a Path> {
    dirs.iter()
        .map(PathBuf::as_path)
        .find(|d| d.join(file).exists())
}

/// Tasks (threads) in a cgroup and its descendants, from the kernel's task lists.
fn tasks_in(dir: &Path) -> u64 {
    let list = if dir.join("cgroup.threads").exists() {
        "cgroup.threads"
    } else {
        "tasks"
    };
    let here = std::fs::read_to_string(dir.join(list))
        .map(|t| t.lines().count() as u64)
        .unwrap_or(0);
    let below: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| tasks_in(&e.path()))
        .sum();
    here + below
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn assert_status(o: &Outcome, status: Status, limit: Limit) {
    assert_eq!(o.status, status, "{o:#?}");
    assert!(
        o.limits_hit.contains(&limit),
        "limits_hit lacks {limit:?}: {o:#?}"
    );
}

/// A Python program that forks `n` processes, each busy for `secs` of wall time, waits for them,
/// and prints its affinity.
fn busy_processes(n: u32, secs: f64) -> String {
    format!(
        "import os, time\n\
         pids = []\n\
         for _ in range({n}):\n\
         \x20   pid = os.fork()\n\
         \x20   if pid == 0:\n\
         \x20       end = time.monotonic() + {secs}\n\
         \x20       while time.monotonic() < end: pass\n\
         \x20       os._exit(0)\n\
         \x20   pids.append(pid)\n\
         for p in pids: os.waitpid(p, 0)\n\
         print(len(os.sched_getaffinity(0)))\n"
    )
}

/// A memory bomb under a 64 MiB limit is OOM-killed by the cgroup and reported as `memory`;
/// its peak stays at the limit (no swap to spill into) and the report names the cgroup version.
#[test]
fn memory_bomb_is_stopped_and_reported_as_memory() {
    let _g = util::shared();
    let Some(mechanism) = cgroups() else { return };
    let limit = 64 * MIB;
    let sb = util::builder().memory(limit).build().unwrap();
    assert_eq!(sb.enforcement().memory, mechanism);
    let o = util::py(&sb, MEMORY_BOMB);
    assert_status(&o, Status::Memory, Limit::Memory);
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o:#?}");
    assert!(!util::stdout(&o).contains("survived"), "{o:#?}");
    assert!(o.oom_kills >= 1, "{o:#?}");
    assert_eq!(o.enforcement.memory, mechanism, "{o:#?}");
    let peak = o.peak_memory_bytes.expect("the cgroup reports a peak");
    assert!(
        peak >= limit / 2 && peak <= limit + MIB,
        "peak {peak} vs limit {limit}: {o:#?}"
    );
    // In a session the bomb runs in its run's cgroup under the instance's limit: reported the
    // same, and the session lives on.
    let inst = sb.create().unwrap();
    let o = inst.exec(&Command::python(MEMORY_BOMB)).unwrap();
    assert_status(&o, Status::Memory, Limit::Memory);
    assert!(o.oom_kills >= 1, "{o:#?}");
    let o = inst.exec(&sh_cmd("echo alive")).unwrap();
    assert_eq!(
        (o.status, util::stdout(&o).as_str(), o.oom_kills),
        (Status::Ok, "alive\n", 0),
        "{o:#?}"
    );
    assert!(
        o.limits_hit.is_empty(),
        "an earlier run's OOM kill is attributed to this one: {o:#?}"
    );
    inst.destroy().unwrap();
}

/// The instance's cgroup holds the builder's limits as the kernel sees them: memory with swap
/// limited to nothing (v1: memsw = memory; v2: memory.swap.max 0), pids.max and the CPU quota.
#[test]
fn instance_cgroup_holds_the_limits_with_swap_off() {
    let _g = util::shared();
    let Some(mechanism) = cgroups() else { return };
    let (memory, pids, cpus) = (96 * MIB, 37u64, 0.5);
    let sb = util::builder()
        .memory(memory)
        .pids(pids)
        .cpus(cpus)
        .build()
        .unwrap();
    let inst = sb.create().unwrap();
    let o = inst.exec(&sh_cmd("echo alive")).unwrap();
    assert_eq!(util::stdout(&o), "alive\n", "{o:#?}");
    let dirs = util::instance_cgroups(&sb, &inst);
    for d in &dirs {
        assert!(
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rsandbox-"),
            "{}",
            d.display()
        );
    }
    if mechanism == "cgroup1" {
        let mem = with_file(&dirs, "memory.limit_in_bytes").expect("a memory cgroup");
        assert_eq!(
            read_trim(&mem.join("memory.limit_in_bytes")),
            memory.to_string()
        );
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read_trim(&mem.join("memory.memsw.limit_in_bytes")),
                memory.to_string(),
                "memory+swap must equal memory (no swap)"
            );
        } else {
            // Swap accounting is off in this kernel: memsw files do not exist, and swappiness 0
            // is all that keeps the instance from swapping.
            assert_eq!(
                read_trim(&mem.join("memory.swappiness")),
                "0",
                "no memsw files (swap accounting off), and swappiness is not 0"
            );
        }
        let p = with_file(&dirs, "pids.max").expect("a pids cgroup");
        assert_eq!(read_trim(&p.join("pids.max")), pids.to_string());
        let c = with_file(&dirs, "cpu.cfs_quota_us").expect("a cpu cgroup");
        assert_eq!(read_trim(&c.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read_trim(&c.join("cpu.cfs_quota_us")), "50000");
    } else {
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        let d = &dirs[0];
        assert_eq!(read_trim(&d.join("memory.max")), memory.to_string());
        let swap = d.join("memory.swap.max");
        assert!(swap.exists(), "{} is absent: this kernel has no swap support compiled in (CONFIG_SWAP / CONFIG_MEMCG_SWAP)", swap.display());
        assert_eq!(read_trim(&swap), "0");
        assert_eq!(read_trim(&d.join("pids.max")), pids.to_string());
        assert!(
            d.join("cpu.max").exists(),
            "the cpu controller is not enabled in {}",
            d.display()
        );
        assert_eq!(read_trim(&d.join("cpu.max")), "50000 100000");
    }
    inst.destroy().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} is left after destroy", d.display());
    }
}

/// A fork bomb under pids 20 is stopped at the limit: the shell cannot fork, the run ends at
/// once as `pids`, and the host never sees more than 20 tasks in the instance. The sleeps it
/// left are the session's background processes now (DESIGN.md §2) and still count: the next run
/// cannot fork either, until the instance is destroyed with everything in it.
///
/// "Tasks seen" is counted from the task lists (`cgroup.threads` / `tasks`) and, where the
/// kernel keeps one, `pids.peak`. Not from samples of `pids.current`: the kernel charges a fork
/// before it compares with the limit and takes the charge back when it fails, so a sample can
/// read 21 for a fork that never happened (kernel/cgroup/pids.c, `pids_try_charge`).
#[test]
fn fork_bomb_is_stopped_at_pids() {
    let _g = util::shared();
    let Some(mechanism) = cgroups() else { return };
    let sb = util::builder().pids(20).build().unwrap();
    assert_eq!(sb.enforcement().pids, mechanism);
    let inst = sb.create().unwrap();
    let dirs = util::instance_cgroups(&sb, &inst);
    let pids_dir = with_file(&dirs, "pids.current").expect("a pids cgroup");
    let current = pids_dir.join("pids.current");
    let (done, most) = (AtomicBool::new(false), AtomicU64::new(0));
    let o = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(tasks_in(pids_dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let o = inst.exec(&sh_cmd(FORK_BOMB)).unwrap();
        done.store(true, Ordering::Relaxed);
        o
    });
    assert_status(&o, Status::Pids, Limit::Pids);
    assert!(
        util::stdout(&o).is_empty(),
        "the bomb was not stopped: {o:#?}"
    );
    assert!(
        o.stderr.as_deref().unwrap_or("").contains("Cannot fork"),
        "{o:#?}"
    );
    assert!(o.wall_ms < 5000.0, "the run did not end promptly: {o:#?}");
    let most = most.load(Ordering::Relaxed);
    assert!(
        (10..=20).contains(&most),
        "the host saw {most} tasks in the instance (limit 20)"
    );
    if let Ok(peak) = std::fs::read_to_string(pids_dir.join("pids.peak")) {
        let peak: u64 = peak.trim().parse().unwrap();
        assert!(
            (most..=20).contains(&peak),
            "pids.peak {peak} (tasks seen {most}, limit 20)"
        );
    }
    // The reaper and the 18 sleeps left; the next run's shell is the 20th and cannot fork.
    assert_eq!(read_trim(&current), "19", "the sleeps left in the session");
    let o = inst.exec(&sh_cmd("sleep 0; echo forked")).unwrap();
    assert_status(&o, Status::Pids, Limit::Pids);
    assert!(!util::stdout(&o).contains("forked"), "{o:#?}");
    inst.destroy().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} is left after destroy", d.display());
    }
}

/// `.cpus(0.5)`: two processes busy for 1.5 s get about half a CPU between them.
#[test]
fn half_a_cpu_is_observed_as_half_a_cpu() {
    let _g = util::shared();
    let Some(mechanism) = cgroups() else { return };
    let sb = util::builder().cpus(0.5).build().unwrap();
    assert_eq!(sb.enforcement().cpu, mechanism);
    let o = util::py(&sb, &busy_processes(2, 1.5));
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    let share = o.cpu_ms / o.wall_ms;
    assert!(o.wall_ms >= 1500.0, "{o:#?}");
    assert!(
        (0.35..=0.65).contains(&share),
        "cpu {:.0} ms over {:.0} ms wall is {share:.2} CPUs, not about 0.5",
        o.cpu_ms,
        o.wall_ms
    );
}

/// Programs are pinned to ceil(cpus) CPUs (so thread pools size themselves), and to none when
/// the quota covers the host. Affinity needs no cgroups, so this holds in every pass.
#[test]
fn affinity_is_ceil_of_cpus() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let ncpu = std::thread::available_parallelism().unwrap().get();
    let mut cases = vec![(ncpu as f64, ncpu)];
    for c in [0.5f64, 1.0, 1.5] {
        if (c.ceil() as usize) < ncpu {
            cases.push((c, c.ceil() as usize));
        }
    }
    if cases.len() == 1 {
        eprintln!("SKIP (partly): this host has {ncpu} CPU, so no quota pins to fewer");
    }
    for (cpus, want) in cases {
        let sb = util::builder().cpus(cpus).build().unwrap();
        let o = util::py(
            &sb,
            "import os; print(len(os.sched_getaffinity(0)), os.cpu_count())",
        );
        assert_eq!(o.status, Status::Ok, "{o:#?}");
        let got: usize = util::stdout(&o)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            got, want,
            "cpus {cpus}: affinity of {got} CPUs, expected {want}: {o:#?}"
        );
    }
}

/// CPU time comes from the cgroup: two grandchildren that each burn 0.4 s of CPU and are never
/// waited for by the program (orphaned to the reaper, so wait4's rusage misses them) are counted.
#[test]
fn cpu_time_counts_processes_never_waited_for() {
    let _g = util::shared();
    let Some(_) = cgroups() else { return };
    let sb = util::sandbox();
    // Each child forks a grandchild and exits at once; the grandchildren burn CPU and hold the
    // pipe's write end, so the program's read returns EOF when both have exited.
    let code = "import os, time\n\
                r, w = os.pipe()\n\
                for _ in range(2):\n\
                \x20   if os.fork() == 0:\n\
                \x20       if os.fork() == 0:\n\
                \x20           os.close(r)\n\
                \x20           while time.process_time() < 0.4: pass\n\
                \x20           os._exit(0)\n\
                \x20       os._exit(0)\n\
                os.close(w)\n\
                os.wait(); os.wait()\n\
                assert os.read(r, 1) == b''\n\
                t = os.times()\n\
                print(round((t.children_user + t.children_system) * 1000))\n";
    // One-shot (the instance's cgroup) and in a session (the run's own cgroup).
    let inst = sb.create().unwrap();
    for (how, o) in [
        ("one-shot", util::py(&sb, code)),
        ("session", inst.exec(&Command::python(code)).unwrap()),
    ] {
        assert_eq!(o.status, Status::Ok, "{how}: {o:#?}");
        let waited_ms: f64 = util::stdout(&o).trim().parse().unwrap();
        assert!(waited_ms < 200.0, "{how}: the grandchildren were counted in wait4's rusage after all ({waited_ms} ms): {o:#?}");
        assert!(
            o.cpu_ms >= 700.0,
            "{how}: cpu_ms {:.0} misses the grandchildren's 800 ms: {o:#?}",
            o.cpu_ms
        );
        assert!(o.cpu_ms < 3000.0 * util::time_scale(), "{how}: {o:#?}");
        assert!(
            (o.user_ms + o.sys_ms - o.cpu_ms).abs() < 1.0,
            "{how}: user + sys is not cpu: {o:#?}"
        );
    }
    inst.destroy().unwrap();
}

/// `.cpu_time(0.5 s)` stops an infinite loop as `cpu_time` after about 0.5 s of CPU.
#[test]
fn cpu_time_limit_stops_an_infinite_loop() {
    let _g = util::shared();
    let Some(_) = cgroups() else { return };
    let sb = util::builder()
        .cpu_time(Duration::from_millis(500))
        .build()
        .unwrap();
    let o = util::py(&sb, "while True: pass");
    assert_status(&o, Status::CpuTime, Limit::CpuTime);
    // The watchdog samples every 20 ms; the slack is for a slow (emulated) host's lag.
    assert!(
        o.cpu_ms >= 500.0 && o.cpu_ms < 500.0 + 1000.0 * util::time_scale(),
        "cpu_ms {:.0}: {o:#?}",
        o.cpu_ms
    );
    assert!(o.wall_ms < 10_000.0 * util::time_scale(), "{o:#?}");
}

/// A child OOM-killed while the program itself exits 0: status `ok`, exit 0, and `memory` in
/// `limits_hit` with the kill counted.
#[test]
fn child_oom_kill_is_listed_while_the_program_exits_0() {
    let _g = util::shared();
    let Some(_) = cgroups() else { return };
    let sb = util::builder().memory(64 * MIB).build().unwrap();
    let code = format!("import subprocess, sys\nr = subprocess.run([sys.executable, '-c', {MEMORY_BOMB:?}])\nprint('child', r.returncode)\n");
    let o = util::py(&sb, &code);
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    assert_eq!(o.exit_code, Some(0), "{o:#?}");
    assert_eq!(util::stdout(&o), "child -9\n", "{o:#?}");
    assert!(o.limits_hit.contains(&Limit::Memory), "{o:#?}");
    assert!(o.oom_kills >= 1, "{o:#?}");
}

/// A session run's timeout kills the processes that left the run's process group (a setsid
/// child): they are in the run's cgroup, which is killed whole; the session lives on.
#[test]
fn session_timeout_kills_a_setsid_child_through_the_run_cgroup() {
    let _g = util::shared();
    let Some(_) = cgroups() else { return };
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    let o = inst
        .exec(
            &sh_cmd("setsid sleep 1000 >/dev/null 2>&1 & echo $!; sleep 1000")
                .timeout(util::allow(1.0)),
        )
        .unwrap();
    assert_status(&o, Status::Timeout, Limit::Wall);
    let escaped = util::stdout(&o).trim().to_string();
    assert!(escaped.parse::<u32>().is_ok(), "{o:#?}");
    let o = inst
        .exec(&sh_cmd(&format!(
            "kill -0 {escaped} 2>/dev/null && echo alive || echo gone"
        )))
        .unwrap();
    assert_eq!(
        (o.status, util::stdout(&o).as_str()),
        (Status::Ok, "gone\n"),
        "a timed-out run's setsid child survived: {o:#?}"
    );
    inst.destroy().unwrap();
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

/// Dying (removed but not yet freed) cgroups, per hierarchy rsandbox uses: v1 `num_cgroups` of
/// `/proc/cgroups` less the directories that exist; v2 `nr_dying_descendants` of the base.
fn dying_cgroups() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    match rsandbox::cgroup::setup() {
        Ok(rsandbox::cgroup::Setup::V2 { base }) => {
            let stat = read_trim(&base.join("cgroup.stat"));
            let n = stat
                .lines()
                .find_map(|l| l.strip_prefix("nr_dying_descendants "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            out.insert(base.display().to_string(), n);
        }
        Ok(rsandbox::cgroup::Setup::V1 { bases }) => {
            let table = std::fs::read_to_string("/proc/cgroups").unwrap();
            for (ctl, _) in bases {
                let Some(num) = table.lines().find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.first() == Some(ctl)).then(|| f[2].parse::<i64>().unwrap())
                }) else {
                    continue;
                };
                let mount = rsandbox::probe::host()
                    .cgroup_mounts
                    .iter()
                    .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl))
                    .unwrap();
                let mut dirs = 1;
                let mut stack = vec![mount.path.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            dirs += 1;
                            stack.push(e.path());
                        }
                    }
                }
                out.insert(ctl.to_string(), num - dirs);
            }
        }
        Err(_) => {}
    }
    out
}

/// `rsandbox-*` directories under the supervisor's cgroups (every hierarchy rsandbox uses)
/// that no live supervisor holds: no record for the slot, or one naming this process (whose
/// instances are all gone) or a dead supervisor. Other processes' live instances are fine.
fn orphan_cgroups(sb: &Sandbox) -> BTreeSet<PathBuf> {
    let bases: Vec<PathBuf> = match rsandbox::cgroup::setup() {
        Ok(rsandbox::cgroup::Setup::V2 { base }) => vec![base.clone()],
        Ok(rsandbox::cgroup::Setup::V1 { bases }) => bases.iter().map(|(_, b)| b.clone()).collect(),
        Err(_) => Vec::new(),
    };
    let me = std::process::id() as i32;
    let mut out = BTreeSet::new();
    for base in bases {
        for e in std::fs::read_dir(&base).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(slot) = name.strip_prefix("rsandbox-") else {
                continue;
            };
            let record = std::fs::read_to_string(sb.state_dir().join(slot)).ok();
            let held = record
                .and_then(|t| serde_json::from_str::<rsandbox::state::RecordInfo>(&t).ok())
                .is_some_and(|i| {
                    i.supervisor_pid != me
                        && Path::new(&format!("/proc/{}", i.supervisor_pid)).exists()
                });
            if !held {
                out.insert(e.path());
            }
        }
    }
    out
}

/// Who holds each flock, by (major, minor, inode), from `/proc/locks`.
fn flock_holders() -> BTreeMap<(u32, u32, u64), u32> {
    let mut holder = BTreeMap::new();
    for l in std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
    {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" (waiters have "->" after the number)
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            continue;
        }
        let pid = f.get(4).and_then(|p| p.parse::<u32>().ok());
        let id: Vec<&str> = f.get(5).map(|d| d.split(':').collect()).unwrap_or_default();
        if let (Some(pid), [maj, min, ino]) = (pid, id.as_slice()) {
            let (Ok(maj), Ok(min), Ok(ino)) = (
                u32::from_str_radix(maj, 16),
                u32::from_str_radix(min, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            holder.insert((maj, min, ino), pid);
        }
    }
    holder
}

fn holder_of(holders: &BTreeMap<(u32, u32, u64), u32>, path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    holders
        .get(&(libc::major(m.dev()), libc::minor(m.dev()), m.ino()))
        .copied()
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The fingerprint of what this process is answerable for. On a host shared with other test
/// runs (as any user), their live instances use the same host uid range and, as root, the same
/// state directory: their records are left out (ours are those we hold or that name us as
/// supervisor, held or not), and so are the processes beneath another process that holds a
/// record (another supervisor). Taken at once, while the ancestry can still be seen.
fn own_fingerprint(sb: &Sandbox) -> Fingerprint {
    let me = std::process::id();
    let mut fp = Fingerprint::take(sb);
    let holders = flock_holders();
    let mut dirs = vec![
        sb.state_dir().to_path_buf(),
        PathBuf::from("/run/rsandbox/instances"),
    ];
    for (parent, prefix) in [("/tmp", "rsandbox-"), ("/run/user", "")] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                dirs.push(e.path().join("rsandbox/instances"));
            }
        }
    }
    let others: BTreeSet<u32> = dirs
        .iter()
        .flat_map(std::fs::read_dir)
        .flatten()
        .flatten()
        .filter_map(|e| holder_of(&holders, &e.path()))
        .filter(|&pid| pid != me)
        .collect();
    fp.processes.retain(|entry| {
        let mut pid: u32 = entry.split(' ').next().unwrap().parse().unwrap();
        for _ in 0..64 {
            match parent_of(pid) {
                Some(pp) if others.contains(&pp) => return false,
                Some(pp) if pp > 1 => pid = pp,
                _ => break,
            }
        }
        true
    });
    fp.state_records.retain(|r| {
        let named = std::fs::read_to_string(r)
            .ok()
            .and_then(|t| serde_json::from_str::<rsandbox::state::RecordInfo>(&t).ok());
        holder_of(&holders, Path::new(r)) == Some(me)
            || named.is_some_and(|i| i.supervisor_pid as u32 == me)
    });
    fp
}

/// Soak: 2,000 one-shot runs of /bin/true from two threads leave the fingerprint of DESIGN.md §8
/// unchanged (less other test runs' live instances on a shared host), no `rsandbox-*` cgroup
/// behind in any hierarchy, and no pile of dying cgroups (v1: `/proc/cgroups`; v2:
/// `nr_dying_descendants`).
#[test]
fn soak_2000_runs_leave_nothing_behind() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let warm = sb.run(&Command::new("/bin/true")).unwrap();
    assert_eq!(warm.status, Status::Ok, "{warm:#?}");
    let before = own_fingerprint(&sb);
    let dying_before = dying_cgroups();
    let orphans_before = orphan_cgroups(&sb);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let sb = &sb;
            s.spawn(move || {
                for i in 0..1000 {
                    let o = sb
                        .run(&Command::new("/bin/true"))
                        .unwrap_or_else(|e| panic!("thread {t} run {i}: {e}"));
                    assert_eq!(o.status, Status::Ok, "thread {t} run {i}: {o:#?}");
                }
            });
        }
    });
    let took = start.elapsed();
    eprintln!(
        "soak: 2000 runs in {:.1} s ({:.1} ms per run per thread)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / 1000.0
    );

    // Freeing a removed cgroup takes an RCU grace period or more: allow 10 s, and a small slack
    // for other processes' cgroups coming and going (2,000 runs made 2,000 per hierarchy).
    const SLACK: i64 = 20;
    let settled = |now: &BTreeMap<String, i64>| {
        now.iter()
            .all(|(k, n)| *n <= dying_before.get(k).copied().unwrap_or(0) + SLACK)
    };
    let waited = Instant::now();
    let mut dying_after = dying_cgroups();
    while !settled(&dying_after) && waited.elapsed() < util::allow(10.0) {
        std::thread::sleep(Duration::from_millis(200));
        dying_after = dying_cgroups();
    }
    eprintln!("soak: dying cgroups before {dying_before:?}, after {dying_after:?} (settled after {:.1} s)", waited.elapsed().as_secs_f64());

    let mut now = own_fingerprint(&sb);
    let deadline = Instant::now() + util::allow(5.0);
    while now != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = own_fingerprint(&sb);
    }
    assert_eq!(before.processes, now.processes, "processes changed");
    assert_eq!(before.mounts, now.mounts, "host mounts changed");
    assert_eq!(
        before.state_records, now.state_records,
        "state records changed"
    );
    assert_eq!(
        before.template_files, now.template_files,
        "template changed"
    );
    assert_eq!(before.fds, now.fds, "open fds changed");

    // Cgroups of other processes' instances come and go; a leftover of ours stays.
    let mut orphans = orphan_cgroups(&sb);
    let deadline = Instant::now() + util::allow(5.0);
    while !orphans.is_subset(&orphans_before) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        orphans = orphan_cgroups(&sb)
            .intersection(&orphans)
            .cloned()
            .collect();
    }
    let new: Vec<&PathBuf> = orphans.difference(&orphans_before).collect();
    assert!(new.is_empty(), "cgroups left after the soak: {new:?}");
    assert!(
        settled(&dying_after),
        "dying cgroups piled up: before {dying_before:?}, after {dying_after:?}"
    );
}

/// cgroup v2, as a service started with `Delegate=yes` runs: a supervisor alone in its cgroup
/// moves itself into a leaf (`rsandbox-supervisor-PID`) so that its cgroup can enable the
/// controllers, removing empty leaves an earlier supervisor left there. With another process
/// in its cgroup it cannot, and `--strict` says what to do instead.
#[test]
fn lone_supervisor_moves_into_a_leaf_on_cgroup2() {
    let _g = util::shared();
    if !util::require("cgroup2") {
        return;
    }
    let Some(_) = cgroups() else { return };
    let Ok(rsandbox::cgroup::Setup::V2 { base }) = rsandbox::cgroup::setup() else {
        panic!("cgroup2 host without a v2 setup");
    };
    let subdirs = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // `sh` joins DIR, then execs rsandbox (the only process there unless the test adds one).
    let run_in = |dir: &std::path::Path| {
        let script = format!(
            "echo $$ > '{}/cgroup.procs' && exec env -u RSANDBOX_CGROUP '{}' run --strict --mem 64 --json -- /bin/sh -c 'echo ran'",
            dir.display(),
            util::bin().display()
        );
        std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .unwrap()
    };
    let pid = std::process::id();

    let dir = base.join(format!("rsandbox-test-lone-{pid}"));
    std::fs::create_dir(&dir).unwrap();
    let stale = "rsandbox-supervisor-999999999";
    std::fs::create_dir(dir.join(stale)).unwrap();
    let out = run_in(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["stdout"], "ran\n", "{report}");
    assert_eq!(report["enforcement"]["memory"], "cgroup2", "{report}");
    let left = subdirs(&dir);
    assert_eq!(
        left.len(),
        1,
        "only the supervisor's own (empty) leaf, no stale leaf, no instance: {left:?}"
    );
    assert!(
        left[0].starts_with("rsandbox-supervisor-") && left[0] != stale,
        "{left:?}"
    );
    std::fs::remove_dir(dir.join(&left[0])).unwrap();
    std::fs::remove_dir(&dir).unwrap();

    // Another process in the cgroup: the controllers cannot be enabled; --strict refuses.
    let dir = base.join(format!("rsandbox-test-crowded-{pid}"));
    std::fs::create_dir(&dir).unwrap();
    let mut other = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            &format!(
                "echo $$ > '{}/cgroup.procs' && exec sleep 60",
                dir.display()
            ),
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + util::allow(5.0);
    while !std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap()
        .contains(&other.id().to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleep never joined {dir:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run_in(&dir);
    other.kill().unwrap();
    other.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    // --json: the error is a JSON object on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("other processes") && msg.contains("RSANDBOX_CGROUP"),
        "{stdout}\n{stderr}"
    );
    assert!(subdirs(&dir).is_empty(), "{:?}", subdirs(&dir));
    std::fs::remove_dir(&dir).unwrap();
}
