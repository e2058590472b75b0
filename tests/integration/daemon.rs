//! Integration tests: `rsandbox serve` over real sockets: the native API, SandboxFusion's
//! `/run_code` (with verl's and tinker-cookbook's payloads and the real PyPI client), the queue
//! and its limits, cancellation by disconnect, access (peer credentials, bearer tokens), socket
//! activation, SIGTERM and SIGKILL, `run --daemon`, the systemd units, and a 5,000-request soak.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{b64, host_before, http, unb64, Daemon};
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

/// `/run_code` answers in SandboxFusion's exact shape: verl's payload, tinker-cookbook's payload
/// (modules and data as base64 files in the working dir, which is on sys.path), failures as
/// HTTP 200 `Failed`, timeouts as TimeLimitExceeded, compile errors, unsupported languages as
/// SandboxError with a message, clamped limits, large output, and `/v1/ping`.
#[test]
fn run_code_is_sandbox_fusion_compatible() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    // g++ takes longer than SandboxFusion's default 10 s compile timeout under emulation.
    let compile_timeout = 10.0 * util::time_scale();
    let max_timeout = (30.0 * util::time_scale()).to_string();
    let d = Daemon::start(&["--max-timeout", &max_timeout]);
    // verl (verl/utils/reward_score/sandbox_fusion/utils.py: call_sandbox_api).
    let verl = json!({
        "compile_timeout": 10, "run_timeout": 10,
        "code": "a, b = map(int, input().split())\nprint(a + b)",
        "stdin": "3 4", "language": "python", "files": {}, "fetch_files": []
    });
    let a = d.post("/run_code", &verl);
    assert_eq!(a.status, 200);
    assert!(
        a.body.starts_with(r#"{"status":"Success","message":"","compile_result":null,"run_result":{"status":"Finished","execution_time":"#),
        "{}", a.body
    );
    assert!(
        a.body.ends_with(
            r#","return_code":0,"stdout":"7\n","stderr":""},"executor_pod_name":null,"files":{}}"#
        ),
        "{}",
        a.body
    );

    // tinker-cookbook (tinker_cookbook/sandbox/sandboxfusion.py + recipes/code_rl/code_grading.py):
    // code, language, int run_timeout, files as base64; the code imports a file it was given.
    let test_cases = json!({"input_output": json!({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}).to_string()});
    let util_py = "import json\ndef run_test(sample, test):\n    io = json.loads(sample['input_output'])\n    ns = {}\n    exec(test, ns)\n    return [ns['solve'](i) == o for i, o in zip(io['inputs'], io['outputs'])]\n";
    let generation = "def solve(s):\n    a, b = map(int, s.split())\n    return f'{a + b}\\n'\n";
    let test_code = "import json, sys\nfrom testing_util import run_test\nsample = json.load(open('test_cases.txt'))\nres = run_test(sample, test=open('code.py').read())\nprint(json.dumps(res))\nsys.exit(0 if all(res) else 1)\n";
    let tinker = json!({
        "code": test_code, "language": "python", "run_timeout": 11,
        "files": {"test_cases.txt": b64(test_cases.to_string().as_bytes()), "code.py": b64(generation.as_bytes()), "testing_util.py": b64(util_py.as_bytes())}
    });
    let r = d.post("/run_code", &tinker).json();
    assert_eq!(r["status"], "Success", "{r}");
    assert_eq!(r["run_result"]["stdout"], "[true, true]\n");

    let r = d
        .post(
            "/run_code",
            &json!({"code": "import sys; print('x'); sys.exit(2)", "language": "python"}),
        )
        .json();
    assert_eq!(
        (
            r["status"].as_str(),
            r["run_result"]["status"].as_str(),
            r["run_result"]["return_code"].as_i64()
        ),
        (Some("Failed"), Some("Finished"), Some(2)),
        "{r}"
    );
    let r = d
        .post(
            "/run_code",
            &json!({"code": "raise ValueError('boom')", "language": "python"}),
        )
        .json();
    assert_eq!(r["status"], "Failed");
    assert!(r["run_result"]["stderr"]
        .as_str()
        .unwrap()
        .contains("ValueError: boom"));
    let r = d
        .post(
            "/run_code",
            &json!({"code": "while True: pass", "language": "python", "run_timeout": 0.5}),
        )
        .json();
    assert_eq!(
        (r["status"].as_str(), r["run_result"]["status"].as_str()),
        (Some("Failed"), Some("TimeLimitExceeded")),
        "{r}"
    );
    assert!(r["run_result"]["return_code"].is_null());
    // Clamped, not refused.
    let r = d.post("/run_code", &json!({"code": "print('ok')", "language": "python", "run_timeout": 1e6, "memory_limit_MB": 1_000_000})).json();
    assert_eq!(r["status"], "Success", "{r}");
    // ~300 KB of output (SandboxFusion hangs on ~200 KB).
    let r = d
        .post(
            "/run_code",
            &json!({"code": "print('y' * 300000)", "language": "python"}),
        )
        .json();
    assert_eq!(r["run_result"]["stdout"].as_str().unwrap().len(), 300001);
    let r = d.post("/run_code", &json!({"code": "echo hi > f.txt; cat f.txt", "language": "bash", "fetch_files": ["f.txt"]})).json();
    assert_eq!(
        (r["status"].as_str(), r["run_result"]["stdout"].as_str()),
        (Some("Success"), Some("hi\n"))
    );
    assert_eq!(unb64(&r["files"]["f.txt"]), "hi\n");
    let r = d
        .post("/run_code", &json!({"code": "x", "language": "cobol"}))
        .json();
    assert_eq!(r["status"], "SandboxError");
    assert!(
        r["message"].as_str().unwrap().contains("not supported"),
        "{r}"
    );
    if Path::new("/usr/bin/g++").exists() {
        let r = d.post("/run_code", &json!({"code": "#include <iostream>\nint main() { int a, b; std::cin >> a >> b; std::cout << a * b << std::endl; }", "language": "cpp", "stdin": "6 7", "compile_timeout": compile_timeout})).json();
        assert_eq!(
            (r["status"].as_str(), r["run_result"]["stdout"].as_str()),
            (Some("Success"), Some("42\n")),
            "{r}"
        );
        assert_eq!(r["compile_result"]["return_code"], 0);
        let r = d
            .post(
                "/run_code",
                &json!({"code": "int main() { syntax error }", "language": "cpp", "compile_timeout": compile_timeout}),
            )
            .json();
        assert_eq!(r["status"], "Failed", "{r}");
        assert_ne!(r["compile_result"]["return_code"], 0);
        assert!(r["run_result"].is_null());
    }
    if Path::new("/usr/bin/node").exists() {
        let r = d.post("/run_code", &json!({"code": "console.log([1,2,3].map(x => x * 2).join(','))", "language": "nodejs"})).json();
        assert_eq!(r["run_result"]["stdout"], "2,4,6\n", "{r}");
    }
    let p = d.get("/v1/ping");
    assert_eq!((p.status, p.body.as_str()), (200, "\"pong\""));
}

