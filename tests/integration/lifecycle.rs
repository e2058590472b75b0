//! Lifecycle: timeouts kill whole process trees, nothing remains after runs, a SIGKILLed
//! supervisor's instance dies with it and is swept, the library from many threads, sessions,
//! and how exits, signals and exec failures are reported.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rsandbox::{Command, Error, Instance, Limit, Outcome, Sandbox, Status};

use crate::util::{self, Fingerprint};

fn sh_cmd(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

fn sh_in(inst: &Instance, script: &str) -> Outcome {
    inst.exec(&sh_cmd(script)).expect("exec")
}

/// Asserts a run ended with exit 0, showing its output otherwise.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// A shell script that leaves every kind of hard-to-kill process behind, then sleeps: a
/// double-forked orphan, a new session, a stopped process, SIGTERM/SIGHUP/SIGINT-ignoring
/// ones, and a busy loop.
const HARD_TO_KILL: &str = "\
    sh -c 'sleep 1000 & exit 0'\n\
    setsid sleep 1000 >/dev/null 2>&1 &\n\
    setsid sh -c 'sh -c \"sleep 1000 &\"' &\n\
    sleep 1000 & kill -STOP $!\n\
    sh -c 'trap \"\" TERM HUP INT; exec sleep 1000' &\n\
    sh -c 'trap \"\" TERM HUP INT; while :; do :; done' &\n\
    sleep 0.1\n\
    echo started\n\
    sleep 1000\n";

/// A one-shot run's wall timeout kills the whole tree (double-forked, setsid, stopped and
/// signal-ignoring processes included): status timeout, `wall` in `limits_hit`, and nothing
/// remains afterwards.
#[test]
fn wall_timeout_kills_the_whole_tree() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let timeout = util::allow(1.0);
    let sb = util::builder().timeout(timeout).build().unwrap();
    ok(&util::sh(&sb, "true"));
    let fp = Fingerprint::take(&sb);
    let t = Instant::now();
    let o = util::sh(&sb, HARD_TO_KILL);
    let elapsed = t.elapsed();
    assert_eq!(o.status, Status::Timeout, "{o:#?}");
    assert!(o.limits_hit.contains(&Limit::Wall), "{o:#?}");
    assert_eq!(
        util::stdout(&o),
        "started\n",
        "the tree must have been fully started: {o:#?}"
    );
    let limit_ms = timeout.as_secs_f64() * 1000.0;
    assert!(
        o.wall_ms >= limit_ms * 0.9 && o.wall_ms <= limit_ms + 4000.0 * util::time_scale(),
        "wall_ms {} with a timeout of {limit_ms} ms",
        o.wall_ms
    );
    assert!(
        elapsed < timeout + util::allow(4.0),
        "run() took {elapsed:?}"
    );
    assert_eq!(o.exit_code, None);
    assert_eq!(o.exit_code_for_cli(), 124);
    fp.assert_same(&sb);
}

/// In a session, a run's timeout kills that run (status timeout) and its process group, while
/// the instance, and a background process an earlier run left, live on for the next exec.
#[test]
fn session_timeout_kills_the_run_not_the_instance() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    ok(&util::sh(&sb, "true"));
    let fp = Fingerprint::take(&sb);
    let inst = sb.create().unwrap();
    let bg = ok(&sh_in(&inst, "sleep 100 >/dev/null 2>&1 & echo $!"))
        .trim()
        .to_string();

    let timeout = util::allow(1.0);
    let t = Instant::now();
    let o = inst
        .exec(&sh_cmd("sleep 1000 & sleep 1000 & echo started; wait").timeout(timeout))
        .unwrap();
    assert_eq!(o.status, Status::Timeout, "{o:#?}");
    assert!(o.limits_hit.contains(&Limit::Wall));
    assert_eq!(util::stdout(&o), "started\n");
    let limit_ms = timeout.as_secs_f64() * 1000.0;
    assert!(
        o.wall_ms >= limit_ms * 0.9 && o.wall_ms <= limit_ms + 4000.0 * util::time_scale(),
        "wall_ms {} with a timeout of {limit_ms} ms",
        o.wall_ms
    );
    assert!(t.elapsed() < timeout + util::allow(4.0));

    // The instance still works; the timed-out run's processes are gone; the earlier
    // background process is not.
    let o = inst
        .exec(&Command::python(
            "import os\n\
             for p in sorted(os.listdir('/proc')):\n    \
                 if p.isdigit() and int(p) != os.getpid():\n        \
                     print(p, open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\\0', b' ').decode().strip())",
        ))
        .unwrap();
    let out = ok(&o);
    let procs: Vec<&str> = out.lines().filter(|l| !l.starts_with("1 ")).collect();
    assert_eq!(
        procs,
        vec![format!("{bg} sleep 100")],
        "processes left in the instance: {out}"
    );
    assert_eq!(
        ok(&sh_in(&inst, &format!("kill -0 {bg} && echo alive"))),
        "alive\n"
    );
    inst.destroy().unwrap();
    fp.assert_same(&sb);
}

