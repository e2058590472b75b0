//! The Jupyter Server kernels API with real Jupyter clients (Datalayer's code-sandboxes and
//! websocket-client's raw protocol), and the browser protections of the compatible APIs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::server::{parse, Answer, Daemon};
use crate::util;

/// A Python with code-sandboxes 1.10.0 and websocket-client: `RSANDBOX_JUPYTER_PYTHON`
/// (tests/fetch-seed-clients jupyter), or a venv made here with pip.
fn jupyter_python() -> Option<PathBuf> {
    crate::util::client_python(
        "RSANDBOX_JUPYTER_PYTHON",
        "seed-clients",
        "jupyter",
        "code_sandboxes, websocket, jupyter_kernel_client",
        &["code-sandboxes==1.10.0", "websocket-client"],
    )
}

/// The client script: code-sandboxes' public API, then the raw protocol for what it does not
/// cover (kernel_info, interrupt and shutdown on control, bad frames, unknown kernels).
const CLIENT: &str = r#"
import json, sys, threading, time, uuid
import requests, websocket
from code_sandboxes import Sandbox

base, token = sys.argv[1], sys.argv[2]
auth = {"Authorization": f"token {token}"}

# Without the token: 401; ?token= and "token T" are accepted on /api/*.
assert requests.get(f"{base}/api/kernels").status_code == 401
assert requests.get(f"{base}/api/kernels", params={"token": token}).status_code == 200
assert requests.get(f"{base}/api/kernelspecs", headers=auth).json()["default"] == "python3"

sb = Sandbox.create(variant="jupyter-server", server_url=f"{base}?token={token}")
sb.start()
seen = []
r = sb.run_code("x = 1 + 1")
assert r.execution_ok and r.code_error is None, r
r = sb.run_code("print('a', x, flush=True)\nimport sys; print('e', file=sys.stderr)\nx * 21",
                on_stdout=lambda m: seen.append(m.line))
assert [m.line for m in r.logs.stdout] == ["a 2"], r.logs
assert [m.line for m in r.logs.stderr] == ["e"], r.logs
assert [x.data["text/plain"] for x in r.results if x.is_main_result] == ["42"], r.results
assert seen == ["a 2"], seen
assert r.execution_count == 2, r.execution_count
r = sb.run_code("1/0")
assert r.code_error.name == "ZeroDivisionError" and "1/0" in r.code_error.traceback, r.code_error
assert sb.run_code("x").results[0].data["text/plain"] == "2"
kid = sb._client.id
models = requests.get(f"{base}/api/kernels", headers=auth).json()
assert [m["id"] for m in models] == [kid], models
assert set(models[0]) >= {"id", "name", "last_activity", "execution_state", "connections"}, models
assert models[0]["connections"] == 1, models

# The raw protocol on the same kernel.
ws = websocket.create_connection(
    f"{base.replace('http', 'ws', 1)}/api/kernels/{kid}/channels?session_id=raw",
    header=[f"Authorization: token {token}"])
def send(channel, msg_type, content):
    mid = uuid.uuid4().hex
    ws.send(json.dumps({"header": {"msg_id": mid, "msg_type": msg_type, "session": "raw",
        "username": "t", "version": "5.3", "date": ""}, "parent_header": {}, "metadata": {},
        "content": content, "channel": channel}))
    return mid
def until(mid, channel, msg_type):
    while True:
        m = json.loads(ws.recv())
        if m["parent_header"].get("msg_id") == mid and m["channel"] == channel \
                and m["header"]["msg_type"] == msg_type:
            return m
mid = send("shell", "kernel_info_request", {})
assert until(mid, "shell", "kernel_info_reply")["content"]["language_info"]["name"] == "python"
mid = send("shell", "execute_request", {"code": "import time\nprint('go', flush=True)\ntime.sleep(60)",
    "silent": False})
assert until(mid, "iopub", "status")["content"]["execution_state"] == "busy"
assert until(mid, "iopub", "stream")["content"]["text"] == "go\n"
imid = send("control", "interrupt_request", {})
assert until(imid, "control", "interrupt_reply")["content"]["status"] == "ok"
reply = until(mid, "shell", "execute_reply")["content"]
assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
assert until(mid, "iopub", "status")["content"]["execution_state"] == "idle"
mid = send("shell", "execute_request", {"code": "x + 1"})
res = until(mid, "iopub", "execute_result")["content"]
assert res["data"]["text/plain"] == "3", res
assert until(mid, "shell", "execute_reply")["content"]["status"] == "ok"
# REST interrupt, while a cell runs.
mid = send("shell", "execute_request", {"code": "import time\nprint('go', flush=True)\ntime.sleep(60)"})
until(mid, "iopub", "stream")
assert requests.post(f"{base}/api/kernels/{kid}/interrupt", headers=auth).status_code == 204
assert until(mid, "shell", "execute_reply")["content"]["ename"] == "KeyboardInterrupt"
# A frame that is not a Jupyter message: closed with 1007 and the reason.
bad = websocket.create_connection(
    f"{base.replace('http', 'ws', 1)}/api/kernels/{kid}/channels?token={token}")
bad.send("{not json")
op, frame = bad.recv_data(control_frame=True)
assert op == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame[:2], "big") == 1007, frame
assert b"not JSON" in frame, frame
# Unknown kernels.
assert requests.get(f"{base}/api/kernels/nope", headers=auth).status_code == 404
assert requests.post(f"{base}/api/kernels/nope/interrupt", headers=auth).status_code == 404
assert requests.post(f"{base}/api/kernels", headers=auth, json={"name": "ruby"}).status_code == 404
# Restart: the state is gone.
assert requests.post(f"{base}/api/kernels/{kid}/restart", headers=auth).status_code == 200
mid = send("shell", "execute_request", {"code": "'x' in dir()"})
assert until(mid, "iopub", "execute_result")["content"]["data"]["text/plain"] == "False"
# Shutdown on control ends the kernel.
mid = send("control", "shutdown_request", {"restart": False})
assert until(mid, "control", "shutdown_reply")["content"]["restart"] is False
assert requests.get(f"{base}/api/kernels/{kid}", headers=auth).status_code == 404
sb.stop()
print("client ok", kid)
"#;