/// The real `sandbox-fusion` client from PyPI, against the daemon's TCP listener.
#[test]
fn the_sandbox_fusion_pypi_client_works() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = sandbox_fusion_python() else {
        return;
    };
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    assert!(
        d.log().contains("WARNING"),
        "--no-auth must be logged: {}",
        d.log()
    );
    let script = r#"
import base64, sys
from sandbox_fusion import run_code, RunCodeRequest, RunStatus, set_endpoint
set_endpoint(sys.argv[1])
r = run_code(RunCodeRequest(code="import data\nprint(data.V * 2)", language="python",
    files={"data.py": base64.b64encode(b"V = 21").decode()}, fetch_files=["data.py"]))
assert r.status == RunStatus.Success, r
assert r.run_result.stdout == "42\n", r
assert base64.b64decode(r.files["data.py"]) == b"V = 21", r
r = run_code(RunCodeRequest(code="import sys; sys.exit(3)", language="python"))
assert r.status == RunStatus.Failed and r.run_result.return_code == 3, r
r = run_code(RunCodeRequest(code="import time; time.sleep(3)", language="python", run_timeout=0.5))
assert r.status == RunStatus.Failed and r.run_result.status == "TimeLimitExceeded", r
print("client ok")
"#;
    let out = Command::new(&python)
        .args(["-c", script, &format!("http://{}", d.tcp.unwrap())])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("client ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python with the `sandbox-fusion` client: `RSANDBOX_SF_PYTHON`, or a venv made here with
/// pip from PyPI. `None` (with a loud SKIP, or a failure when `RSANDBOX_TEST_EXPECT` lists
/// `sandbox-fusion`) when neither works.
fn sandbox_fusion_python() -> Option<PathBuf> {
    let expected = std::env::var("RSANDBOX_TEST_EXPECT")
        .unwrap_or_default()
        .split(',')
        .any(|f| f.trim() == "sandbox-fusion");
    if let Some(p) = std::env::var_os("RSANDBOX_SF_PYTHON") {
        return Some(p.into());
    }
    // SAFETY: geteuid cannot fail.
    let venv =
        std::env::temp_dir().join(format!("rsandbox-sf-venv-{}", unsafe { libc::geteuid() }));
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import sandbox_fusion"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&python) {
        let made = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "sandbox-fusion"])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !ok(&python) {
            assert!(
                !expected,
                "sandbox-fusion is expected but could not be installed from PyPI"
            );
            eprintln!(
                "SKIP: the sandbox-fusion client could not be installed from PyPI; test not run"
            );
            return None;
        }
    }
    Some(python)
}

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

