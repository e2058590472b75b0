//! Clients: Maze's session API with its exact shapes, and the `rsandbox session` CLI.

use serde_json::{json, Value};

use crate::server::Daemon;
use crate::util;

/// Maze's session API with its exact shapes: create returns {session_id, message, cpu_nums,
/// gpu_nums, memory_mb}; execute returns {stdout, stderr, exit_code, timed_out}, runs each code
/// as a script (files persist, variables do not), times out as Maze does (exit_code -1);
/// close returns {message}; unknown or closed sessions are 404 with FastAPI's {detail}.
#[test]
fn mazes_session_api_keeps_its_shapes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let a = d.post(
        "/create_session",
        &json!({"code": "", "cpu_nums": 1, "gpu_nums": 0, "memory_mb": 256}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let c = a.json();
    assert_eq!(
        keys(&c),
        ["cpu_nums", "gpu_nums", "memory_mb", "message", "session_id"]
    );
    assert!(
        c["session_id"].is_string() && c["message"].is_string(),
        "{c}"
    );
    assert_eq!(
        (
            c["cpu_nums"].as_i64(),
            c["gpu_nums"].as_i64(),
            c["memory_mb"].as_i64()
        ),
        (Some(1), Some(0), Some(256))
    );
    let sid = c["session_id"].as_str().unwrap().to_string();
    let exec = |code: &str, timeout: f64| {
        let a = d.post(
            &format!("/execute/{sid}"),
            &json!({"code": code, "timeout": timeout}),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        assert_eq!(
            keys(&v),
            ["exit_code", "stderr", "stdout", "timed_out"],
            "{v}"
        );
        assert!(v["stdout"].is_string() && v["stderr"].is_string(), "{v}");
        assert!(
            v["exit_code"].is_i64() && v["timed_out"].is_boolean(),
            "{v}"
        );
        v
    };
    let v = exec(
        "x = 41\nopen('kept.txt', 'w').write(str(x + 1))\nprint('wrote')",
        10.0,
    );
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["exit_code"].as_i64(),
            v["timed_out"].as_bool()
        ),
        (Some("wrote\n"), Some(0), Some(false))
    );
    let v = exec("print(open('kept.txt').read())\nprint(x)", 10.0);
    assert_eq!(v["stdout"], "42\n", "{v}");
    assert_eq!(v["exit_code"], 1, "{v}");
    assert!(v["stderr"].as_str().unwrap().contains("NameError"), "{v}");
    let v = exec(
        "import time\nprint('before', flush=True)\ntime.sleep(30)",
        0.5,
    );
    assert_eq!(
        (v["exit_code"].as_i64(), v["timed_out"].as_bool()),
        (Some(-1), Some(true)),
        "{v}"
    );
    // Maze's request model requires code.
    let a = d.post(&format!("/execute/{sid}"), &json!({"timeout": 1}));
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.json()["detail"].is_array(), "{}", a.body);
    // The session is a session like any other.
    let s = d.get(&format!("/v1/sessions/{sid}")).json();
    assert_eq!(
        (s["api"].as_str(), s["limits"]["network"].as_str()),
        (Some("maze"), Some("loopback")),
        "{s}"
    );

    let a = d.unix("DELETE", &format!("/close/{sid}"), b"");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(keys(&a.json()), ["message"]);
    for (method, path) in [
        ("POST", format!("/execute/{sid}")),
        ("DELETE", format!("/close/{sid}")),
        ("POST", "/execute/no_such_session".to_string()),
        ("DELETE", "/close/no_such_session".to_string()),
    ] {
        let a = d.unix(
            method,
            &path,
            json!({"code": "print(1)"}).to_string().as_bytes(),
        );
        assert_eq!(a.status, 404, "{method} {path}: {}", a.body);
        assert_eq!(keys(&a.json()), ["detail"], "{}", a.body);
        assert!(a.json()["detail"].as_str().unwrap().contains("not found"));
    }
}

