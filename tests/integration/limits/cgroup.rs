//! The cgroups themselves: limits as the kernel sees them, run cgroups, a lone supervisor on v2.

use std::time::Duration;

use rsandbox::{Limit, Status};

use super::{assert_status, cgroups, read_trim, sh_cmd, with_file, MIB};
use crate::util;

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
    let Ok(rsandbox::testing::cgroup::Setup::V2 { base }) = rsandbox::testing::cgroup::setup()
    else {
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