/// TCP needs the bearer token (401 without or with a wrong one); starting TCP without a token
/// needs --no-auth, which is refused on a non-loopback address.
#[test]
fn tcp_requires_a_bearer_token_and_no_auth_only_on_loopback() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-0123456789";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        dir.path().join("token").to_str().unwrap(),
    ]);
    let addr = d.tcp.expect("a tcp address in the log");
    let tcp = |extra: &str| {
        http(
            std::net::TcpStream::connect(addr).unwrap(),
            "POST",
            "/v1/run",
            json!({"code": "print(5)"}).to_string().as_bytes(),
            extra,
        )
    };
    let a = tcp("");
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        tcp("Authorization: Bearer wrong-token-0123456789\r\n").status,
        401
    );
    let a = tcp(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(
        (a.status, a.json()["stdout"].as_str()),
        (200, Some("5\n")),
        "{}",
        a.body
    );
    // The Unix socket needs no token.
    assert_eq!(d.post("/v1/run", &json!({"code": "print(1)"})).status, 200);

    for (args, word) in [
        (vec!["--listen", "127.0.0.1:0"], "--token-file"),
        (
            vec!["--listen", "0.0.0.0:0", "--no-auth"],
            "refusing --no-auth",
        ),
    ] {
        let o = Command::new(util::bin())
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("x.sock"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(word), "{o:?}");
        assert!(!dir.path().join("x.sock").exists());
    }
}

