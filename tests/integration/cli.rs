//! Integration tests: the `rsandbox` command line (run and check): scripts, pass-through and
//! exit codes, --json, files, env and stdin, options and their defaults, errors, network, binds.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util;

/// `rsandbox ARGS...` with a clean environment apart from what the CLI needs.
fn rsb<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> Output {
    Command::new(util::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running rsandbox")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("rsandbox died of a signal: {o:?}"))
}

/// Parses the single JSON document `--json` prints on stdout.
fn json(o: &Output) -> serde_json::Value {
    let s = stdout(o);
    assert_eq!(
        s.trim_end().lines().count(),
        1,
        "--json printed more than one line: {s}"
    );
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn write(dir: &Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

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

/// `--file data.csv:data.csv job.py` copies the file into the work dir beside the script;
/// --file can also create subdirectories.
#[test]
fn file_option_copies_into_the_work_dir() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "data.csv", "a,b\n1,2\n3,4\n", 0o644);
    let job = write(
        dir.path(),
        "job.py",
        "import csv\nrows = list(csv.DictReader(open('data.csv')))\nprint(sum(int(r['a']) + int(r['b']) for r in rows))\n\
         print(open('in/copy.csv').read() == open('data.csv').read())\n",
        0o644,
    );
    let o = rsb([
        "run",
        "--file",
        &format!("{}:data.csv", csv.display()),
        "--file",
        &format!("{}:in/copy.csv", csv.display()),
        job.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(stdout(&o), "10\nTrue\n");

    // A missing --file source is a clear error naming it.
    let o = rsb([
        "run",
        "--file",
        "/nonexistent/data.csv:data.csv",
        "-c",
        "pass",
    ]);
    assert_eq!(code(&o), 125, "{o:?}");
    assert!(
        stderr(&o).contains("/nonexistent/data.csv"),
        "{}",
        stderr(&o)
    );
}

/// `--env K=V` is visible (and may override a default); the caller's own environment is not
/// passed in.
#[test]
fn env_option_and_clean_environment() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let o = Command::new(util::bin())
        .args([
            "run",
            "--env",
            "K=V with spaces",
            "--env",
            "LANG=C",
            "--env",
            "EMPTY=",
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg("echo \"$K|$LANG|${EMPTY-unset}|${HOST_SECRET-absent}|$HOME|$PATH\"")
        .env("HOST_SECRET", "leaked")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(
        stdout(&o),
        "V with spaces|C||absent|/home/sandbox|/usr/local/bin:/usr/bin:/bin\n"
    );
}

/// `--stdin FILE` feeds a host file; `--stdin -` feeds what is piped into the CLI; without
/// --stdin the program reads end of file at once.
#[test]
fn stdin_option_from_file_and_pipe() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "input.txt", "three\nlines\nhere\n", 0o644);
    let o = rsb(["run", "--stdin", input.to_str().unwrap(), "--", "wc", "-l"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "3\n"), "{o:?}");

    let mut child = Command::new(util::bin())
        .args([
            "run",
            "--stdin",
            "-",
            "-c",
            "import sys; print(sys.stdin.read().upper(), end='')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped into the cli\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "PIPED INTO THE CLI\n"),
        "{o:?}"
    );

    let timeout = (5.0 * util::time_scale()).to_string();
    let o = rsb(["run", "--timeout", &timeout, "--", "cat"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""), "{o:?}");
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

/// `run --help` shows every option, and each option with a default shows it.
#[test]
fn run_help_shows_every_option_with_its_default() {
    let _g = util::shared();
    let o = rsb(["run", "--help"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let help = stdout(&o);
    // The help text of one option: from its flag to the next option's line.
    let option_text = |flag: &str| -> String {
        let lines: Vec<&str> = help.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                l.trim_start().starts_with(flag)
                    || l.trim_start().starts_with(&format!("-c, {flag}"))
            })
            .unwrap_or_else(|| panic!("{flag} is not in run --help:\n{help}"));
        let mut text = lines[start].to_string();
        for l in &lines[start + 1..] {
            if l.trim_start().starts_with('-') || l.trim().is_empty() {
                break;
            }
            text.push_str(l);
        }
        text
    };
    for (flag, default) in [
        ("--timeout", "[default: 30]"),
        ("--tmp-size", "[default: 256M]"),
        ("--work-size", "[default: 256M]"),
        ("--output-limit", "[default: 1M]"),
        ("--net", "[default: none]"),
        ("--seccomp", "[default: default]"),
    ] {
        let text = option_text(flag);
        assert!(
            text.contains(default),
            "{flag} does not show {default}: {text}"
        );
    }
    for flag in [
        "-c <CODE>",
        "--ro",
        "--rw",
        "--file",
        "--env",
        "--stdin",
        "--python",
        "--rootfs",
        "--strict",
        "--json",
    ] {
        option_text(flag);
    }
    // The exit statuses are documented.
    assert!(
        help.contains("124")
            && help.contains("125")
            && help.contains("126")
            && help.contains("127")
    );
}

/// Bad input is a clear error: option syntax errors are clap usage errors (exit 2) naming the
/// value; invalid settings are one line on stderr and exit 125; with --json, one
/// {"error":{"stage","message"}} object on stdout.
#[test]
fn bad_input_gives_clear_errors() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    for (args, needles) in [
        (vec!["--tmp-size", "12Q"], vec!["12Q", "--tmp-size"]),
        (vec!["--work-size", "lots"], vec!["lots", "--work-size"]),
        (vec!["--env", "NOEQUALS"], vec!["NOEQUALS", "KEY=VALUE"]),
        (vec!["--net", "wifi"], vec!["wifi", "--net"]),
        (vec!["--timeout", "0"], vec!["--timeout", "positive"]),
        (vec!["--timeout", "soon"], vec!["soon", "--timeout"]),
        (vec!["--ro", ""], vec!["--ro"]),
    ] {
        let o = rsb(["run"].iter().chain(&args).chain(&["-c", "pass"]));
        assert_eq!(code(&o), 2, "{args:?}: {o:?}");
        let err = stderr(&o);
        for n in needles {
            assert!(
                err.contains(n),
                "{args:?}: the error does not mention {n:?}: {err}"
            );
        }
    }
    for (args, needle) in [
        (vec!["--ro", "/nonexistent"], "/nonexistent"),
        (vec!["--rw", "/nonexistent/dir:/data"], "/nonexistent/dir"),
        (vec!["--ro", "/etc:/proc"], "/proc"),
        (vec!["--ro", "/etc:relative"], "relative"),
        (vec!["--ro", "/etc:/home/sandbox/etc"], "/home/sandbox"),
        (vec!["--work-size", "1K"], "work size"),
        (
            vec!["--python", "/nonexistent/python3"],
            "/nonexistent/python3",
        ),
        (
            vec!["--rootfs", "/nonexistent-rootfs"],
            "/nonexistent-rootfs",
        ),
    ] {
        let o = rsb(["run"].iter().chain(&args).chain(&["-c", "pass"]));
        assert_eq!(code(&o), 125, "{args:?}: {o:?}");
        let err = stderr(&o);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(
            err.starts_with("rsandbox: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(stdout(&o).is_empty());

        let mut json_args = vec!["run", "--json"];
        json_args.extend(&args);
        json_args.extend(["-c", "pass"]);
        let o = rsb(&json_args);
        assert_eq!(code(&o), 125, "{json_args:?}: {o:?}");
        let v = json(&o);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error"], "{v}");
        assert!(
            v["error"]["stage"].as_str().is_some_and(|s| !s.is_empty()),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Nothing to run, or two things to run.
    let o = rsb(["run"]);
    assert_eq!(code(&o), 125, "{o:?}");
    assert!(stderr(&o).contains("nothing to run"), "{}", stderr(&o));
    let o = rsb(["run", "-c", "pass", "--", "/bin/true"]);
    assert_ne!(code(&o), 0, "{o:?}");
}

/// The limit options are accepted and run the program, `run --help` shows them with their
/// defaults, and bad values are one line on stderr naming the option, with exit 125.
#[test]
fn limit_options_are_accepted_shown_and_checked() {
    let _g = util::shared();
    let help = stdout(&rsb(["run", "--help"]));
    for (flag, default) in [
        ("--cpus <CPUS>", Some("[default: 1]")),
        ("--mem <MB>", Some("[default: 512]")),
        ("--pids <N>", Some("[default: 256]")),
        ("--cpu-time <SECS>", None),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} is not in run --help:\n{help}"));
        if let Some(d) = default {
            assert!(line.contains(d), "{flag} does not show {d}: {line}");
        }
    }
    if !util::require("userns") {
        return;
    }
    // (Python's start costs seconds of CPU under emulation: the allowances scale.)
    let (cpu_time, timeout) = (
        (5.0 * util::time_scale()).to_string(),
        (20.0 * util::time_scale()).to_string(),
    );
    let o = rsb([
        "run",
        "--cpus",
        "1",
        "--mem",
        "100",
        "--pids",
        "10",
        "--cpu-time",
        &cpu_time,
        "--timeout",
        &timeout,
        "-c",
        "print('ran')",
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "ran\n"), "{o:?}");
    for (flag, value) in [
        ("--cpus", "0"),
        ("--cpus", "1000"),
        ("--mem", "1"),
        ("--pids", "0"),
    ] {
        let o = rsb(["run", flag, value, "-c", "print('ran')"]);
        assert_eq!(code(&o), 125, "{flag} {value}: {o:?}");
        let err = stderr(&o);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{flag} {value}: not one line: {err}"
        );
        assert!(
            err.starts_with("rsandbox: ") && err.contains(flag.trim_start_matches('-')),
            "{flag} {value}: the error does not name the option: {err}"
        );
        assert!(stdout(&o).is_empty(), "{flag} {value}: the program ran");
        let o = rsb(["run", "--json", flag, value, "-c", "print('ran')"]);
        assert_eq!(code(&o), 125, "{flag} {value}: {o:?}");
        let v = json(&o);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(flag.trim_start_matches('-')),
            "{flag} {value}: {v}"
        );
    }
}

/// `rsandbox check` exits 0 and reports user namespaces and the cgroup layout; `--json`
/// parses with sandbox_works true and the defaults table.
#[test]
fn check_reports_the_host() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let o = rsb(["check"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let text = stdout(&o);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_string()
    };
    assert!(line("user namespaces").contains("yes"), "{text}");
    let cg = line("cgroups");
    let layout = format!("{:?}", rsandbox::probe::host().cgroup_layout);
    assert!(
        cg.contains(&layout),
        "{cg} does not name the layout {layout}"
    );
    assert!(line("sandbox").contains("works"), "{text}");

    let o = rsb(["check", "--json"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check --json is JSON");
    assert_eq!(v["sandbox_works"], true, "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["host"]["userns"], true);
    assert!(
        ["v1", "v2", "hybrid", "none"].contains(&v["host"]["cgroup_layout"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["host"]["cgroup_mounts"].is_array());
    assert_eq!(v["defaults"]["timeout_s"], 30);
    assert_eq!(v["defaults"]["output_limit"], 1 << 20);
    assert!(v["enforcement"]["wall"].is_string());
}

const ECHO_SERVER: &str = "import socket, threading\n\
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
port = s.getsockname()[1]\n\
def serve():\n\
\x20   c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()\n\
t = threading.Thread(target=serve, daemon=True); t.start()\n\
c = socket.create_connection(('127.0.0.1', port), timeout=5)\n\
c.sendall(b'ping'); print(c.recv(100).decode()); t.join()\n";

/// `--net loopback`: a server and client on 127.0.0.1 inside talk; `--net none` (the
/// default): nothing can be reached, not even 127.0.0.1: connecting fails with ENETUNREACH
/// (loopback is down) or EACCES (Landlock's TCP rules, where the kernel has them, deny it
/// first), and the only interface is `lo`.
#[test]
fn net_loopback_works_and_none_blocks() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    // Python with threads and sockets: seconds under emulation, hence the scaled allowance.
    let timeout = (10.0 * util::time_scale()).to_string();
    let o = rsb([
        "run",
        "--net",
        "loopback",
        "--timeout",
        &timeout,
        "-c",
        ECHO_SERVER,
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "PING\n"), "{o:?}");

    for net in [&["--net", "none"][..], &[][..]] {
        let mut args = vec!["run", "--timeout", &timeout];
        args.extend(net);
        args.extend(["-c", ECHO_SERVER]);
        let o = rsb(&args);
        assert_eq!(code(&o), 1, "{args:?}: {o:?}");
        let err = stderr(&o);
        assert!(
            err.contains("Network is unreachable") || err.contains("Permission denied"),
            "{args:?}: the server/client did not fail on the network: {err}"
        );
    }
    let connect = "import socket, errno\n\
                   try:\n\
                   \x20   socket.create_connection(('127.0.0.1', 80), timeout=5); print('connected')\n\
                   except OSError as e:\n\
                   \x20   print(errno.errorcode[e.errno])\n\
                   print(sorted(n for _, n in socket.if_nameindex()))";
    let o = rsb(["run", "--net", "none", "-c", connect]);
    assert_eq!(code(&o), 0, "{o:?}");
    let out = stdout(&o);
    // Landlock ABI 4+ denies TCP connect itself (EACCES); without it the down loopback
    // answers ENETUNREACH. Which one is decided by the kernel, not left open.
    let expected = if rsandbox::probe::host().landlock_abi >= 4 {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    assert_eq!(out, format!("{expected}\n['lo']\n"), "--net none: {out}");
    // With loopback up, the same connection reaches the (closed) port: refused, not unreachable.
    let o = rsb(["run", "--net", "loopback", "-c", connect]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "ECONNREFUSED\n['lo']\n"),
        "{o:?}"
    );
}

/// `--ro HOST:INSIDE` shows a host directory at INSIDE, read-only (writes fail with EROFS and
/// the host is unchanged).
#[test]
fn ro_bind_is_readable_and_not_writable() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(dir.path(), "f.txt", "host content\n", 0o644);
    let o = rsb([
        "run",
        "--ro",
        &format!("{}:/mnt/rsandbox-test-ro", dir.path().display()),
        "--",
        "/bin/sh",
        "-c",
        "cat /mnt/rsandbox-test-ro/f.txt; echo x > /mnt/rsandbox-test-ro/new.txt || echo write-failed; \
         echo y >> /mnt/rsandbox-test-ro/f.txt || echo append-failed",
    ]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(stdout(&o), "host content\nwrite-failed\nappend-failed\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f.txt")).unwrap(),
        "host content\n"
    );
}

/// `--rw`: a host directory is writable inside and what the program writes appears on the
/// host. Unprivileged, the sandbox user maps to the invoking user, so the caller's own
/// (0700) directory is writable and new files are the caller's. As root, the sandbox user maps
/// to an unprivileged host uid (1000000000+slot), so a root-owned 0755 directory is NOT
/// writable inside (no idmapped mount yet); a 0777 directory is, and files written there
/// belong to that host uid.
#[test]
fn rw_bind_is_writable_and_changes_reach_the_host() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uid = euid();
    if util::is_root() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = rsb([
        "run",
        "--rw",
        &format!("{}:/mnt/rsandbox-test-rw", dir.path().display()),
        "--",
        "/bin/sh",
        "-c",
        "echo from inside > /mnt/rsandbox-test-rw/out.txt && cat /mnt/rsandbox-test-rw/out.txt",
    ]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "from inside\n"),
        "{o:?}"
    );
    let host_file = dir.path().join("out.txt");
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "from inside\n"
    );
    let owner = std::fs::metadata(&host_file).unwrap().uid();
    if util::is_root() {
        let base = rsandbox::ns::user::UID_BASE;
        assert!(
            (base..base + rsandbox::ns::user::SLOTS).contains(&owner),
            "owner {owner} is not an instance uid"
        );
    } else {
        assert_eq!(
            owner, uid,
            "the file written inside is not the invoking user's"
        );
    }
}

/// This process's effective uid (the owner of /proc/self).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}