/// code-sandboxes' jupyter-server variant against a daemon with a token: state across cells,
/// live output, results, errors; then the raw protocol: kernel_info, interrupt on control
/// and over REST (the state survives), restart, a malformed frame (1007), unknown kernels,
/// shutdown on control. The kernel is a session with `"api": "jupyter"`.
#[test]
#[ignore = "an intermittent hang (about one run in five): the client waits for a reply while the \
            kernel is idle; issue 20 stays open until it is found. Run with --ignored"]
fn jupyter_clients_drive_rsandbox_kernels() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = jupyter_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "jupyter-token-0123456789abcdef";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let tf = dir.path().join("token");
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        tf.to_str().unwrap(),
    ]);
    let base = format!("http://{}", d.tcp.unwrap());
    // A hang fails the test after its allowance instead of holding the suite.
    let out = util::output_within(
        Command::new(&python).args(["-c", CLIENT, &base, token]),
        util::allow(180.0),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("client ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel was a session of the Jupyter API; it has ended.
    let kid = stdout.trim().rsplit(' ').next().unwrap();
    let s = d.get(&format!("/v1/sessions/{kid}"));
    assert_eq!(s.status, 410, "{}", s.body);
    let m = d.get("/metrics").body;
    assert!(m.contains("rsandbox_sessions 0"), "{m}");
}

/// A raw request over TCP with the given Host and extra headers.
fn raw(addr: std::net::SocketAddr, method: &str, path: &str, host: &str, extra: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = b"{}";
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    parse(&got)
}

/// Hostile: a web page may not use the compatible APIs. Another origin is refused (403 naming
/// Origin) on every compatible route, the kernel websocket included, with or without a token;
/// under --no-auth a Host that is not loopback (DNS rebinding: the page's own origin) is
/// refused too (403 naming Host). Nothing was created; the daemon's own origin and clients
/// without Origin are served, and the native API is not affected.
#[test]
fn web_pages_cannot_reach_the_compatible_apis() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    let addr = d.tcp.unwrap();
    let own = addr.to_string();
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let evil = "Origin: http://evil.example\r\n";
    for (method, path, extra) in [
        ("POST", "/api/kernels", evil.to_string()),
        ("GET", "/api/kernels/x/channels", format!("{evil}{ws}")),
        ("POST", "/api/v1/rpc", evil.to_string()),
        ("POST", "/dev/token", evil.to_string()),
        ("POST", "/execute", evil.to_string()),
        ("POST", "/execute/abc", evil.to_string()),
        ("POST", "/contexts", evil.to_string()),
        ("GET", "/health", evil.to_string()),
        ("POST", "/create_session", evil.to_string()),
        ("DELETE", "/close/abc", evil.to_string()),
        ("POST", "/run_code", evil.to_string()),
        ("POST", "/run_jupyter", evil.to_string()),
        ("POST", "/api/kernels", "Origin: null\r\n".to_string()),
        (
            "POST",
            "/api/kernels",
            format!("Origin: http://{own}.evil.example\r\n"),
        ),
    ] {
        let a = raw(addr, method, path, &own, &extra);
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert!(a.body.contains("Origin header"), "{}", a.body);
    }
    // DNS rebinding: the page's name resolves to 127.0.0.1; Origin and Host agree.
    for (path, extra) in [
        (
            "/api/kernels",
            "Origin: http://evil.example:8888\r\n".to_string(),
        ),
        (
            "/api/kernels/x/channels",
            format!("Origin: http://evil.example:8888\r\n{ws}"),
        ),
        ("/run_code", String::new()),
    ] {
        let a = raw(addr, "POST", path, "evil.example:8888", &extra);
        assert_eq!(a.status, 403, "{path}: {}", a.body);
        assert!(a.body.contains("Host header"), "{}", a.body);
    }
    // Nothing was created; the daemon's own origin and Origin-less clients are served.
    let a = raw(
        addr,
        "GET",
        "/api/kernels",
        &own,
        &format!("Origin: http://{own}\r\n"),
    );
    assert_eq!(
        (a.status, a.json()),
        (200, serde_json::json!([])),
        "{}",
        a.body
    );
    assert_eq!(raw(addr, "GET", "/api/status", "localhost", "").status, 200);
    assert_eq!(
        d.get("/v1/sessions").json()["sessions"],
        serde_json::json!([])
    );
    // The native API keeps its own rules.
    assert_eq!(raw(addr, "GET", "/v1/health", &own, evil).status, 200);

    // With a token, another origin is refused even with the right token.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-0123456789abcdef").unwrap();
    let tf = dir.path().join("token");
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        tf.to_str().unwrap(),
    ]);
    let addr = d.tcp.unwrap();
    let auth = "Authorization: token tok-0123456789abcdef\r\n";
    let a = raw(
        addr,
        "POST",
        "/api/kernels",
        &addr.to_string(),
        &format!("{auth}{evil}"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    // A token-holding client may use any name for the daemon.
    let a = raw(addr, "GET", "/api/kernels", "sandbox.internal:8888", auth);
    assert_eq!(a.status, 200, "{}", a.body);
    let v: Value = a.json();
    assert_eq!(v, serde_json::json!([]));
}
