//! SandboxFusion's `/run_code`: verl's and tinker-cookbook's payloads, the PyPI client.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::server::{b64, unb64, Daemon};
use crate::util;

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
    let out = crate::util::output_within(
        Command::new(&python).args(["-c", script, &format!("http://{}", d.tcp.unwrap())]),
        crate::util::allow(180.0),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("client ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python with the `sandbox-fusion` client: `RSANDBOX_SF_PYTHON`, or a venv made here with
/// pip from PyPI (see `util::client_python`).
pub(crate) fn sandbox_fusion_python() -> Option<PathBuf> {
    crate::util::client_python(
        "RSANDBOX_SF_PYTHON",
        "sandbox-fusion",
        "sf",
        "sandbox_fusion",
        &["sandbox-fusion"],
    )
}
