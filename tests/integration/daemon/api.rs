//! The native API: `/v1/run` reports and fetched files, 4xx answers, symlinks refused.

use std::path::Path;

use serde_json::json;

use crate::server::{b64, unb64, Daemon};
use crate::util;

/// `/v1/run` returns the DESIGN.md §5 report with queued_ms, runs code in several languages
/// or an argv, with stdin, env and files in, and returns fetched files (refusing missing ones).
#[test]
fn native_run_returns_the_report_and_fetched_files() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let a = d.post(
        "/v1/run",
        &json!({
            "code": "import os, sys, helper\nprint(helper.X, sys.stdin.read(), os.environ['GREETING'])\nopen('out/r.txt', 'w').write('result')\nsys.exit(4)",
            "stdin": "from stdin",
            "env": {"GREETING": "hi"},
            "files": [
                {"path": "helper.py", "content": "X = 41 + 1\n"},
                {"path": "out/keep", "content_b64": b64(b"\x00\x01"), "mode": 0o600}
            ],
            "fetch": ["out/r.txt", "out/keep", "missing.txt"],
            "limits": {"timeout": 20, "memory_mb": 256, "pids": 64, "cpus": 1}
        }),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let r = a.json();
    assert_eq!(r["version"], 1);
    assert_eq!(r["status"], "exit");
    assert_eq!(r["exit_code"], 4);
    assert_eq!(r["stdout"], "42 from stdin hi\n");
    assert_eq!(r["stage"], "run");
    assert!(r["queued_ms"].as_f64().unwrap() >= 0.0);
    assert!(r["wall_ms"].as_f64().unwrap() > 0.0);
    assert!(r["enforcement"]["seccomp"].is_string());
    assert_eq!(unb64(&r["files"]["out/r.txt"]), "result");
    assert_eq!(r["files"]["out/keep"], b64(b"\x00\x01"));
    assert!(r["files_refused"]["missing.txt"].is_string(), "{r}");

    let a = d.post(
        "/v1/run",
        &json!({"argv": ["/bin/sh", "-c", "echo argv $0 >&2", "ok"]}),
    );
    assert_eq!(a.json()["stderr"], "argv ok\n", "{}", a.body);
    let a = d.post(
        "/v1/run",
        &json!({"code": "echo $((6 * 7))", "language": "bash"}),
    );
    assert_eq!(a.json()["stdout"], "42\n", "{}", a.body);
    let a = d.post(
        "/v1/run",
        &json!({"argv": ["/bin/sleep", "5"], "limits": {"timeout": 0.3}}),
    );
    assert_eq!(a.json()["status"], "timeout", "{}", a.body);
    // A program that does not exist is the request's fault.
    let a = d.post("/v1/run", &json!({"argv": ["no-such-program"]}));
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.json()["error"]["stage"], "exec");
    if Path::new("/usr/bin/g++").exists() {
        let a = d.post(
            "/v1/run",
            &json!({"code": "int main() { return 5 }", "language": "cpp"}),
        );
        let r = a.json();
        assert_eq!(
            (r["stage"].as_str(), r["status"].as_str()),
            (Some("compile"), Some("exit")),
            "{r}"
        );
        assert!(r["stderr"].as_str().unwrap().contains("error"), "{r}");
    }
}

/// Limits above the maxima are 422 naming the maximum; malformed JSON, wrong types, unknown
/// fields, huge bodies, `..`/NUL/absolute paths and unknown endpoints are 4xx with a reason;
/// the daemon keeps serving.
#[test]
fn bad_requests_get_a_4xx_with_a_reason() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[
        "--max-body",
        "1M",
        "--max-memory",
        "1024",
        "--max-timeout",
        "60",
    ]);
    for (body, code, word) in [
        (
            json!({"code": "1", "limits": {"memory_mb": 2048}}).to_string(),
            422,
            "maximum of 1024",
        ),
        (
            json!({"code": "1", "limits": {"timeout": 61}}).to_string(),
            422,
            "maximum of 60",
        ),
        (
            json!({"code": "1", "limits": {"cpus": 1000}}).to_string(),
            422,
            "cpus",
        ),
        (
            json!({"code": "1", "limits": {"pids": 100000}}).to_string(),
            422,
            "pids",
        ),
        (json!({"code": 5}).to_string(), 422, "invalid type"),
        (
            json!({"code": "1", "bogus": 1}).to_string(),
            422,
            "unknown field",
        ),
        (
            json!({"code": "1", "files": [{"path": "../x", "content": ""}]}).to_string(),
            422,
            "..",
        ),
        (
            json!({"code": "1", "files": [{"path": "a\u{0}b", "content": ""}]}).to_string(),
            422,
            "NUL",
        ),
        (
            json!({"code": "1", "files": [{"path": "/etc/x", "content": ""}]}).to_string(),
            422,
            "absolute",
        ),
        (
            json!({"code": "1", "fetch": ["../../etc/shadow"]}).to_string(),
            422,
            "..",
        ),
        (
            json!({"code": "1", "env": {"A=B": "c"}}).to_string(),
            422,
            "env",
        ),
        ("{\"code\": ".to_string(), 400, "malformed"),
        ("{\"code\": \"1\",}".to_string(), 400, "malformed"),
    ] {
        let a = d.unix("POST", "/v1/run", body.as_bytes());
        assert_eq!(a.status, code, "{body}: {}", a.body);
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(word),
            "{body}: {}",
            a.body
        );
    }
    let huge = format!("{{\"code\": \"{}\"}}", "x".repeat(2 << 20));
    let a = d.unix("POST", "/v1/run", huge.as_bytes());
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(d.get("/nowhere").status, 404);
    assert_eq!(d.get("/v1/run").status, 405);
    let a = d.post("/run_code", &json!({"code": "print(1)"}));
    assert_eq!(a.status, 422);
    assert!(a.json()["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("language"));
    let a = d.post(
        "/run_code",
        &json!({"code": "1", "language": "python", "files": {"../x": ""}}),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    let h = d.get("/v1/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
}

/// Fetched files never follow a symlink: a link to a host file or out of the work dir is
/// refused by name, and its target's content never appears.
#[test]
fn symlinks_in_fetched_files_are_refused() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let a = d.post(
        "/v1/run",
        &json!({
            "argv": ["/bin/sh", "-c", "ln -s /etc/passwd link; ln -s / up; mkdir d; ln -s .. d/parent; echo ok > real"],
            "fetch": ["link", "up/etc/passwd", "d/parent/real", "real"]
        }),
    );
    let r = a.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(unb64(&r["files"]["real"]), "ok\n");
    for p in ["link", "up/etc/passwd", "d/parent/real"] {
        assert!(r["files"].get(p).is_none(), "{p} was returned: {r}");
        assert!(
            r["files_refused"][p].as_str().unwrap().contains("symlink"),
            "{p}: {r}"
        );
    }
    assert!(!a.body.contains("root:"), "a host file leaked: {}", a.body);
    // /run_code leaves refused files out.
    let a = d.post(
        "/run_code",
        &json!({"code": "import os; os.symlink('/etc/passwd', 'l')", "language": "python", "fetch_files": ["l"]}),
    );
    assert_eq!(a.json()["status"], "Success", "{}", a.body);
    assert_eq!(a.json()["files"], json!({}));
}