/// Who may use the Unix socket: the socket is 0660 so others cannot even connect; if it is
/// opened up anyway, SO_PEERCRED refuses them (403); `--group` lets a group in.
#[test]
fn peer_credentials_decide_who_may_use_the_socket() {
    let _g = util::shared();
    if !util::require("root") || !util::require("userns") {
        return;
    }
    let user = std::env::var("RSANDBOX_TEST_USER").unwrap_or_else(|_| "rstest".into());
    let Some(gid) = user_gid(&user) else {
        eprintln!("SKIP: no user {user} to connect as; test not run");
        return;
    };
    let client = |socket: &Path| {
        let code = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES'); sys.exit()\ns.sendall(b'GET /v1/ping HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\nprint(s.makefile('rb').readline().decode().split()[1])\n";
        let o = Command::new("runuser")
            .args(["-u", &user, "--", "/usr/bin/python3", "-c", code])
            .arg(socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(client(&d.socket), "EACCES");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(client(&d.socket), "403");
    assert!(d.log().contains("refused uid"), "{}", d.log());
    assert_eq!(d.get("/v1/ping").status, 200);
    drop(d);
    let d = Daemon::start(&["--group", &gid.to_string()]);
    assert_eq!(client(&d.socket), "200");
}

fn user_gid(user: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .and_then(|l| l.split(':').nth(3)?.parse().ok())
}

/// Socket activation: a listening socket passed as fd 3 with LISTEN_FDS/LISTEN_PID, as systemd
/// does, is served; the daemon binds nothing else and leaves the socket file to its owner.
#[test]
fn socket_activation_serves_the_passed_socket() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the daemon's pid: the shell's $$, kept by exec.
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=rsandbox.socket exec \"$0\" serve",
    ])
    .arg(util::bin())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe and touches no memory; it runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it explicitly.
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon::spawn(cmd, path.clone(), tempfile::tempdir().unwrap());
    drop(listener);
    assert!(
        d.log()
            .contains(&format!("listening on unix:{}", path.display())),
        "{}",
        d.log()
    );
    assert_eq!(d.log().matches("listening on").count(), 1, "{}", d.log());
    let a = d.post("/v1/run", &json!({"code": "print('activated')"}));
    assert_eq!(a.json()["stdout"], "activated\n", "{}", a.body);
    assert!(d.stop(20).success());
    assert!(
        path.exists(),
        "the activated socket belongs to systemd, not the daemon"
    );
}

/// SIGTERM lets a run in flight finish and answers it, then removes the socket and exits 0;
/// a run longer than the grace period is cancelled (503) and nothing of it remains.
#[test]
fn sigterm_drains_runs_in_flight_then_removes_everything() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let before = host_before();
    let mut d = Daemon::start(&["--grace", "10"]);
    let socket = d.socket.clone();
    let s = socket.clone();
    let inflight = std::thread::spawn(move || {
        http(
            UnixStream::connect(&s).unwrap(),
            "POST",
            "/v1/run",
            json!({"argv": ["/bin/sh", "-c", "sleep 1; echo finished"]})
                .to_string()
                .as_bytes(),
            "",
        )
    });
    d.wait_for(10, "a running run", |d| {
        d.metric("rsandbox_running ") == 1.0
    });
    assert!(d.stop(30).success(), "{}", d.log());
    let a = inflight.join().unwrap();
    assert_eq!(
        (a.status, a.json()["stdout"].as_str()),
        (200, Some("finished\n")),
        "{}",
        a.body
    );
    assert!(!socket.exists(), "the socket file must be removed");

    let mut d = Daemon::start(&["--grace", "0.5"]);
    let s = d.socket.clone();
    let long = std::thread::spawn(move || {
        http(
            UnixStream::connect(&s).unwrap(),
            "POST",
            "/v1/run",
            json!({"argv": ["/bin/sleep", "60"]}).to_string().as_bytes(),
            "",
        )
    });
    d.wait_for(10, "a running run", |d| {
        d.metric("rsandbox_running ") == 1.0
    });
    let t = Instant::now();
    assert!(d.stop(30).success(), "{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let a = long.join().unwrap();
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(d.log().contains("cancelling"), "{}", d.log());
    drop(d);
    before.assert_same(&util::sandbox());
}