/// `rsandbox session create|put|run|get|ls|rm` against a daemon: ids, output and exit status
/// as `rsandbox run`'s, files both ways, listings, and errors (exit 125) for what has ended.
#[test]
fn the_session_cli_drives_a_daemon() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(util::bin())
            .arg("session")
            .arg("--daemon")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["create", "--mem", "128", "--env", "A=1"]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let host = tmp.path().join("in.txt");
    std::fs::write(&host, "from the host\n").unwrap();
    let h = host.to_str().unwrap();
    assert_eq!(cli(&["put", &id, h, "sub/in.txt"]).0, 0);
    let (code, out, _) = cli(&[
        "run",
        &id,
        "--",
        "/bin/sh",
        "-c",
        "cat sub/in.txt; echo $A > a.txt; exit 3",
    ]);
    assert_eq!((code, out.as_str()), (3, "from the host\n"));
    let (code, out, _) = cli(&["run", &id, "-c", "print(open('a.txt').read().strip())"]);
    assert_eq!((code, out.as_str()), (0, "1\n"));
    let (code, _, err) = cli(&["run", &id, "--timeout", "0.5", "--", "sleep", "10"]);
    assert_eq!(code, 124, "{err}");
    let back = tmp.path().join("back.txt");
    assert_eq!(cli(&["get", &id, "a.txt", back.to_str().unwrap()]).0, 0);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "1\n");
    let (_, out, _) = cli(&["ls", &id, "sub"]);
    assert!(out.contains("in.txt"), "{out}");
    let (_, out, _) = cli(&["ls"]);
    assert!(out.contains(&id), "{out}");
    assert_eq!(cli(&["rm", &id, "a.txt"]).0, 0);
    let (code, _, err) = cli(&["get", &id, "a.txt"]);
    assert_eq!(code, 125);
    assert!(err.contains("404"), "{err}");
    assert_eq!(cli(&["rm", &id]).0, 0);
    let (code, _, err) = cli(&["run", &id, "--", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("410"), "{err}");
}

/// Maze's client, point by point: `timeout` as an int or a float; a timeout is HTTP 200 with
/// `timed_out: true, exit_code: -1`; ids are opaque (128 random bits in hex, never reused);
/// `DELETE /close/{id}`; FastAPI's `{"detail": ...}` on 404 (unknown or closed) and on 500 (a
/// session the host cannot make: GPUs that are not there).
#[test]
fn maze_matches_its_clients_exact_behaviour() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let create = |body: Value| d.post("/create_session", &body);
    let a = create(json!({"code": "", "timeout": 5, "cpu_nums": 1, "memory_mb": 128}));
    assert_eq!(a.status, 200, "{}", a.body);
    let sid = a.json()["session_id"].as_str().unwrap().to_string();
    let b = create(json!({"code": "", "timeout": 5.5}));
    assert_eq!(b.status, 200, "{}", b.body);
    let other = b.json()["session_id"].as_str().unwrap().to_string();
    for id in [&sid, &other] {
        assert!(
            id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_ne!(sid, other);
    for timeout in [json!(1), json!(0.5)] {
        let a = d.post(
            &format!("/execute/{sid}"),
            &json!({"code": "import time\ntime.sleep(30)", "timeout": timeout}),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        assert_eq!(
            (v["timed_out"].as_bool(), v["exit_code"].as_i64()),
            (Some(true), Some(-1)),
            "{v}"
        );
    }
    let a = d.post(
        &format!("/execute/{sid}"),
        &json!({"code": "print(6 * 7)", "timeout": 10}),
    );
    assert_eq!((a.status, a.json()["stdout"].as_str()), (200, Some("42\n")));
    // 500 in FastAPI's shape.
    let a = create(json!({"code": "", "gpu_nums": 64}));
    assert_eq!(a.status, 500, "{}", a.body);
    let v = a.json();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("Failed to create sandbox session"),
        "{v}"
    );
    for id in [&sid, &other] {
        let a = d.unix("DELETE", &format!("/close/{id}"), b"");
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = d.unix("DELETE", &format!("/close/{sid}"), b"");
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.json()["detail"].is_string(), "{}", a.body);
}
