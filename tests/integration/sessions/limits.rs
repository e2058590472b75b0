//! Lifetimes and limits: expiry, the daemon's session limits and SIGTERM, 200 at once, GPUs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{create, sh};
use crate::server::{host_before, Daemon};
use crate::util;

/// The state records of the daemon's instances (its sessions when no `/v1/run` ran).
fn records(d: &Daemon) -> Vec<Value> {
    let pid = d.pid() as i64;
    std::fs::read_dir(util::sandbox().state_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter(|v| v["supervisor_pid"] == pid && v["reaper_pid"] != 0)
        .collect()
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A session past its idle timeout, or its lifetime, is destroyed (reaper gone, cgroups and
/// state record removed) and answers 410 with the reason; one in use does not idle out; an
/// unknown id is 404.
#[test]
fn sessions_expire_idle_and_by_lifetime() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let idle = create(&d, json!({"idle_timeout": 1.0}));
    let short = create(&d, json!({"lifetime": 1.5, "idle_timeout": 100}));
    let used = create(&d, json!({"idle_timeout": 1.0}));
    sh(&d, &idle, "sleep 1000 >/dev/null 2>&1 &");
    let recs = records(&d);
    assert_eq!(recs.len(), 3, "{recs:?}");
    let reapers: Vec<i64> = recs
        .iter()
        .map(|r| r["reaper_pid"].as_i64().unwrap())
        .collect();
    let cgroups: Vec<PathBuf> = recs
        .iter()
        .flat_map(|r| r["cgroups"].as_array().unwrap().clone())
        .map(|c| PathBuf::from(c.as_str().unwrap()))
        .collect();
    // `used` is touched every 0.3 s (a file write, then a listing): it stays.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        let a = d.unix("PUT", &format!("/v1/sessions/{used}/files/f"), b"x");
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(d.get(&format!("/v1/sessions/{used}/files")).status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    let gone = |id: &str, reason: &str| {
        let a = d.get(&format!("/v1/sessions/{id}"));
        assert_eq!(a.status, 410, "{}", a.body);
        assert_eq!(a.json()["error"]["reason"], reason, "{}", a.body);
        let a = d.post(
            &format!("/v1/sessions/{id}/run"),
            &json!({"argv": ["true"]}),
        );
        assert_eq!(a.status, 410, "{}", a.body);
    };
    gone(&idle, "expired_idle");
    gone(&short, "expired_lifetime");
    assert_eq!(d.get(&format!("/v1/sessions/{used}")).status, 200);
    let left = records(&d);
    assert_eq!(
        left.len(),
        1,
        "only the used session's record is left: {left:?}"
    );
    for (pid, r) in reapers.iter().zip(&recs) {
        if r["reaper_pid"] != left[0]["reaper_pid"] {
            assert!(!alive(*pid), "the reaper {pid} of an expired session lives");
        }
    }
    let kept: Vec<PathBuf> = left[0]["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| PathBuf::from(c.as_str().unwrap()))
        .collect();
    for c in cgroups.iter().filter(|c| !kept.contains(c)) {
        assert!(
            !c.exists(),
            "cgroup {} of an expired session remains",
            c.display()
        );
    }
    let a = d.get("/v1/sessions/0123456789abcdef");
    assert_eq!(
        (a.status, a.json()["error"]["stage"].as_str()),
        (404, Some("session"))
    );
    assert!(d.log().contains("expired_idle"), "{}", d.log());
}

/// The daemon's limits: past --max-sessions, or past --session-memory-mb, a create is 503
/// with Retry-After and a message naming the limit; deleting makes room; requests that ask
/// for what a session cannot have are 422. SIGTERM then ends the live sessions (background
/// processes and all): nothing remains.
#[test]
fn a_full_daemon_answers_503_and_sigterm_ends_every_session() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let before = host_before();
    let mut d = Daemon::start(&["--max-sessions", "2", "--session-memory-mb", "300"]);
    let a = create(&d, json!({"limits": {"memory_mb": 200}}));
    let full = d.post("/v1/sessions", &json!({"limits": {"memory_mb": 200}}));
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.header("retry-after"), Some("1"));
    assert!(full.body.contains("--session-memory-mb"), "{}", full.body);
    let b = create(&d, json!({"limits": {"memory_mb": 64}}));
    let full = d.post("/v1/sessions", &json!({"limits": {"memory_mb": 16}}));
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.body.contains("--max-sessions"), "{}", full.body);
    let m = d.post("/create_session", &json!({"code": "", "memory_mb": 16}));
    assert_eq!(m.status, 503, "{}", m.body);
    assert!(m.json()["detail"].is_string(), "{}", m.body);
    assert_eq!(
        d.unix("DELETE", &format!("/v1/sessions/{b}"), b"").status,
        200
    );
    assert_eq!(
        d.unix("DELETE", &format!("/v1/sessions/{b}"), b"").status,
        410
    );
    let c = create(&d, json!({"limits": {"memory_mb": 64}}));
    for (body, word) in [
        (json!({"limits": {"timeout": 5}}), "timeout"),
        (json!({"limits": {"memory_mb": 1 << 20}}), "memory_mb"),
        (json!({"idle_timeout": 1e9}), "idle_timeout"),
        (json!({"seccomp": "none"}), "seccomp"),
        (json!({"nonsense": 1}), "nonsense"),
    ] {
        let r = d.post("/v1/sessions", &body);
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(r.body.contains(word), "{body}: {}", r.body);
    }
    let r = d.post(
        &format!("/v1/sessions/{a}/run"),
        &json!({"argv": ["true"], "limits": {"memory_mb": 64}}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let m = d.metric("rsandbox_sessions ");
    assert_eq!(m, 2.0);
    for id in [&a, &c] {
        sh(
            &d,
            id,
            "sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 &",
        );
    }
    assert!(d.stop(30).success(), "{}", d.log());
    drop(d);
    before.assert_same(&util::sandbox());
}

/// `VmRSS` and `Pss` of a process, in kB.
fn rss_pss_kb(pid: i64) -> (u64, u64) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&smaps, "Pss:"))
}

