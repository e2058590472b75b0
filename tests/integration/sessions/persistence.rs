//! What persists: files and background processes between runs, main.py untouched, runs in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{create, run, sh};
use crate::server::Daemon;
use crate::util;

const MIB: u64 = 1 << 20;

/// Code run in a session never overwrites the session's own files: it goes to
/// `rsandbox_cell.*` (and a compiled program to `rsandbox_cell`), so a `main.py` the client put
/// there, or an earlier run wrote, stays, and the code can import it. In Maze's API too. A
/// one-shot run keeps SandboxFusion's `main.py`.
#[test]
fn session_code_never_overwrites_the_sessions_main_py() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let id = create(&d, json!({}));
    let f = |p: &str| format!("/v1/sessions/{id}/files/{p}");
    let a = d.unix("PUT", &f("main.py"), b"X = 'mine'\n");
    assert_eq!(a.status, 200, "{}", a.body);
    for _ in 0..2 {
        let v = run(&d, &id, json!({"code": "import main; print(main.X)"}));
        assert_eq!(v["stdout"], "mine\n", "{v}");
    }
    assert_eq!(d.get(&f("main.py")).body, "X = 'mine'\n");
    let v = run(&d, &id, json!({"code": "echo $0", "language": "bash"}));
    assert_eq!(v["stdout"], "rsandbox_cell.sh\n", "{v}");
    if std::path::Path::new("/usr/bin/g++").exists() {
        let a = d.unix("PUT", &f("main"), b"the client's file called main");
        assert_eq!(a.status, 200, "{}", a.body);
        let code = "#include <cstdio>\nint main() { std::puts(\"compiled\"); }\n";
        let v = run(
            &d,
            &id,
            json!({"code": code, "language": "cpp", "limits": {"compile_timeout": (60.0 * util::time_scale()).min(300.0)}}),
        );
        assert_eq!(v["stdout"], "compiled\n", "{v}");
        assert_eq!(d.get(&f("main")).body, "the client's file called main");
    }

    let a = d.post("/create_session", &json!({"code": "", "memory_mb": 256}));
    assert_eq!(a.status, 200, "{}", a.body);
    let sid = a.json()["session_id"].as_str().unwrap().to_string();
    for (code, out) in [
        ("open('main.py', 'w').write('X = 42\\n')", ""),
        ("import main; print(main.X)", "42\n"),
        ("print(open('main.py').read(), end='')", "X = 42\n"),
    ] {
        let a = d.post(&format!("/execute/{sid}"), &json!({"code": code}));
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.json()["stdout"], out, "{code}: {}", a.body);
    }

    let a = d.post(
        "/v1/run",
        &json!({"code": "import os; print(sorted(os.listdir('.')))"}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["stdout"], "['main.py']\n", "{}", a.body);
}

/// The background server of `the_session_keeps_files_and_background_processes`: listens on
/// loopback, holds `HOLD` MiB, answers each connection with the content of `data.txt`.
const SERVER: &str = r#"
import socket, sys
hold = b"\x01" * (int(sys.argv[1]) << 20)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8765))
s.listen(8)
open("ready", "w").write("1")
while True:
    c, _ = s.accept()
    c.sendall(b"server says " + open("data.txt", "rb").read() + b" " + str(len(hold) >> 20).encode())
    c.close()
"#;

const CLIENT: &str = r#"
import socket
c = socket.create_connection(("127.0.0.1", 8765), timeout=5)
print(c.recv(1000).decode())
"#;

/// Files written by one run are there for the next; a server started in the background by run
/// 1 answers run 2 and counts against the session's memory (its usage shows it, and a run that
/// would fit alone is OOM-killed beside it); a run's timeout kills that run, not the server.
#[test]
fn the_session_keeps_files_and_background_processes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let id = create(
        &d,
        json!({"limits": {"memory_mb": 256, "network": "loopback", "pids": 64}, "env": {"WHO": "session"}}),
    );
    let alloc = "import time; b = b'\\x01' * (160 << 20); time.sleep(0.5); print('allocated')";
    // Alone, 160 MiB fits in the session's 256.
    let r = run(&d, &id, json!({"code": alloc}));
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str()),
        (Some("ok"), Some("allocated\n")),
        "{r}"
    );

    let r = run(
        &d,
        &id,
        json!({
            "argv": ["/bin/sh", "-c", "echo \"$WHO $1\" > data.txt; python3 server.py 120 > server.log 2>&1 &", "sh", "run1"],
            "files": [{"path": "server.py", "content": SERVER}, {"path": "client.py", "content": CLIENT}],
        }),
    );
    assert_eq!(r["status"], "ok", "{r}");
    let ready = Instant::now();
    while d.get(&format!("/v1/sessions/{id}/files/ready")).status != 200 {
        assert!(
            ready.elapsed() < util::allow(20.0),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = run(&d, &id, json!({"argv": ["python3", "client.py"]}));
    assert_eq!(r["stdout"], "server says session run1\n 120\n", "{r}");

    // The session's usage counts the server's memory.
    let s = d.get(&format!("/v1/sessions/{id}")).json();
    let mem = s["usage"]["memory_bytes"].as_u64().unwrap_or(0);
    assert!(mem >= 120 * MIB, "usage misses the background server: {s}");
    assert!(s["usage"]["pids"].as_u64().unwrap_or(0) >= 2, "{s}");
    assert_eq!(s["runs"], 3, "{s}");
    assert_eq!(s["limits"]["memory_mb"], 256, "{s}");

    // A run that times out is killed; the server lives on.
    let r = run(
        &d,
        &id,
        json!({"argv": ["/bin/sh", "-c", "sleep 1000 & sleep 1000"], "limits": {"timeout": 0.5}}),
    );
    assert_eq!(r["status"], "timeout", "{r}");
    let r = run(&d, &id, json!({"argv": ["python3", "client.py"]}));
    assert_eq!(r["stdout"], "server says session run1\n 120\n", "{r}");
    let r = sh(
        &d,
        &id,
        "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $c; echo; done | grep -c '^sleep 1000' || true",
    );
    assert_eq!(
        r["stdout"], "0\n",
        "the timed-out run's sleeps must be gone: {r}"
    );

    // Beside the server's 120 MiB, the same 160 MiB no longer fit.
    let r = run(&d, &id, json!({"code": alloc}));
    assert!(
        r["limits_hit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "memory"),
        "the session's memory limit must cover the background server: {r}"
    );
    let a = d.unix("DELETE", &format!("/v1/sessions/{id}"), b"");
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Runs of one session are serialised: a second run waits for the first (it sees what the
/// first wrote at its end), while another session's run goes on at once.
#[test]
fn runs_of_one_session_are_serialised() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Arc::new(Daemon::start(&["--slots", "2"]));
    let id = create(&d, json!({}));
    let other = create(&d, json!({}));
    let first = {
        let (d, id) = (d.clone(), id.clone());
        std::thread::spawn(move || sh(&d, &id, "sleep 1; echo first > order"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = sh(&d, &other, "echo other");
    assert_eq!(r["stdout"], "other\n");
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "another session waited"
    );
    let r = sh(&d, &id, "cat order");
    assert_eq!(r["stdout"], "first\n", "the second run did not wait: {r}");
    assert_eq!(first.join().unwrap()["status"], "ok");
}
