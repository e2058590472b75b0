//! Running: scripts by kind, output and exit codes passed through, --json, programs after --.

use super::{code, json, rsb, stderr, stdout, write};
use crate::util;

/// `rsandbox run script.py` passes the script's output through and mirrors its exit status;
/// arguments after the script reach it.
#[test]
fn run_python_script_passes_output_and_exit_code() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "script.py",
        "import sys\nprint('hello from py', sys.argv[1:])\nprint('to stderr', file=sys.stderr)\nsys.exit(7)\n",
        0o644,
    );
    let o = rsb(["run", script.to_str().unwrap(), "a", "--b"]);
    assert_eq!(code(&o), 7, "{o:?}");
    assert_eq!(stdout(&o), "hello from py ['a', '--b']\n");
    assert_eq!(stderr(&o), "to stderr\n");
}

/// `.sh` scripts run with /bin/sh (no #! line or exec bit needed); an extensionless file
/// runs by its #! line; a file with neither is refused with exit 125 and a message.
#[test]
fn run_shell_shebang_and_unknown_scripts() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sh = write(dir.path(), "job.sh", "echo sh ran $1; exit 3\n", 0o644);
    let o = rsb(["run", sh.to_str().unwrap(), "arg1"]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (3, "sh ran arg1\n"),
        "{o:?}"
    );

    let bang = write(
        dir.path(),
        "tool",
        "#!/bin/sh\necho shebang ran as $(id -u) in $(pwd)\n",
        0o644,
    );
    let o = rsb(["run", bang.to_str().unwrap()]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "shebang ran as 1000 in /home/sandbox\n"),
        "{o:?}"
    );

    let plain = write(dir.path(), "notes", "echo hi\n", 0o755);
    let o = rsb(["run", plain.to_str().unwrap()]);
    assert_eq!(code(&o), 125, "{o:?}");
    assert!(
        stderr(&o).contains("cannot tell how to run notes"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
}

/// `run --timeout 5 --json -c 'print(1+1)'` prints one JSON report with stdout "2\n" and
/// status ok; exit 0.
#[test]
fn json_report_for_python_code() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let timeout = (5.0 * util::time_scale()).to_string();
    let o = rsb(["run", "--timeout", &timeout, "--json", "-c", "print(1+1)"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let v = json(&o);
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["stdout"], "2\n");
    assert_eq!(v["stderr"], "");
    assert_eq!(v["exit_code"], 0);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// A timeout exits 124 (status timeout in --json, a note on stderr otherwise); death by
/// SIGKILL exits 137 (status signal); a plain non-zero exit is mirrored under --json too.
#[test]
fn exit_codes_for_timeout_signal_and_exit() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let o = rsb([
        "run",
        "--timeout",
        "0.5",
        "--json",
        "--",
        "/bin/sh",
        "-c",
        "echo started; sleep 30",
    ]);
    assert_eq!(code(&o), 124, "{o:?}");
    let v = json(&o);
    assert_eq!(v["status"], "timeout");
    assert_eq!(v["limits_hit"], serde_json::json!(["wall"]));
    assert_eq!(v["stdout"], "started\n");

    let o = rsb(["run", "--timeout", "0.5", "--", "/bin/sh", "-c", "sleep 30"]);
    assert_eq!(code(&o), 124, "{o:?}");
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));

    let o = rsb(["run", "--", "/bin/sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&o), 137, "{o:?}");
    let o = rsb(["run", "--json", "--", "/bin/sh", "-c", "kill -9 $$"]);
    assert_eq!(code(&o), 137, "{o:?}");
    let v = json(&o);
    assert_eq!(
        (
            v["status"].as_str(),
            v["signal"].as_i64(),
            v["signal_name"].as_str()
        ),
        (Some("signal"), Some(9), Some("SIGKILL"))
    );

    let o = rsb(["run", "--json", "-c", "import sys; sys.exit(42)"]);
    assert_eq!(code(&o), 42, "{o:?}");
    assert_eq!(json(&o)["status"], "exit");
}

/// `run -- PROGRAM` runs any program: `ls /` lists the instance's root (not the host's);
/// a missing program exits 127 and a non-executable one 126, with messages.
#[test]
fn program_after_double_dash_and_exec_errors() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let o = rsb(["run", "--", "/bin/sh", "-c", "ls /"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let entries: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    for want in ["bin", "dev", "etc", "home", "proc", "tmp", "usr"] {
        assert!(
            entries.iter().any(|e| e == want),
            "/{want} missing from {entries:?}"
        );
    }
    // Host-only top-level directories are not there.
    for host_only in ["boot", "lost+found", "srv", "sys"] {
        assert!(
            !entries.iter().any(|e| e == host_only),
            "/{host_only} is visible inside: {entries:?}"
        );
    }

    let o = rsb(["run", "--", "nosuchprog", "arg"]);
    assert_eq!(code(&o), 127, "{o:?}");
    assert!(stderr(&o).contains("nosuchprog"), "{}", stderr(&o));
    let o = rsb(["run", "--json", "--", "/no/such/path"]);
    assert_eq!(code(&o), 127, "{o:?}");
    assert_eq!(json(&o)["error"]["stage"], "exec");

    let o = rsb(["run", "--", "/etc/passwd"]);
    assert_eq!(code(&o), 126, "{o:?}");
    assert!(stderr(&o).contains("/etc/passwd"), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "prog",
        "#!/bin/sh\necho should not run\n",
        0o644,
    );
    let o = rsb([
        "run",
        "--file",
        &format!("{}:prog", data.display()),
        "--",
        "./prog",
    ]);
    assert_eq!(code(&o), 126, "{o:?}");
    assert!(stdout(&o).is_empty());
}