/// Nothing remains after 20 mixed runs (ok, failing, timed out, killed by a signal, flooding
/// output, leaving background processes, exec failures), one-shot and in sessions.
#[test]
fn nothing_remains_after_mixed_runs() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    ok(&util::sh(&sb, "true"));
    let fp = Fingerprint::take(&sb);
    let short = Duration::from_millis(300);
    let session = sb.create().unwrap();
    for i in 0..20 {
        let o = match i % 7 {
            0 => sb.run(&sh_cmd("echo ok")).unwrap(),
            1 => sb.run(&sh_cmd("echo failing >&2; exit 7")).unwrap(),
            2 => sb
                .run(&sh_cmd("setsid sleep 1000 & sleep 1000 & sleep 1000").timeout(short))
                .unwrap(),
            3 => sb
                .run(&sh_cmd(
                    "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2",
                ))
                .unwrap(),
            4 => session
                .exec(&sh_cmd("sleep 1000 >/dev/null 2>&1 & kill -9 $$"))
                .unwrap(),
            5 => session.exec(&sh_cmd("sleep 1000").timeout(short)).unwrap(),
            _ => {
                let e = sb.run(&Command::new("/no/such/program")).unwrap_err();
                assert_eq!(e.exit_code(), 127);
                continue;
            }
        };
        let want = [
            Status::Ok,
            Status::Exit,
            Status::Timeout,
            Status::Ok,
            Status::Signal,
            Status::Timeout,
        ][i % 7];
        assert_eq!(o.status, want, "run {i}: {o:#?}");
        if i % 7 == 3 {
            assert_eq!((o.stdout_bytes, o.stderr_bytes), (3_000_000, 2_000_000));
            assert!(
                o.stdout_truncated && o.stderr_truncated && o.limits_hit.contains(&Limit::Output)
            );
        }
    }
    // A session dropped without destroy, with processes still running in it.
    let dropped = sb.create().unwrap();
    ok(&sh_in(
        &dropped,
        "setsid sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo",
    ));
    drop(dropped);
    session.destroy().unwrap();
    fp.assert_same(&sb);
}

/// `(pid, start time)` of a host process, to tell it from a reused pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Host pids of every descendant of `root` (not `root` itself), with their names.
fn descendants(root: i32) -> Vec<(i32, String)> {
    let all = util::process_table();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, _, name) in &all {
            if *ppid as i32 == p {
                out.push((*pid as i32, name.clone()));
                frontier.push(*pid as i32);
            }
        }
    }
    out
}

