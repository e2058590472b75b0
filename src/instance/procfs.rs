//! Accounting without cgroups: CPU time, memory and processes of an instance's process tree,
//! read from `/proc` (`Instance::usage` and the watchdogs of `exec`).

use crate::outcome::Usage;
use crate::sys;

/// What the tree under the reaper `pid` uses now: CPU time of live processes and of the
/// children they reaped, their anonymous and shared memory (PSS), their number; no peak.
pub(super) fn usage(pid: i32) -> Usage {
    let mut pids = 0;
    for_tree(pid, |_, _| pids += 1);
    Usage {
        cpu_ms: tree_cpu_us(pid) as f64 / 1000.0,
        memory_bytes: Some(tree_memory(pid, true)),
        peak_memory_bytes: None,
        pids: Some(pids),
        source: "procfs",
    }
}

/// CPU time of the live descendants of `pid` (the reaper) and of the children each process of
/// the tree reaped, in microseconds (the CPU-time watchdog without cgroups). The reaper's own
/// time is rsandbox's, not the program's.
pub(super) fn tree_cpu_us(pid: i32) -> u64 {
    let tick_us = 1_000_000 / sys::host::clock_ticks();
    let mut ticks = 0;
    for_tree(pid, |p, is_root| {
        if let Ok(s) = sys::host::read_small(format!("/proc/{p}/stat")) {
            // After ")": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
            // cmajflt utime stime cutime cstime (fields 3-17 of stat; some may be negative).
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // Every process's waited-for children (gone, so never counted twice); the live
            // ones' own time, but not the reaper's.
            ticks += n(13) + n(14) + if is_root { 0 } else { n(11) + n(12) };
        }
    });
    ticks * tick_us
}

/// Calls `f` for `pid` and each of its descendants (bounded).
fn for_tree(pid: i32, mut f: impl FnMut(i32, bool)) {
    let mut stack = vec![pid];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        f(p, p == pid);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = sys::host::read_small(t.path().join("children")) {
                    stack.extend(c.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
                }
            }
        }
    }
}

/// The memory of `pid`'s descendants as a cgroup would count it, in bytes (the memory watchdog
/// used when cgroups are not available): anonymous and shared-memory pages, each page shared by
/// several processes split among them (PSS), so that pages forked children share with their
/// parent count once and the interpreter's mapped files not at all. The reaper (`pid`) is not
/// the program: its pages are the supervisor's copy-on-write copy. Not `exact`: an upper bound
/// from `/proc/PID/status` alone (each shared page counted in full), cheap enough to poll; the
/// watchdog reads the page-walking exact figure only when the bound is over the limit.
pub(super) fn tree_memory(pid: i32, exact: bool) -> u64 {
    let mut total = 0;
    for_tree(pid, |p, is_reaper| {
        if !is_reaper {
            total += process_memory(p, exact);
        }
    });
    total
}

/// `Pss_Anon + Pss_Shmem` of `/proc/PID/smaps_rollup` when `exact` and the kernel has them
/// (5.9+), else `RssAnon + RssShmem` of `/proc/PID/status`; 0 for a process already gone.
fn process_memory(p: i32, exact: bool) -> u64 {
    let kib = |text: &str, keys: [&str; 2]| -> Option<u64> {
        keys.iter()
            .map(|k| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .sum()
    };
    let pss = || {
        let s = sys::host::read_small(format!("/proc/{p}/smaps_rollup")).ok()?;
        kib(&s, ["Pss_Anon:", "Pss_Shmem:"])
    };
    let rss = || {
        let s = sys::host::read_small(format!("/proc/{p}/status")).ok()?;
        kib(&s, ["RssAnon:", "RssShmem:"])
    };
    exact.then(pss).flatten().or_else(rss).unwrap_or(0) * 1024
}
