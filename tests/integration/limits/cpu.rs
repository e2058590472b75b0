//! CPU: quota, affinity, CPU time from the cgroup and its limit.

use std::time::Duration;

use rsandbox::{Command, Limit, Status};

use super::{assert_status, cgroups};
use crate::util;

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
