//! The command line's contexts: `rsandbox repl` in a fresh local sandbox, and
//! `rsandbox session execute` against a daemon.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::server::Daemon;
use crate::util;

#[test]
fn repl_keeps_state_and_shows_values_and_tracebacks() {
    let _g = util::shared();
    let mut child = Command::new(util::bin())
        .args(["repl", "--no-ipython", "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"x = 2\nx * 21\nprint('hi')\ndef f():\n    return 5\n\nf()\n1/0\n'still', x\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "42\nhi\n5\n('still', 2)\n", "{stderr}");
    assert!(
        stderr.contains("ZeroDivisionError: division by zero"),
        "{stderr}"
    );
    assert!(stderr.contains("1/0"), "the cell's source line: {stderr}");
}

#[test]
fn session_execute_streams_a_cell_and_mirrors_its_status() {
    let _g = util::shared();
    let d = Daemon::start(&[]);
    let a = d.post("/v1/sessions", &json!({}));
    let sid = a.json()["id"].as_str().unwrap().to_string();
    let exec = |code: &str| {
        Command::new(util::bin())
            .args(["session", "--daemon"])
            .arg(&d.socket)
            .args(["execute", &sid, "-c", code])
            .output()
            .unwrap()
    };
    let o = exec("y = 20");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = exec("print('out')\ny * 2 + 2");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n42\n");
    assert_eq!(o.status.code(), Some(0));
    let o = exec("raise KeyError('k')");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("KeyError: 'k'"));
    let o = Command::new(util::bin())
        .args(["session", "--daemon"])
        .arg(&d.socket)
        .args(["execute", "nosuchsession", "-c", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"), "{o:?}");
}
