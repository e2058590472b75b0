//! The daemon's life: socket activation, SIGTERM, SIGKILL and restart, `run --daemon`, systemd.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{host_before, http, Daemon};
use crate::util;

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