/// After a SIGKILL the instance's record stays in the state directory (its lock freed); the
/// next start's janitor removes it and its cgroups, and nothing of the run remains.
#[test]
fn a_restart_after_sigkill_cleans_up_through_the_state_directory() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let before = util::Fingerprint::take(&sb);
    let records = || -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(sb.state_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let d = Daemon::start(&[]);
    let s = d.socket.clone();
    let run = std::thread::spawn(move || {
        let mut c = UnixStream::connect(&s).unwrap();
        let b = json!({"argv": ["/bin/sleep", "60"]}).to_string();
        let _ = write!(
            c,
            "POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        );
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
    });
    d.wait_for(10, "a running run", |d| {
        d.metric("rsandbox_running ") == 1.0
    });
    // The record whose supervisor is the daemon (written once the run's instance exists).
    let pid = d.pid() as i64;
    let mine = || -> Vec<PathBuf> {
        records()
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v["supervisor_pid"] == pid && v["reaper_pid"] != 0)
            })
            .collect()
    };
    d.wait_for(10, "the instance's state record", |_| !mine().is_empty());
    let ours = mine();
    // The run's instance and the ready ones.
    let cgroups: Vec<PathBuf> = ours
        .iter()
        .flat_map(|r| {
            let info: Value = serde_json::from_str(&std::fs::read_to_string(r).unwrap()).unwrap();
            info["cgroups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| PathBuf::from(c.as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    d.signal(libc::SIGKILL);
    let dir = d.dir.path().to_path_buf();
    drop(d);
    run.join().unwrap();
    for r in &ours {
        assert!(r.exists(), "the records must outlive a SIGKILLed daemon");
    }
    // The restart's janitor (in another process: this one already swept once).
    let mut cmd = Command::new(util::bin());
    cmd.args(["serve", "--socket"])
        .arg(dir.join("again.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut d = Daemon::spawn(cmd, dir.join("again.sock"), tempfile::tempdir().unwrap());
    for r in &ours {
        assert!(!r.exists(), "the janitor must remove {}", r.display());
    }
    for c in &cgroups {
        assert!(!c.exists(), "cgroup {} must be removed", c.display());
    }
    assert!(d.stop(20).success());
    drop(d);
    before.assert_same(&sb);
}

/// `rsandbox run --daemon SOCKET` runs there: output and exit status as a local run's, the
/// report with --json, 125 when no daemon listens.
#[test]
fn run_with_daemon_sends_the_run_to_the_daemon() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let rsb = |args: &[&str]| {
        Command::new(util::bin())
            .arg("run")
            .arg(format!("--daemon={}", d.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = rsb(&["-c", "print(6 * 7)"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(0), "42\n"),
        "{o:?}"
    );
    let o = rsb(&["--", "/bin/sh", "-c", "echo err >&2; exit 3"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stderr).as_ref()),
        (Some(3), "err\n"),
        "{o:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.py"), "import sys; print(sys.argv[1:])").unwrap();
    let o = rsb(&[dir.path().join("job.py").to_str().unwrap(), "a"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "['a']\n", "{o:?}");
    let o = rsb(&["--json", "--timeout", "0.5", "--", "/bin/sleep", "5"]);
    assert_eq!(o.status.code(), Some(124));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["status"], "timeout");
    assert!(r["queued_ms"].is_number(), "{r}");
    let o = rsb(&["--ro", "/etc", "-c", "1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not supported with --daemon"));
    let o = Command::new(util::bin())
        .args([
            "run",
            "--daemon",
            dir.path().join("none.sock").to_str().unwrap(),
            "-c",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{o:?}");
}

/// The systemd units in the repo pass `systemd-analyze verify` (with ExecStart pointed at the
/// binary under test), with no complaint at all.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // Shared, like every test that starts processes: an exclusive test's fingerprint counts
    // this process's children, and saw a `systemd-analyze` of this test in one CI run.
    let _g = util::shared();
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
        assert!(
            !expected.contains("systemd-analyze"),
            "systemd-analyze is expected"
        );
        eprintln!("SKIP: systemd-analyze is not installed (apt-get install systemd); test not run");
        return;
    };
    assert!(v.status.success());
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for unit in ["rsandbox.socket", "rsandbox.service"] {
        let text = std::fs::read_to_string(repo.join(unit)).unwrap();
        if unit.ends_with(".service") {
            assert!(
                text.contains("Delegate=yes")
                    && text.contains("ExecStart=/usr/local/bin/rsandbox serve")
            );
        }
        let text = text.replace("/usr/local/bin/rsandbox", util::bin().to_str().unwrap());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("rsandbox.socket"))
        .arg(dir.path().join("rsandbox.service"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
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

/// GPUs through `/v1/run` (`limits.gpus`, `limits.gpu_devices`), on 4 fake GPUs: concurrent
/// runs get disjoint GPUs, a run asking for more than are free waits in the queue until a GPU
/// is released, one that waits longer than `--gpu-wait` gets 503, and requests that can never
/// be met (more GPUs than exist, an unknown index, both fields) get 422 saying why.
#[test]
fn the_daemon_allocates_gpus_across_concurrent_runs() {
    let _g = util::exclusive();
    let Some(fake) = crate::gpu::fake_gpus() else {
        return;
    };
    let before = host_before();
    let dev = fake.dev.as_os_str();
    let gpu_wait = util::allow(2.0);
    let d = Arc::new(Daemon::start_env(
        &[
            "--slots",
            "6",
            "--gpu-wait",
            &gpu_wait.as_secs_f64().to_string(),
        ],
        &[("RSANDBOX_GPU_DEV_DIR", dev)],
    ));
    let hold = util::allow(1.0).as_secs_f64();
    let run = |limits: Value, secs: f64| {
        let d = d.clone();
        std::thread::spawn(move || {
            let script =
                format!("ls /dev | grep '^nvidia[0-9]'; echo $CUDA_VISIBLE_DEVICES; sleep {secs}");
            let mut limits = limits;
            limits["timeout"] = json!(30.0 * util::time_scale());
            d.post(
                "/v1/run",
                &json!({"argv": ["/bin/sh", "-c", script], "limits": limits}),
            )
        })
    };
    // Five runs of one GPU each on four GPUs: one of them waits for a GPU to be released.
    let runs: Vec<_> = (0..5).map(|_| run(json!({"gpus": 1}), hold)).collect();
    let mut seen = std::collections::BTreeMap::new();
    let mut waited = 0.0f64;
    for t in runs {
        let a = t.join().unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let r = a.json();
        assert_eq!(r["status"], "ok", "{r}");
        let out = r["stdout"].as_str().unwrap().to_string();
        let mut lines = out.lines();
        let gpu = lines.next().unwrap_or_default().to_string();
        assert_eq!(lines.next(), Some("0"), "CUDA_VISIBLE_DEVICES: {out}");
        assert_eq!(lines.next(), None, "one GPU node only: {out}");
        *seen.entry(gpu).or_insert(0) += 1;
        waited = waited.max(r["queued_ms"].as_f64().unwrap());
    }
    let names: Vec<&String> = seen.keys().collect();
    assert_eq!(
        names,
        ["nvidia0", "nvidia1", "nvidia2", "nvidia3"],
        "{seen:?}"
    );
    assert!(
        waited >= 0.5 * hold * 1000.0,
        "no run waited for a GPU (longest queue wait {waited} ms, runs hold theirs {hold} s)"
    );

    // All four held for longer than the daemon waits: the fifth gets 503, not a shared GPU.
    let all = run(json!({"gpus": 4}), util::allow(4.0).as_secs_f64());
    std::thread::sleep(util::allow(1.0));
    let t = Instant::now();
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 1}}));
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("not enough free GPUs"), "{}", a.body);
    assert!(t.elapsed() >= gpu_wait.mul_f64(0.75), "{:?}", t.elapsed());
    assert_eq!(all.join().unwrap().status, 200);

    for (limits, why) in [
        (json!({"gpus": 5}), "only 4"),
        (json!({"gpu_devices": [7]}), "no GPU 7"),
        (json!({"gpus": 1, "gpu_devices": [0]}), "not both"),
    ] {
        let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": limits}));
        assert_eq!(a.status, 422, "{limits}: {}", a.body);
        assert!(a.body.contains(why), "{limits}: {}", a.body);
    }
    // Exact indices, and every GPU free again.
    let a = d.post(
        "/v1/run",
        &json!({"argv": ["/bin/sh", "-c", "ls /dev | grep '^nvidia[0-9]' | tr '\\n' ' '"], "limits": {"gpu_devices": [3, 1]}}),
    );
    assert_eq!(a.json()["stdout"], "nvidia1 nvidia3 ", "{}", a.body);
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 4}}));
    assert_eq!(a.json()["status"], "ok", "{}", a.body);
    drop(d);
    before.assert_same(&util::sandbox());
}

