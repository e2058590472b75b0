//! SandboxFusion's `/run_jupyter`: its own request and response shapes, its timeouts, files,
//! malformed requests, and its PyPI client.

use std::process::Command;

use serde_json::json;

use crate::daemon::sandbox_fusion::sandbox_fusion_python;
use crate::server::{b64, Daemon};
use crate::util;

#[test]
fn run_jupyter_answers_in_sandbox_fusions_shapes() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    // SandboxFusion's own example request.
    let a = d.post(
        "/run_jupyter",
        &json!({"cells": ["a = 123", "a", "print(a)", "import sys; sys.stderr.write(\"stderr message\")",
                          "raise RuntimeError(\"error message\")", "a + 1"],
                "files": {"data.txt": b64(b"hello")}, "fetch_files": ["out.txt"]}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "Success", "{v}");
    assert_eq!(v["driver"]["status"], "Finished");
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6, "{v}");
    assert_eq!(cells[0]["display"], json!([]));
    assert_eq!(cells[1]["display"][0]["text/plain"], "123");
    assert_eq!(cells[2]["stdout"], "123\n");
    assert_eq!(cells[3]["stderr"], "stderr message");
    let err = &cells[4]["error"][0];
    assert_eq!(
        (err["ename"].as_str(), err["evalue"].as_str()),
        (Some("RuntimeError"), Some("error message"))
    );
    assert!(err["traceback"].as_array().unwrap().len() > 1, "{err}");
    // A cell's exception does not stop the later ones.
    assert_eq!(cells[5]["display"][0]["text/plain"], "124");
    for k in ["message", "executor_pod_name", "files"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }

    let a = d.post(
        "/run_jupyter",
        &json!({"cells": ["open('out.txt', 'w').write(open('data.txt').read() * 2)"],
                "files": {"data.txt": b64(b"hi")}, "fetch_files": ["out.txt"]}),
    );
    assert_eq!(a.json()["files"]["out.txt"], b64(b"hihi"), "{}", a.body);
}

#[test]
fn run_jupyter_timeouts_and_bad_requests() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let a = d.post(
        "/run_jupyter",
        &json!({"cells": ["x = 1", "import time; time.sleep(100)"], "total_timeout": 1}),
    );
    let v = a.json();
    assert_eq!(
        (v["status"].as_str(), v["cells"].clone()),
        (Some("Failed"), json!([])),
        "{v}"
    );
    assert_eq!(v["driver"]["status"], "TimeLimitExceeded");
    // A cell's own timeout is a KeyboardInterrupt in that cell; the next cells run.
    let a = d.post(
        "/run_jupyter",
        &json!({"cells": ["import time\nwhile True: time.sleep(0.05)", "'after'"], "cell_timeout": 0.5}),
    );
    let v = a.json();
    assert_eq!(v["status"], "Success", "{v}");
    assert_eq!(v["cells"][0]["error"][0]["ename"], "KeyboardInterrupt");
    assert_eq!(v["cells"][1]["display"][0]["text/plain"], "'after'");
    for body in [
        json!({}),
        json!({"cells": "x"}),
        json!({"cells": ["1"], "kernel": "ir"}),
    ] {
        let a = d.post("/run_jupyter", &body);
        assert_eq!(a.status, 422, "{body}: {}", a.body);
        assert!(a.json()["detail"].is_array(), "{}", a.body);
    }
}

/// The `sandbox-fusion` client's own `run_jupyter`.
#[test]
fn the_sandbox_fusion_client_runs_notebooks() {
    let _g = util::shared();
    let Some(python) = sandbox_fusion_python() else {
        return;
    };
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    let script = r#"
import sys
from sandbox_fusion import run_jupyter, RunJupyterRequest, set_endpoint
set_endpoint(sys.argv[1])
r = run_jupyter(RunJupyterRequest(cells=["x = 6", "x * 7", "print('out')", "1/0"]))
assert r.status == "Success", r
assert r.cells[1].display[0]["text/plain"] == "42", r
assert r.cells[2].stdout == "out\n", r
assert r.cells[3].error[0]["ename"] == "ZeroDivisionError", r
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