/// 200 sessions open at once, each used; the daemon's RSS before and after and the sessions'
/// own cost (their reapers' PSS, their cgroups' memory) are printed for the README. Deleting
/// them all leaves nothing behind, and each deleted id answers 410.
#[test]
fn two_hundred_sessions_at_once() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let before = host_before();
    let mut d = Daemon::start(&["--session-memory-mb", "100000"]);
    // A first session created and deleted: the daemon's one-time allocations are made.
    let warm = create(&d, json!({"limits": {"memory_mb": 64}}));
    sh(&d, &warm, "true");
    d.unix("DELETE", &format!("/v1/sessions/{warm}"), b"");
    let rss0 = d.rss_kb();
    let t = Instant::now();
    let ids: Vec<String> = (0..200)
        .map(|_| create(&d, json!({"limits": {"memory_mb": 64, "pids": 32}})))
        .collect();
    let created = t.elapsed();
    let t = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let r = sh(&d, id, &format!("echo {i} > n.txt; cat n.txt"));
        assert_eq!(r["stdout"], format!("{i}\n"), "{r}");
    }
    let ran = t.elapsed();
    let list = d.get("/v1/sessions").json();
    assert_eq!(list["count"], 200, "{}", list["count"]);
    let rss1 = d.rss_kb();
    let recs = records(&d);
    assert_eq!(recs.len(), 200);
    let (mut reaper_rss, mut reaper_pss) = (0, 0);
    for r in &recs {
        let (rss, pss) = rss_pss_kb(r["reaper_pid"].as_i64().unwrap());
        reaper_rss += rss;
        reaper_pss += pss;
    }
    let cg_mem: u64 = ids
        .iter()
        .map(|id| {
            d.get(&format!("/v1/sessions/{id}")).json()["usage"]["memory_bytes"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    // PSS is unreadable (0) where the reapers are not dumpable to this user; usage is the
    // cgroups' charge, or without cgroups the processes' RSS (shared pages counted each time).
    eprintln!(
        "200 sessions: created in {:.1}s, one run each in {:.1}s; daemon RSS {rss0} kB -> {rss1} kB \
         (+{} kB, {:.1} kB per session); reapers: RSS {reaper_rss} kB, PSS {reaper_pss} kB together \
         ({:.1} kB PSS each); the sessions' usage.memory_bytes: {} kB together ({:.0} kB each)",
        created.as_secs_f64(),
        ran.as_secs_f64(),
        rss1.saturating_sub(rss0),
        rss1.saturating_sub(rss0) as f64 / 200.0,
        reaper_pss as f64 / 200.0,
        cg_mem >> 10,
        (cg_mem >> 10) as f64 / 200.0,
    );
    for id in &ids {
        let a = d.unix("DELETE", &format!("/v1/sessions/{id}"), b"");
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert!(records(&d).is_empty(), "records remain after every delete");
    for id in ids.iter().take(5) {
        assert_eq!(d.get(&format!("/v1/sessions/{id}")).status, 410);
    }
    assert_eq!(d.get("/v1/sessions").json()["count"], 0);
    assert!(d.stop(30).success(), "{}", d.log());
    drop(d);
    before.assert_same(&util::sandbox());
}

/// A session's GPUs come from the allocator `/v1/run` uses and are held for the session's
/// life: its runs see them, a `/v1/run` wanting them waits and gets 503 after --gpu-wait, and
/// they are free again once the session is deleted.
#[test]
fn a_session_holds_its_gpus_for_its_life() {
    let _g = util::exclusive();
    let Some(fake) = crate::gpu::fake_gpus() else {
        return;
    };
    let before = host_before();
    let d = Daemon::start_env(
        &["--gpu-wait", "1"],
        &[("RSANDBOX_GPU_DEV_DIR", fake.dev.as_os_str())],
    );
    let id = create(&d, json!({"limits": {"gpus": 3}}));
    let s = d.get(&format!("/v1/sessions/{id}")).json();
    assert_eq!(s["gpus"].as_array().map(|g| g.len()), Some(3), "{s}");
    let r = sh(
        &d,
        &id,
        "ls /dev | grep -c '^nvidia[0-9]'; echo $CUDA_VISIBLE_DEVICES",
    );
    assert_eq!(r["stdout"], "3\n0,1,2\n", "{r}");
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 2}}));
    assert_eq!(a.status, 503, "{}", a.body);
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 1}}));
    assert_eq!(a.json()["status"], "ok", "{}", a.body);
    assert_eq!(
        d.unix("DELETE", &format!("/v1/sessions/{id}"), b"").status,
        200
    );
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 4}}));
    assert_eq!(a.json()["status"], "ok", "{}", a.body);
    drop(d);
    before.assert_same(&util::sandbox());
}
