//! Load: slots and the queue (503 when full), cancellation by disconnect, a 5,000-request soak.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{host_before, Daemon};
use crate::util;

/// With one slot and a queue of two: one runs, two wait (and then run), the fourth gets 503
/// with Retry-After. With the default slots, more concurrent requests than slots all succeed.
#[test]
fn requests_beyond_the_slots_wait_and_a_full_queue_is_503() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Arc::new(Daemon::start(&["--slots", "1", "--queue", "2"]));
    let run = |secs: f64| {
        let d = d.clone();
        std::thread::spawn(move || {
            d.post(
                "/v1/run",
                &json!({"argv": ["/bin/sleep", secs.to_string()]}),
            )
        })
    };
    let first = run(1.0);
    d.wait_for(10, "a running run", |d| {
        d.metric("rsandbox_running ") == 1.0
    });
    let queued = [run(0.1), run(0.1)];
    d.wait_for(10, "two queued", |d| {
        d.metric("rsandbox_queue_length") == 2.0
    });
    let a = d.post("/v1/run", &json!({"argv": ["/bin/true"]}));
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(first.join().unwrap().json()["status"], "ok");
    for q in queued {
        let r = q.join().unwrap().json();
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["queued_ms"].as_f64().unwrap() > 300.0, "{r}");
    }
    assert_eq!(d.metric("rsandbox_runs_total{status=\"rejected\"}"), 1.0);
    // The rest of /metrics: latency histogram, the daemon's own figures.
    assert_eq!(d.metric("rsandbox_request_duration_seconds_count"), 3.0);
    assert!(d.metric("process_resident_memory_bytes") > 1e6);
    assert!(d.metric("process_open_fds") > 3.0);
    assert_eq!(d.metric("rsandbox_slots"), 1.0);
    let m = d.get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    assert!(m
        .body
        .contains("# TYPE rsandbox_request_duration_seconds histogram"));
    if util::is_root() {
        assert!(
            d.metric("rsandbox_daemon_cgroup_memory_bytes") > 0.0,
            "{}",
            m.body
        );
    }

    let d = Arc::new(Daemon::start(&[]));
    let many: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || d.post("/v1/run", &json!({"code": format!("print({i})")})))
        })
        .collect();
    for (i, h) in many.into_iter().enumerate() {
        let a = h.join().unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["stdout"], format!("{i}\n"));
    }
}

/// A client that disconnects cancels its run: a queued one leaves the queue without running,
/// a running one is killed at once; nothing of either remains.
#[test]
fn a_disconnect_cancels_queued_and_running_runs() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let before = host_before();
    let mut d = Daemon::start(&["--slots", "1"]);
    let send = |body: &Value| {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        let b = body.to_string();
        write!(
            s,
            "POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .unwrap();
        s
    };
    let running = send(&json!({"argv": ["/bin/sleep", "60"]}));
    d.wait_for(10, "a running run", |d| {
        d.metric("rsandbox_running ") == 1.0
    });
    let queued = send(&json!({"argv": ["/bin/sh", "-c", "touch /tmp/never; sleep 60"]}));
    d.wait_for(10, "a queued run", |d| {
        d.metric("rsandbox_queue_length") == 1.0
    });
    drop(queued);
    d.wait_for(10, "the queue to empty", |d| {
        d.metric("rsandbox_queue_length") == 0.0
    });
    let t = Instant::now();
    drop(running);
    d.wait_for(10, "the run to end", |d| {
        d.metric("rsandbox_running ") == 0.0
    });
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        t.elapsed()
    );
    assert_eq!(d.metric("rsandbox_runs_total{status=\"cancelled\"}"), 2.0);
    // Neither ran to an answer: no outcome but "cancelled" was counted.
    let m = d.get("/metrics").body;
    let counted: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("rsandbox_runs_total"))
        .collect();
    assert_eq!(
        counted,
        ["rsandbox_runs_total{status=\"cancelled\"} 2"],
        "{m}"
    );
    assert!(d.stop(20).success());
    drop(d);
    before.assert_same(&util::sandbox());
}

/// 5,000 requests over fresh connections (the native API and /run_code, four clients at once):
/// every one answered 200, and afterwards the daemon's fds and RSS are where they were and the
/// host fingerprint is unchanged.
#[test]
fn a_soak_of_5000_requests_leaves_fds_rss_and_the_host_unchanged() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let before = host_before();
    let d = Arc::new(Daemon::start(&[]));
    let one = |d: &Daemon, i: usize| {
        let a = if i % 10 == 0 {
            d.post(
                "/run_code",
                &json!({"code": format!("print({i})"), "language": "python"}),
            )
        } else {
            d.post("/v1/run", &json!({"argv": ["/bin/echo", i.to_string()]}))
        };
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
        assert!(
            a.body.contains(&format!("{i}\\n")),
            "request {i}: {}",
            a.body
        );
    };
    for i in 0..200 {
        one(&d, i);
    }
    // The baseline once the warm-up's connections are closed: two equal readings in a row.
    let mut fds = d.fds();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = d.fds();
        if now == fds {
            break;
        }
        fds = now;
    }
    let rss = d.rss_kb();
    let t = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in (w..5000).step_by(4) {
                    one(&d, i);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    eprintln!(
        "soak: 5000 requests in {:.1}s; daemon fds {fds} -> {}, RSS {rss} -> {} kB",
        t.elapsed().as_secs_f64(),
        d.fds(),
        d.rss_kb()
    );
    d.wait_for(5, "the daemon's fds to settle", |d| d.fds() == fds);
    let grown = d.rss_kb().saturating_sub(rss);
    assert!(
        grown < 4096,
        "the daemon's RSS grew by {grown} kB over 5,000 requests"
    );
    // Slots are released after teardown, which follows the answer.
    d.wait_for(5, "every slot to be free", |d| {
        d.metric("rsandbox_running ") == 0.0
    });
    assert_eq!(d.metric("rsandbox_runs_total{status=\"error\"}"), 0.0);
    let mut d = Arc::try_unwrap(d)
        .ok()
        .expect("no other user of the daemon");
    assert!(d.stop(30).success());
    drop(d);
    before.assert_same(&sb);
}
