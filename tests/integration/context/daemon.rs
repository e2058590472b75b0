//! Contexts over the daemon's socket: the contexts API, `execute` whole and streamed, a
//! disconnect that interrupts, bad input, the per-session maximum, and a hostile driver.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::Daemon;
use crate::util;

fn session(d: &Daemon) -> String {
    let a = d.post("/v1/sessions", &json!({}));
    assert_eq!(a.status, 201, "{}", a.body);
    a.json()["id"].as_str().unwrap().to_string()
}

fn context(d: &Daemon, sid: &str, body: Value) -> String {
    let a = d.post(&format!("/v1/sessions/{sid}/contexts"), &body);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["language"], "python");
    a.json()["id"].as_str().unwrap().to_string()
}

fn execute(d: &Daemon, sid: &str, body: Value) -> Value {
    let a = d.post(&format!("/v1/sessions/{sid}/execute"), &body);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// Sends a request asking for NDJSON and returns the socket, positioned at the body.
fn open_stream(d: &Daemon, path: &str, body: &Value) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/x-ndjson\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l == "\r\n" || l.is_empty() {
            break;
        }
        head.push_str(&l);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/x-ndjson"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    r
}

/// The next NDJSON line of a chunked body (None at its end), with when it arrived.
fn next_line(r: &mut BufReader<UnixStream>, pending: &mut Vec<u8>) -> Option<(Value, Instant)> {
    loop {
        if let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=at).collect();
            return Some((serde_json::from_slice(&l).unwrap(), Instant::now()));
        }
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return None;
        }
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk).ok()?;
        pending.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn contexts_keep_state_and_are_managed_through_the_api() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    let c1 = context(&d, &sid, json!({"language": "python", "ipython": false}));
    let c2 = context(&d, &sid, json!({}));
    let v = execute(&d, &sid, json!({"code": "x = 20", "context_id": c1}));
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["context_id"], c1.as_str());
    let v = execute(&d, &sid, json!({"code": "x * 2 + 2", "context_id": c1}));
    assert_eq!(v["text"], "42", "{v}");
    assert_eq!(v["results"][0]["main"], true);
    assert_eq!(v["results"][0]["data"]["text/plain"], "42");
    assert_eq!(v["execution_count"], 2);
    let v = execute(
        &d,
        &sid,
        json!({"code": "'x' in globals()", "context_id": c2}),
    );
    assert_eq!(v["text"], "False", "separate namespaces: {v}");
    // Without a context id: the session's default context, made on first use, then kept.
    let v = execute(&d, &sid, json!({"code": "y = 5"}));
    let default = v["context_id"].as_str().unwrap().to_string();
    let v = execute(&d, &sid, json!({"code": "y"}));
    assert_eq!(
        (v["text"].as_str(), v["context_id"].as_str()),
        (Some("5"), Some(default.as_str()))
    );
    let list = d.get(&format!("/v1/sessions/{sid}/contexts")).json();
    assert_eq!(list["contexts"].as_array().unwrap().len(), 3, "{list}");
    // An error keeps the state and names the exception with the cell's source.
    let v = execute(
        &d,
        &sid,
        json!({"code": "def f():\n    raise ValueError('no')\nf()", "context_id": c1}),
    );
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"]["name"], "ValueError");
    assert!(
        v["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("raise ValueError('no')"),
        "{v}"
    );
    // Interrupt while idle, restart, delete.
    let a = d.post(
        &format!("/v1/sessions/{sid}/contexts/{c1}/interrupt"),
        &json!({}),
    );
    assert_eq!(
        (a.status, a.json()["status"].clone()),
        (200, json!("idle")),
        "{}",
        a.body
    );
    let a = d.post(
        &format!("/v1/sessions/{sid}/contexts/{c1}/restart"),
        &json!({}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let v = execute(
        &d,
        &sid,
        json!({"code": "'x' in globals()", "context_id": c1}),
    );
    assert_eq!(v["text"], "False", "{v}");
    let a = d.unix("DELETE", &format!("/v1/sessions/{sid}/contexts/{c1}"), b"");
    assert_eq!(a.status, 204, "{}", a.body);
    let a = d.post(
        &format!("/v1/sessions/{sid}/execute"),
        &json!({"code": "1", "context_id": c1}),
    );
    assert_eq!(a.status, 410, "{}", a.body);
    let a = d.post(
        &format!("/v1/sessions/{sid}/execute"),
        &json!({"code": "1", "context_id": "nope"}),
    );
    assert_eq!(a.status, 404, "{}", a.body);
    let a = d.post("/v1/sessions/nosuch/execute", &json!({"code": "1"}));
    assert_eq!(a.status, 404, "{}", a.body);
    let a = d.unix("DELETE", &format!("/v1/sessions/{sid}"), b"");
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn bad_execute_requests_get_a_422_with_the_reason() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    let path = format!("/v1/sessions/{sid}/execute");
    for (body, says) in [
        (json!({"code": 42}), "invalid type"),
        (json!({"code": "1", "colour": "red"}), "unknown field"),
        (
            json!({"code": "1", "limits": {"timeout": 100000}}),
            "above this daemon's maximum",
        ),
        (
            json!({"code": "1", "limits": {"memory_mb": 1}}),
            "unknown field",
        ),
        (json!({}), "missing field `code`"),
    ] {
        let a = d.post(&path, &body);
        assert_eq!(a.status, 422, "{body}: {}", a.body);
        assert!(a.body.contains(says), "{body}: {}", a.body);
    }
    let a = d.post(
        &format!("/v1/sessions/{sid}/contexts"),
        &json!({"language": "cobol"}),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    let a = d.unix("POST", &path, b"{not json");
    assert_eq!(a.status, 400, "{}", a.body);
    // The daemon is unharmed.
    assert_eq!(execute(&d, &sid, json!({"code": "6 * 7"}))["text"], "42");
}

#[test]
fn contexts_past_the_maximum_get_a_503_naming_the_flag() {
    let _g = util::shared();
    let d = Daemon::start(&["--max-contexts", "2"]);
    let sid = session(&d);
    context(&d, &sid, json!({"ipython": false}));
    context(&d, &sid, json!({"ipython": false}));
    let a = d.post(&format!("/v1/sessions/{sid}/contexts"), &json!({}));
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("--max-contexts"), "{}", a.body);
    assert!(a.header("retry-after").is_some());
}

#[test]
fn execute_streams_lines_as_they_happen() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    let code = "import time, sys\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\nsys.stdout.buffer.write(b'\\xff\\n')\n'done'";
    let mut r = open_stream(
        &d,
        &format!("/v1/sessions/{sid}/execute"),
        &json!({"code": code}),
    );
    let mut pending = Vec::new();
    let mut lines = Vec::new();
    while let Some(l) = next_line(&mut r, &mut pending) {
        lines.push(l);
    }
    let kinds: Vec<&str> = lines
        .iter()
        .map(|(v, _)| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"stdout"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    assert!(
        lines[0].0["text"].as_str().unwrap().starts_with("first"),
        "{lines:?}"
    );
    let (end, end_at) = &lines[lines.len() - 1];
    assert!(
        end_at.duration_since(lines[0].1) >= Duration::from_secs(1),
        "the first line came with the end"
    );
    assert_eq!(end["status"], "ok");
    assert_eq!(end["text"], "'done'");
    assert!(lines
        .iter()
        .any(|(v, _)| v["type"] == "result" && v["main"] == true));
    // Text as text, bytes that are not UTF-8 as base64: together, exactly what was written.
    use base64::Engine;
    let mut out = Vec::new();
    for (v, _) in lines.iter().filter(|(v, _)| v["type"] == "stdout") {
        match (v["text"].as_str(), v["b64"].as_str()) {
            (Some(t), None) => out.extend_from_slice(t.as_bytes()),
            (None, Some(b)) => {
                out.extend(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!(out, b"first\nsecond\n\xff\n");
}

#[test]
fn a_client_that_disconnects_interrupts_its_cell() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    execute(&d, &sid, json!({"code": "n = 0"}));
    let r = open_stream(
        &d,
        &format!("/v1/sessions/{sid}/execute"),
        &json!({"code": "import time\nwhile True:\n    n += 1\n    time.sleep(0.01)"}),
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(r);
    let start = Instant::now();
    // The interrupted cell frees the context; the state survives.
    let v = execute(
        &d,
        &sid,
        json!({"code": "n > 0", "limits": {"timeout": 20}}),
    );
    assert_eq!(v["text"], "True", "{v}");
    assert_eq!(v["context_restarted"], false, "{v}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the cell was not interrupted"
    );
}

#[test]
fn a_hostile_cell_that_writes_frames_to_the_driver_only_ends_its_context() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    let write_to_sockets = |bytes: &str| {
        format!(
            "import os\nfor fd in os.listdir('/proc/self/fd'):\n    try:\n        if os.readlink(f'/proc/self/fd/{{fd}}').startswith('socket:'):\n            os.write(int(fd), {bytes})\n    except OSError:\n        pass\nimport time; time.sleep(2)"
        )
    };
    for garbage in [
        "b'\\xff\\xff\\xff\\xff' + b'x' * 100",
        "b'\\x00\\x00\\x00\\x05hello'",
        "b'\\x00\\x00\\x00\\x02[]'",
    ] {
        execute(&d, &sid, json!({"code": "keep = 1"}));
        let v = execute(&d, &sid, json!({"code": write_to_sockets(garbage)}));
        assert_eq!(v["status"], "died", "{garbage}: {v}");
        let v = execute(&d, &sid, json!({"code": "'keep' in globals()"}));
        assert_eq!(v["context_restarted"], true, "{v}");
        assert_eq!(v["text"], "False");
    }
    // The control socket is not inherited by the cell's subprocesses.
    let v = execute(
        &d,
        &sid,
        json!({"code": "import subprocess\nprint(subprocess.run(['ls', '/proc/self/fd'], capture_output=True, text=True).stdout.split())"}),
    );
    assert_eq!(v["stdout"], "['0', '1', '2', '3']\n", "{v}");
    assert_eq!(d.get("/v1/health").status, 200);
}

#[test]
fn runs_stream_their_output_as_cells_do() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let sid = session(&d);
    let code = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')";
    for path in ["/v1/run".to_string(), format!("/v1/sessions/{sid}/run")] {
        let mut r = open_stream(&d, &path, &json!({"code": code}));
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        while let Some(l) = next_line(&mut r, &mut pending) {
            lines.push(l);
        }
        let (first, first_at) = &lines[0];
        assert_eq!(first["type"], "stdout", "{path}: {lines:?}");
        assert!(first["text"].as_str().unwrap().starts_with("first"));
        let (end, end_at) = lines.last().unwrap();
        assert_eq!(end["type"], "end", "{path}: {lines:?}");
        assert!(
            end_at.duration_since(*first_at) >= Duration::from_secs(1),
            "{path}"
        );
        assert_eq!(end["report"]["status"], "ok", "{path}: {end}");
        assert_eq!(end["report"]["stdout"], "first\nsecond\n", "{path}: {end}");
    }
}