/// The pids of `ppid`'s children named `name`.
fn children_named(ppid: i32, name: &str) -> Vec<i32> {
    util::children_of(ppid)
        .into_iter()
        .filter(|(_, c)| c == name)
        .map(|(p, _)| p)
        .collect()
}

/// Whether `needle` occurs in any readable mapping of process `pid` (needs root: reapers are
/// not dumpable); `None` when the process is gone.
fn memory_contains(pid: i32, needle: &[u8]) -> Option<bool> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact_at(&mut buf, a).is_ok() && buf.windows(needle.len()).any(|w| w == needle)
        {
            return Some(true);
        }
    }
    Some(false)
}

/// The daemon clones instances from its fork server, a process forked before the daemon read
/// its token or any request: no reaper is the daemon's child, and (as root, who can read a
/// reaper's memory) the token is in the daemon's memory but in no reaper's.
#[test]
fn instances_come_from_the_fork_server_and_hold_none_of_the_daemons_memory() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("tok-{:x}-{nanos:x}", std::process::id());
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let mut d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        dir.path().join("token").to_str().unwrap(),
    ]);
    let a = d.post("/v1/sessions", &json!({}));
    assert_eq!(a.status, 201, "{}", a.body);
    let a = d.post("/v1/run", &json!({"code": "print(7)"}));
    assert_eq!(
        (a.status, a.json()["stdout"].as_str()),
        (200, Some("7\n")),
        "{}",
        a.body
    );

    let daemon = d.child.id() as i32;
    let kids = util::children_of(daemon);
    let servers = children_named(daemon, "rsandbox-fork");
    assert_eq!(servers.len(), 1, "the daemon's children: {kids:?}");
    assert!(
        kids.iter().all(|(_, c)| c != "rsandbox-init"),
        "a reaper is the daemon's own child: {kids:?}"
    );
    let reapers = children_named(servers[0], "rsandbox-init");
    assert!(
        !reapers.is_empty(),
        "the session's reaper is no child of the fork server"
    );

    if util::is_root() {
        // The control: the scan finds the token where it is.
        assert_eq!(
            memory_contains(daemon, token.as_bytes()),
            Some(true),
            "the scan did not find the token in the daemon's own memory"
        );
        // The one-shot run's reaper may be going away (teardown follows the answer); the
        // session's stays.
        let mut scanned = 0;
        for r in &reapers {
            match memory_contains(*r, token.as_bytes()) {
                Some(found) => {
                    assert!(!found, "reaper {r} holds the daemon's token");
                    scanned += 1;
                }
                None => eprintln!("reaper {r} exited before its scan"),
            }
        }
        assert!(scanned >= 1, "no reaper was left to scan");
    } else {
        eprintln!("NOTE: not root: reapers' memory not scanned for the daemon's token");
    }
    assert!(d.stop(20).success());
    // A graceful stop waits for the fork server.
    for p in servers.iter().chain(&reapers) {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} outlived the daemon"
        );
    }
}

/// A fork server that dies (here: SIGKILL) costs no request: the daemon says so once and clones
/// instances itself from then on, and stops cleanly.
#[test]
fn a_dead_fork_server_falls_back_to_direct_clones() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let mut d = Daemon::start(&[]);
    let servers = children_named(d.child.id() as i32, "rsandbox-fork");
    assert_eq!(servers.len(), 1);
    // SAFETY: kill(2) on the daemon's own child, which this test started.
    assert_eq!(unsafe { libc::kill(servers[0], libc::SIGKILL) }, 0);
    for i in 0..4 {
        let a = d.post("/v1/run", &json!({"code": format!("print({i})")}));
        assert_eq!(
            (a.status, a.json()["stdout"].as_str()),
            (200, Some(format!("{i}\n").as_str())),
            "{}",
            a.body
        );
    }
    let kids = util::children_of(d.child.id() as i32);
    assert!(
        kids.iter().all(|(p, _)| *p != servers[0]),
        "the dead fork server was not reaped: {kids:?}"
    );
    assert!(d.stop(20).success());
    let log = d.log.lock().unwrap().join("\n");
    assert_eq!(
        log.matches("fork server stopped answering").count(),
        1,
        "{log}"
    );
}
