//! The daemon: a request's egress policy, sessions keeping their own (background processes
//! included), `--max-network`, bad patterns and a flood answered without harm, `/metrics`.

use serde_json::{json, Value};

use super::{probe_lines, Server, PROBE};
use crate::server::Daemon;
use crate::util;

/// Runs the probe through `path` (`/v1/run` or a session's run) with `extra` merged in.
fn probe(d: &Daemon, path: &str, actions: &[String], extra: Value) -> Value {
    let mut argv = vec!["/usr/bin/python3".to_string(), "probe.py".to_string()];
    argv.extend(actions.iter().cloned());
    let mut body = json!({"argv": argv, "files": [{"path": "probe.py", "content": PROBE}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let a = d.post(path, &body);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

fn lines(r: &Value) -> Vec<String> {
    probe_lines(r["stdout"].as_str().unwrap_or_default())
        .into_iter()
        .map(|(k, v)| format!("{k} {}", v.split(':').next().unwrap_or("")))
        .collect()
}

#[test]
fn egress_daemon_applies_each_requests_policy_and_sessions_keep_theirs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let (a, b) = (Server::start(), Server::start());
    let (p, q) = (a.port, b.port);
    let get = |port: u16| format!("get:127.0.0.1:{port}");
    let both = [get(p), get(q)];
    let d = Daemon::start(&["--max-network", "allowlist"]);

    // A run's own allowlist; the report counts its decisions.
    let allow_p = json!({"limits": {"allowed_hosts": [format!("127.0.0.1:{p}")]}});
    let r = probe(&d, "/v1/run", &both, allow_p.clone());
    assert_eq!(
        lines(&r),
        [
            format!("get 127.0.0.1:{p} 200"),
            format!("get 127.0.0.1:{q} 403")
        ],
        "{r}"
    );
    assert_eq!(r["network"]["allowed"], 1, "{r}");
    assert_eq!(r["network"]["denied"], 1, "{r}");
    // Without egress the report's network is null; the next request's policy is its own.
    let r = probe(
        &d,
        "/v1/run",
        &both,
        json!({"limits": {"network": "loopback"}}),
    );
    assert_eq!(r["network"], Value::Null, "{r}");
    assert!(lines(&r).iter().all(|l| l.ends_with(" error")), "{r}");

    // Above --max-network, or a bad pattern: 422 with the reason, before anything runs.
    for (limits, words) in [
        (json!({"network": "all"}), "--max-network"),
        (json!({"allowed_hosts": ["*"]}), "invalid allowlist pattern"),
        (json!({"allowed_hosts": ["example.org/x"]}), "CIDR"),
    ] {
        let a = d.post("/v1/run", &json!({"code": "print(1)", "limits": limits}));
        assert_eq!(a.status, 422, "{limits}: {}", a.body);
        assert!(a.body.contains(words), "{limits}: {}", a.body);
    }

    // Two sessions, each with its own allowlist.
    let mk = |port: u16| {
        let a = d.post(
            "/v1/sessions",
            &json!({"limits": {"network": "allowlist", "allowed_hosts": [format!("127.0.0.1:{port}")]}}),
        );
        assert_eq!(a.status, 201, "{}", a.body);
        a.json()["id"].as_str().unwrap().to_string()
    };
    let (sp, sq) = (mk(p), mk(q));
    let info = d.get(&format!("/v1/sessions/{sp}")).json();
    assert_eq!(info["limits"]["network"], "allowlist", "{info}");
    assert_eq!(
        info["limits"]["allowed_hosts"],
        json!([format!("127.0.0.1:{p}")]),
        "{info}"
    );
    let in_p = format!("/v1/sessions/{sp}/run");
    let in_q = format!("/v1/sessions/{sq}/run");
    let r = probe(&d, &in_q, &both, json!({}));
    assert_eq!(
        lines(&r),
        [
            format!("get 127.0.0.1:{p} 403"),
            format!("get 127.0.0.1:{q} 200")
        ],
        "{r}"
    );
    // A run in a session may not change the session's network.
    let a = d.post(
        &in_p,
        &json!({"code": "1", "limits": {"allowed_hosts": [format!("127.0.0.1:{q}")]}}),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    // A background process keeps using the proxy after its run has ended.
    let bg = format!(
        "(/usr/bin/python3 probe.py {} > bg.txt; mv bg.txt bg.done) > /dev/null 2>&1 &",
        get(p)
    );
    let r = probe(&d, &in_p, &[], json!({"argv": ["/bin/sh", "-c", bg]}));
    assert_eq!(r["status"], "ok", "{r}");
    let wait = "for i in $(seq 300); do [ -f bg.done ] && break; sleep 0.1; done; cat bg.done";
    let a = d.post(&in_p, &json!({"argv": ["/bin/sh", "-c", wait]}));
    assert_eq!(a.status, 200, "{}", a.body);
    let out = a.json()["stdout"].as_str().unwrap_or_default().to_string();
    assert!(
        out.starts_with(&format!("get 127.0.0.1:{p} 200:hello {p}")),
        "{out}"
    );

    // A flood of connections that never send anything: the daemon and the session go on.
    let flood = "import socket\nc = [socket.create_connection(('127.0.0.1', 3128)) for _ in range(300)]\nprint(len(c))";
    let a = d.post(&in_p, &json!({"code": flood}));
    assert_eq!(a.status, 200, "{}", a.body);
    let r = probe(&d, &in_p, &both, json!({}));
    assert_eq!(
        lines(&r),
        [
            format!("get 127.0.0.1:{p} 200"),
            format!("get 127.0.0.1:{q} 403")
        ],
        "{r}"
    );
    assert_eq!(d.get("/v1/health").status, 200);
    for id in [&sp, &sq] {
        assert_eq!(
            d.unix("DELETE", &format!("/v1/sessions/{id}"), b"").status / 100,
            2
        );
    }
    assert!(d.metric("rsandbox_egress_decisions_total{decision=\"allowed\"}") >= 4.0);
    assert!(d.metric("rsandbox_egress_decisions_total{decision=\"denied\"}") >= 3.0);
    assert!(d.metric("rsandbox_egress_bytes_total{direction=\"down\"}") > 0.0);
}

/// The default `--max-network none` refuses egress, and still allows `loopback`.
#[test]
fn egress_daemon_refuses_egress_by_default() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    for limits in [
        json!({"network": "allowlist", "allowed_hosts": ["127.0.0.1:1"]}),
        json!({"network": "all"}),
    ] {
        let a = d.post("/v1/run", &json!({"code": "1", "limits": limits}));
        assert_eq!(a.status, 422, "{}", a.body);
        assert!(
            a.body.contains("maximum (none; see --max-network)"),
            "{}",
            a.body
        );
        let a = d.post("/v1/sessions", &json!({"limits": limits}));
        assert_eq!(a.status, 422, "{}", a.body);
    }
    let a = d.post(
        "/v1/run",
        &json!({"code": "print(1)", "limits": {"network": "loopback"}}),
    );
    assert_eq!(
        (a.status, a.json()["stdout"].clone()),
        (200, json!("1\n")),
        "{}",
        a.body
    );
}
