//! Integration tests: sessions, over real sockets (`/v1/sessions`, Maze's `/create_session`,
//! `/execute`, `/close`, `rsandbox session`), and the `Instance` calls they stand on: files and
//! background processes that persist between runs, a run's timeout that leaves the session's
//! other processes alone, the session's limits covering everything in it, idle and lifetime
//! expiry, a files API that never leaves the work dir, the daemon's limits (503), 200 sessions
//! at once with the daemon's memory figures, and nothing left behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{host_before, Daemon};
use crate::util;

/// Creates a session (asserting 201); returns its id.
fn create(d: &Daemon, body: Value) -> String {
    let a = d.post("/v1/sessions", &body);
    assert_eq!(a.status, 201, "{}", a.body);
    let v = a.json();
    v["id"].as_str().expect("an id").to_string()
}

/// Runs in a session (asserting 200); returns the report.
fn run(d: &Daemon, id: &str, body: Value) -> Value {
    let a = d.post(&format!("/v1/sessions/{id}/run"), &body);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// `sh -c script` in a session.
fn sh(d: &Daemon, id: &str, script: &str) -> Value {
    run(d, id, json!({"argv": ["/bin/sh", "-c", script]}))
}

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

/// The library's calls for sessions: `list_dir` (sorted, symlinks listed as such, never
/// followed on the way), `remove_file` (a link itself, an empty directory, not a full one) and
/// `usage` (the instance's processes, background ones included).
#[test]
fn instance_lists_removes_and_reports_usage() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    inst.put_file("b.txt", b"12345", 0o600).unwrap();
    inst.put_file("d/inner.txt", b"x", 0o644).unwrap();
    let o = inst
        .exec(&rsandbox::Command::new("/bin/sh").args([
            "-c",
            "ln -s /etc/passwd link; mkdir empty; ln -s /etc d2; sleep 1000 >/dev/null 2>&1 &",
        ]))
        .unwrap();
    assert_eq!(o.status, rsandbox::Status::Ok, "{o:#?}");
    let names: Vec<(String, rsandbox::FileKind, u64, u32)> = inst
        .list_dir("")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind, e.size, e.mode))
        .collect();
    use rsandbox::FileKind::*;
    assert_eq!(
        names
            .iter()
            .map(|(n, k, _, _)| (n.as_str(), *k))
            .collect::<Vec<_>>(),
        [
            ("b.txt", File),
            ("d", Dir),
            ("d2", Symlink),
            ("empty", Dir),
            ("link", Symlink)
        ]
    );
    assert_eq!((names[0].2, names[0].3), (5, 0o600));
    assert_eq!(inst.list_dir("d").unwrap()[0].name, "inner.txt");
    assert!(matches!(
        inst.list_dir("d2"),
        Err(rsandbox::Error::Path { .. })
    ));
    assert!(matches!(
        inst.list_dir("../"),
        Err(rsandbox::Error::Path { .. })
    ));
    inst.remove_file("link").unwrap();
    inst.remove_file("empty").unwrap();
    assert!(inst.remove_file("d").is_err(), "a full directory stays");
    assert!(inst.remove_file("missing").is_err());
    assert!(std::path::Path::new("/etc/passwd").exists());
    let left: Vec<String> = inst
        .list_dir(".")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(left, ["b.txt", "d", "d2"]);
    let u = inst.usage().unwrap();
    // The reaper and the background sleep.
    assert!(u.pids.unwrap() >= 2, "{u:?}");
    assert!(u.memory_bytes.unwrap() > 0, "{u:?}");
    // Without cgroups only live processes count (the reaper and a sleep: no tick yet).
    assert!(u.cpu_ms > 0.0 || u.source == "procfs", "{u:?}");
    inst.destroy().unwrap();
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

/// The files API: PUT (with ?mode), GET (raw bytes), DELETE, listings; `..`, absolute paths
/// and symlinks planted inside (to a host file, to a host directory, to a directory inside)
/// are refused without reading or writing anything through them; a missing file is 404.
#[test]
fn the_files_api_never_leaves_the_work_dir() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let id = create(&d, json!({}));
    let f = |p: &str| format!("/v1/sessions/{id}/files/{p}");
    let a = d.unix(
        "PUT",
        &f("bin/tool.sh?mode=0755"),
        b"#!/bin/sh\necho tool $1\n",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["mode"], 0o755);
    let r = run(&d, &id, json!({"argv": ["bin/tool.sh", "ran"]}));
    assert_eq!(r["stdout"], "tool ran\n", "{r}");
    let a = d.unix("PUT", &f("with%20space.txt"), b"spaced");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(d.get(&f("with%20space.txt")).body, "spaced");
    let list = d.get(&format!("/v1/sessions/{id}/files?dir=bin")).json();
    assert_eq!(
        list["entries"],
        json!([{"name": "tool.sh", "size": 23, "mode": 0o755, "type": "file"}])
    );

    sh(
        &d,
        &id,
        "ln -s /etc/passwd passwd; ln -s /etc etc; mkdir real; ln -s real inner; ln -s ../.. up",
    );
    let entries = d.get(&format!("/v1/sessions/{id}/files")).json()["entries"].clone();
    let kind = |name: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["type"].clone())
    };
    assert_eq!(kind("passwd"), Some(json!("symlink")), "{entries}");
    assert_eq!(kind("real"), Some(json!("dir")), "{entries}");

    let refused = |method: &str, path: &str| {
        let a = d.unix(method, path, b"planted");
        assert_eq!(a.status, 422, "{method} {path}: {}", a.body);
        assert!(!a.body.contains("root:"), "{method} {path}: {}", a.body);
        assert_eq!(a.json()["error"]["stage"], "files", "{}", a.body);
    };
    for p in [
        "..%2Fx",
        "a/../../x",
        "%2Fetc%2Fpasswd",
        "passwd",
        "etc/passwd",
        "up/etc/passwd",
        "inner/f",
    ] {
        refused("GET", &f(p));
    }
    for p in [
        "..%2Fx",
        "%2Fetc%2Frsandbox-planted",
        "etc/rsandbox-planted",
        "inner/f",
        "up/x",
    ] {
        refused("PUT", &f(p));
    }
    refused("GET", &format!("/v1/sessions/{id}/files?dir=etc"));
    refused("GET", &format!("/v1/sessions/{id}/files?dir=..%2F"));
    refused("DELETE", &f("etc/passwd"));
    assert!(!std::path::Path::new("/etc/rsandbox-planted").exists());
    // Deleting a link removes the link.
    assert_eq!(d.unix("DELETE", &f("passwd"), b"").status, 200);
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert_eq!(d.get(&f("passwd")).status, 404);
    let a = d.get(&f("missing.txt"));
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(
        d.unix("DELETE", &f("real"), b"").status,
        200,
        "an empty directory"
    );
    let a = d.unix("PUT", &f("x?mode=999"), b"");
    assert_eq!(a.status, 422, "{}", a.body);
}

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
