//! Memory and pids under cgroups: bombs stopped and reported, a child OOM-killed under exit 0.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rsandbox::{Command, Limit, Status};

use super::{assert_status, cgroups, read_trim, sh_cmd, with_file, FORK_BOMB, MEMORY_BOMB, MIB};
use crate::util;

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