/// Records in the state directory, by file name.
fn records() -> BTreeSet<String> {
    std::fs::read_dir(rsandbox::testing::state_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A supervisor killed with SIGKILL mid-run takes its instance with it (the reaper sees its
/// control socket close), and the next start of rsandbox removes the record it left.
#[test]
fn sigkilled_supervisor_takes_its_instance_and_is_swept() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    ok(&util::sh(&sb, "true"));
    let fp = Fingerprint::take(&sb);
    let before = records();
    let mut cli = std::process::Command::new(util::bin())
        .args([
            "run",
            "--timeout",
            "600",
            "--",
            "/bin/sh",
            "-c",
            "sleep 1000; echo never",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cli_pid = cli.id() as i32;

    // Wait for its record, then for the program to be running.
    let deadline = Instant::now() + util::allow(5.0);
    let (name, info) = loop {
        let found = records().difference(&before).find_map(|n| {
            let text = std::fs::read_to_string(rsandbox::testing::state_dir().join(n)).ok()?;
            let info: rsandbox::testing::state::RecordInfo = serde_json::from_str(&text).ok()?;
            // The record is written before the clone (naming the cgroups) and again with the
            // reaper's pid: wait for the second.
            (info.supervisor_pid == cli_pid && info.reaper_pid > 0).then(|| (n.clone(), info))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no state record for supervisor {cli_pid} in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let reaper = info.reaper_pid;
    let reaper_start = start_time(reaper).expect("the reaper is alive");
    let procs = loop {
        let d = descendants(reaper);
        if d.iter().any(|(_, n)| n == "sleep") {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the program never started under reaper {reaper}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let procs: Vec<(i32, u64)> = procs
        .iter()
        .filter_map(|(p, _)| start_time(*p).map(|s| (*p, s)))
        .collect();

    cli.kill().unwrap();
    let status = cli.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop(cli);

    // Within a few seconds nothing of the instance is left on the host.
    let deadline = Instant::now() + util::allow(5.0);
    loop {
        let reaper_alive = start_time(reaper) == Some(reaper_start);
        let left: Vec<_> = procs
            .iter()
            .filter(|(p, s)| start_time(*p) == Some(*s))
            .collect();
        let by_uid = if util::is_root() {
            uid_processes(info.host_uid)
        } else {
            Vec::new()
        };
        if !reaper_alive && left.is_empty() && by_uid.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} after the supervisor died: reaper alive {reaper_alive}, processes {left:?}, host uid {} still runs {by_uid:?}",
            util::allow(5.0),
            info.host_uid
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The record may linger (its lock is free); the next start of rsandbox removes it. (A
    // Sandbox built in this process would not: the janitor runs once per process.)
    let out = std::process::Command::new(util::bin())
        .args(["run", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !rsandbox::testing::state_dir().join(&name).exists(),
        "the stale record {name} survived the next start"
    );
    fp.assert_same(&sb);
}

/// Host processes running as `uid`.
fn uid_processes(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let u = st
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        if u == Some(uid) {
            out.push(pid);
        }
    }
    out
}

/// `Sandbox` is `Send + Sync` and runs from many threads at once: 8 threads x 5 runs, each
/// printing a value only its thread knows, all correct. (A watchdog turns a hang into a
/// failure.)
#[test]
fn sandbox_runs_from_many_threads() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Sandbox>();
    send_sync::<Instance>();
    let sb = util::sandbox();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let sb = sb.clone();
                std::thread::spawn(move || {
                    for i in 0..5 {
                        let o = sb
                            .run(&Command::python(format!(
                                "import os; print({t} * 1000 + {i}, os.getpid() > 1)"
                            )))
                            .unwrap();
                        assert_eq!(
                            ok(&o),
                            format!("{} True\n", t * 1000 + i),
                            "thread {t} run {i}"
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        tx.send(()).unwrap();
    });
    match rx.recv_timeout(util::allow(60.0)) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("40 runs from 8 threads did not finish in 60 s: a run hung")
        }
    }
}

/// An instance lives across execs: a file written by one exec is read by the next, a
/// background process keeps running, and both destroy() and a plain drop leave nothing.
#[test]
fn instance_persists_across_execs_and_cleans_up() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    ok(&util::sh(&sb, "true"));
    let fp = Fingerprint::take(&sb);

    let inst = sb.create().unwrap();
    let o = sh_in(
        &inst,
        "echo hello > note.txt; mkdir -p d; echo 0 > d/count; sleep 100 >/dev/null 2>&1 & echo $!",
    );
    let bg = ok(&o).trim().to_string();
    assert_eq!(ok(&sh_in(&inst, "cat note.txt")), "hello\n");
    for i in 1..=10 {
        let o = sh_in(
            &inst,
            &format!("n=$(cat d/count); echo $((n + 1)) > d/count; kill -0 {bg} && cat d/count"),
        );
        assert_eq!(ok(&o), format!("{i}\n"), "exec {i}");
    }
    assert_eq!(inst.get_file("d/count", 100).unwrap(), b"10\n");
    let o = inst
        .exec(&Command::python(
            "print(open('/home/sandbox/note.txt').read().strip())",
        ))
        .unwrap();
    assert_eq!(ok(&o), "hello\n");
    // A background process that keeps stdout open does not hold up the exec.
    let t = Instant::now();
    ok(&sh_in(&inst, "sleep 100 & echo started"));
    assert!(
        t.elapsed() < util::allow(3.0),
        "exec waited for a background process: {:?}",
        t.elapsed()
    );
    inst.destroy().unwrap();
    fp.assert_same(&sb);

    // Dropped without destroy, with a background process running.
    let inst = sb.create().unwrap();
    ok(&sh_in(&inst, "sleep 100 >/dev/null 2>&1 & echo > f"));
    drop(inst);
    fp.assert_same(&sb);
}

/// Exit codes and signals are reported as such: exit 0 is ok, exit 3 is `exit` with code 3,
/// death by SIGKILL or SIGSEGV is `signal` with its number and name.
#[test]
fn exit_codes_and_signals_are_reported() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::sh(&sb, "exit 0");
    assert_eq!(
        (o.status, o.exit_code, o.signal),
        (Status::Ok, Some(0), None)
    );
    assert!(o.limits_hit.is_empty());

    let o = util::sh(&sb, "exit 3");
    assert_eq!(
        (o.status, o.exit_code, o.signal, o.signal_name.clone()),
        (Status::Exit, Some(3), None, None)
    );
    assert_eq!(o.exit_code_for_cli(), 3);

    let o = util::sh(&sb, "kill -9 $$");
    assert_eq!(
        (o.status, o.exit_code, o.signal),
        (Status::Signal, None, Some(9)),
        "{o:#?}"
    );
    assert_eq!(o.signal_name.as_deref(), Some("SIGKILL"));
    assert_eq!(o.exit_code_for_cli(), 137);
    assert!(
        o.limits_hit.is_empty(),
        "a signal the program sent itself is no limit: {o:#?}"
    );

    let o = util::py(
        &sb,
        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
    );
    assert_eq!((o.status, o.signal), (Status::Signal, Some(11)), "{o:#?}");
    assert_eq!(o.signal_name.as_deref(), Some("SIGSEGV"));

    // A real segfault (RLIMIT_CORE is 0: no core dump is attempted).
    let o = util::py(&sb, "import ctypes; ctypes.string_at(0)");
    assert_eq!((o.status, o.signal), (Status::Signal, Some(11)), "{o:#?}");
}

/// A program that cannot be executed is an `Err(Error::Exec)`, not a report: 127 when it does
/// not exist (by path or on PATH), 126 when it is not executable; the instance stays usable.
#[test]
fn exec_failures_are_errors_with_cli_codes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    for prog in [
        "/no/such/program",
        "no-such-program-on-path",
        "/usr/bin/no-such-program",
    ] {
        let e = sb.run(&Command::new(prog)).unwrap_err();
        assert!(
            matches!(&e, Error::Exec { source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
            "{prog}: {e:?}"
        );
        assert_eq!(e.exit_code(), 127, "{prog}");
        assert_eq!(e.stage(), "exec");
    }
    let e = sb
        .run(&Command::new("./script").file("script", "#!/bin/sh\necho hi\n", 0o644))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Exec { source, .. } if source.raw_os_error() == Some(libc::EACCES)),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 126);
    let e = sb.run(&Command::new("/usr")).unwrap_err();
    assert!(matches!(e, Error::Exec { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 126);

    let inst = sb.create().unwrap();
    inst.put_file("tool", b"#!/bin/sh\necho tool ran\n", 0o644)
        .unwrap();
    let e = inst.exec(&Command::new("./tool")).unwrap_err();
    assert_eq!(e.exit_code(), 126, "{e:?}");
    let e = inst.exec(&Command::new("./missing")).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e:?}");
    assert_eq!(ok(&sh_in(&inst, "chmod +x tool && ./tool")), "tool ran\n");
    inst.destroy().unwrap();
}

/// A warm pool (`SandboxBuilder::warm`) gives each run its own fresh instance, from several
/// threads at once: nothing one run leaves in /tmp, the work dir, /dev/shm or as a background
/// process is seen by another; timeouts still kill whole trees; and once the sandbox is
/// dropped nothing of its pooled or finished instances remains.
#[test]
fn warm_pool_gives_each_run_a_fresh_instance_and_leaves_nothing() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let plain = util::sandbox();
    ok(&util::sh(&plain, "true"));
    let fp = Fingerprint::take(&plain);
    {
        let sb = util::builder()
            .timeout(util::allow(1.0))
            .warm(2)
            .build()
            .unwrap();
        let probe = "ls /tmp /dev/shm /home/sandbox; pgrep -c sleep || true; \
                     echo x > /tmp/left; echo x > /dev/shm/left; echo x > left; \
                     sleep 1000 >/dev/null 2>&1 &";
        std::thread::scope(|s| {
            for t in 0..2 {
                let sb = &sb;
                s.spawn(move || {
                    for i in 0..15 {
                        let o = util::sh(sb, probe);
                        // Nothing listed, no sleep counted: `0` from pgrep only.
                        assert_eq!(
                            ok(&o),
                            "/dev/shm:\n\n/home/sandbox:\n\n/tmp:\n0\n",
                            "thread {t} run {i} saw what another run left"
                        );
                    }
                    let o = util::sh(sb, HARD_TO_KILL);
                    assert_eq!(o.status, Status::Timeout, "thread {t}: {o:#?}");
                });
            }
        });
    }
    fp.assert_same(&plain);
}

/// `Command::cancel_on`: a cancelled handle refuses to start a run; cancelling a running one
/// from another thread kills it at once (as a timeout would) and returns `Err(Cancelled)`,
/// and nothing of the instance remains.
#[test]
fn a_cancelled_run_ends_at_once_and_leaves_nothing() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let before = util::Fingerprint::take(&sb);
    let cancel = rsandbox::Cancel::new().unwrap();
    let cmd = rsandbox::Command::new("/bin/sleep")
        .arg("60")
        .cancel_on(&cancel);
    let c = cancel.clone();
    let t = std::time::Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        c.cancel();
    });
    let r = sb.run(&cmd);
    killer.join().unwrap();
    assert!(matches!(r, Err(rsandbox::Error::Cancelled)), "{r:?}");
    assert!(t.elapsed() < util::allow(5.0), "{:?}", t.elapsed());
    assert!(matches!(sb.run(&cmd), Err(rsandbox::Error::Cancelled)));
    drop((cmd, cancel)); // the eventfd is the test's own
    before.assert_same(&sb);
}
