//! Integration tests: a program's stdin, stdout and stderr (concurrent draining, caps and counts,
//! UTF-8 vs base64, stdin sources) and the shape of the JSON report (schema v1, DESIGN.md §5).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use rsandbox::{Command, Limit, Status, Stdin};

use crate::util;

fn sh(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

/// 5 MB to stderr, then 5 MB to stdout: a supervisor that read one stream to EOF before the
/// other (or waited for exit first) would deadlock on the full stderr pipe and time out.
/// Every byte is counted, only the cap is kept, and the cap is reported as a limit hit.
#[test]
fn stdout_and_stderr_are_drained_concurrently_and_capped() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let cap = 64 * 1024;
    let sb = util::builder().output_limit(cap).build().unwrap();
    let cmd =
        sh("head -c 5000000 /dev/zero | tr '\\0' e >&2; head -c 5000000 /dev/zero | tr '\\0' o")
            .timeout(util::allow(15.0));
    let out = sb.run(&cmd).unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stderr_bytes, 5_000_000);
    assert_eq!(out.stdout_bytes, 5_000_000);
    assert!(out.stdout_truncated && out.stderr_truncated);
    let (so, se) = (
        out.stdout.as_deref().unwrap(),
        out.stderr.as_deref().unwrap(),
    );
    assert_eq!(so.len() as u64, cap);
    assert_eq!(se.len() as u64, cap);
    assert!(
        so.bytes().all(|b| b == b'o'),
        "stdout kept the first bytes of stdout only"
    );
    assert!(
        se.bytes().all(|b| b == b'e'),
        "stderr kept the first bytes of stderr only"
    );
    assert_eq!(out.limits_hit, vec![Limit::Output]);
    assert_eq!(out.stdout_b64, None);
}

/// Interleaved writes to both streams (many small alternating writes, more than a pipe buffer
/// each) arrive complete and in order per stream when under the cap.
#[test]
fn interleaved_output_under_the_cap_is_kept_whole() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().output_limit(4 << 20).build().unwrap();
    let code = "import sys\n\
                for i in range(20000):\n\
                \x20   sys.stdout.write(f'out {i}\\n'); sys.stderr.write(f'err {i}\\n')\n";
    let out = sb.run(&Command::python(code)).unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let want_out: String = (0..20000).map(|i| format!("out {i}\n")).collect();
    let want_err: String = (0..20000).map(|i| format!("err {i}\n")).collect();
    assert_eq!(out.stdout.as_deref(), Some(want_out.as_str()));
    assert_eq!(out.stderr.as_deref(), Some(want_err.as_str()));
    assert_eq!(out.stdout_bytes, want_out.len() as u64);
    assert_eq!(out.stderr_bytes, want_err.len() as u64);
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    assert!(out.limits_hit.is_empty(), "{:?}", out.limits_hit);
}

/// 1 GiB of output with the default 1 MiB cap: the run completes well within its timeout,
/// every byte is counted, only 1 MiB is kept, and this process's memory does not grow with
/// the output (sampled while the run is going on).
#[test]
fn one_gib_of_output_neither_hangs_nor_grows_memory() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().build().unwrap();
    let base = util::vm_rss();
    let peak = AtomicU64::new(base);
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(util::vm_rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let out = sb.run(&sh("head -c 1G /dev/zero").timeout(util::allow(60.0)));
        done.store(true, Ordering::Relaxed);
        out
    })
    .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout_bytes, 1 << 30);
    assert!(out.stdout_truncated);
    assert_eq!(
        out.stdout_bytes().len() as u64,
        rsandbox::defaults::OUTPUT_LIMIT
    );
    assert!(out.limits_hit.contains(&Limit::Output));
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        grew < 50 << 20,
        "RSS grew by {grew} bytes while draining 1 GiB"
    );
}

/// Output that is not UTF-8 comes back as exact bytes in base64 and the text field is null;
/// each stream is judged on its own.
#[test]
fn invalid_utf8_comes_back_as_base64() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let out = sb
        .run(&sh("printf '\\377\\376'; printf 'caf\\303\\251 ok' >&2"))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout, None);
    let b64 = out.stdout_b64.as_deref().expect("stdout_b64");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        vec![0xff, 0xfe]
    );
    assert_eq!(out.stdout_bytes(), vec![0xff, 0xfe]);
    assert_eq!(out.stdout_bytes, 2);
    // stderr was valid UTF-8 (é as two bytes): text, not base64.
    assert_eq!(out.stderr.as_deref(), Some("café ok"));
    assert_eq!(out.stderr_b64, None);

    // A stray invalid byte in the middle of otherwise valid text still means base64.
    let out = sb.run(&sh("printf 'abc\\377def' >&2")).unwrap();
    assert_eq!(out.stderr, None);
    assert_eq!(out.stderr_bytes(), b"abc\xffdef");
}

/// Valid UTF-8, multi-byte characters included, comes back as text, byte for byte.
#[test]
fn valid_utf8_comes_back_as_text() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let text = "héllo wörld ✓ 日本語 😀\n";
    let out = sb
        .run(&Command::python(format!(
            "import sys; sys.stdout.buffer.write({:?}.encode())",
            text
        )))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout.as_deref(), Some(text));
    assert_eq!(out.stdout_b64, None);
    assert_eq!(out.stdout_bytes, text.len() as u64);
}

/// A multi-byte character cut in half by the output cap does not turn the whole output into
/// base64: the partial character is dropped from the kept text, and the count stays exact.
#[test]
fn cap_cutting_a_multibyte_character_keeps_text() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().output_limit(5).build().unwrap();
    // "abcd€": the cap (5) falls inside the three bytes of €.
    let out = sb.run(&sh("printf 'abcd\\342\\202\\254'")).unwrap();
    assert_eq!(out.stdout.as_deref(), Some("abcd"));
    assert_eq!(out.stdout_b64, None);
    assert_eq!(out.stdout_bytes, 7);
    assert!(out.stdout_truncated);
}

/// `Stdin::Bytes` reaches the program exactly (cat and Python, binary content included).
#[test]
fn stdin_bytes_are_fed() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let data = b"line one\nline two\n".to_vec();
    let out = sb
        .run(&Command::new("cat").stdin(Stdin::Bytes(data.clone())))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout_bytes(), data);

    // 1 MB of every byte value, larger than a pipe buffer: Python hashes what it read.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let code = "import sys, hashlib; d = sys.stdin.buffer.read(); print(len(d), hashlib.sha256(d).hexdigest())";
    let out = sb
        .run(&Command::python(code).stdin(Stdin::Bytes(big.clone())))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let want = format!("1000000 {}\n", sha256_hex_via_python(&big));
    assert_eq!(out.stdout.as_deref(), Some(want.as_str()));
}

/// The SHA-256 of `data` computed on the host with /usr/bin/python3 (no hashing crate here).
fn sha256_hex_via_python(data: &[u8]) -> String {
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `Stdin::File` streams a host file into the program.
#[test]
fn stdin_from_a_host_file() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.txt");
    let content: String = (0..10000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(&path, &content).unwrap();
    let sb = util::sandbox();
    let out = sb
        .run(&sh("wc -l; echo done").stdin(Stdin::File(path.clone())))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout.as_deref(), Some("10000\ndone\n"));

    let out = sb
        .run(&Command::new("cat").stdin(Stdin::File(path)))
        .unwrap();
    assert_eq!(out.stdout.as_deref(), Some(content.as_str()));

    // A missing stdin file is a setup error naming the file, not a run.
    let missing = dir.path().join("missing.txt");
    match sb.run(&Command::new("cat").stdin(Stdin::File(missing.clone()))) {
        Err(e @ rsandbox::Error::Io { .. }) => {
            assert!(e.to_string().contains("missing.txt"), "{e}")
        }
        other => panic!("expected an Io error for the missing stdin file, got {other:?}"),
    }
}

/// `Stdin::Null` (also the default) gives end of file at once: a program that reads stdin
/// to the end finishes immediately with nothing read.
#[test]
fn stdin_null_is_immediate_eof() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let code = "import sys; d = sys.stdin.read(); print(repr(d))";
    for cmd in [
        Command::python(code),
        Command::python(code).stdin(Stdin::Null),
    ] {
        let out = sb.run(&cmd.timeout(util::allow(10.0))).unwrap();
        assert_eq!(out.status, Status::Ok, "{out:?}");
        assert_eq!(out.stdout.as_deref(), Some("''\n"));
    }
    let out = sb
        .run(&Command::new("cat").timeout(util::allow(10.0)))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout_bytes, 0);
}

/// A program that never reads (or reads only a little of) a 10 MB stdin still finishes: the
/// supervisor does not block on a pipe nobody drains.
#[test]
fn unread_large_stdin_does_not_block() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let big = vec![b'x'; 10 << 20];
    let start = Instant::now();
    let out = sb
        .run(
            &sh("echo ignored")
                .stdin(Stdin::Bytes(big.clone()))
                .timeout(util::allow(10.0)),
        )
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout.as_deref(), Some("ignored\n"));
    let out = sb
        .run(
            &Command::new("head")
                .args(["-c", "5"])
                .stdin(Stdin::Bytes(big)),
        )
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout.as_deref(), Some("xxxxx"));
    assert!(
        start.elapsed() < util::allow(8.0),
        "took {:?}",
        start.elapsed()
    );
}

/// The serialized report has exactly the keys of schema v1 (DESIGN.md §5), including every
/// enforcement key, with the right JSON types; a CPU-burning loop reports cpu_ms > 0.
#[test]
fn json_report_has_exactly_the_schema_v1_keys() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let out = sb
        .run(&Command::python(
            "x = 0\nfor i in range(3_000_000): x += i\nprint(x)",
        ))
        .unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    let v = serde_json::to_value(&out).unwrap();
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "version",
        "status",
        "exit_code",
        "signal",
        "signal_name",
        "limits_hit",
        "wall_ms",
        "cpu_ms",
        "user_ms",
        "sys_ms",
        "peak_memory_bytes",
        "oom_kills",
        "stdout",
        "stderr",
        "stdout_b64",
        "stderr_b64",
        "stdout_bytes",
        "stderr_bytes",
        "stdout_truncated",
        "stderr_truncated",
        "seccomp_violation",
        "enforcement",
        "queued_ms",
        "network",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want);
    // No proxy ran (network none): null, as the schema says.
    assert!(v["network"].is_null(), "{v}");
    let enf: BTreeSet<&str> = v["enforcement"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let want_enf: BTreeSet<&str> = [
        "memory", "cpu", "pids", "devices", "wall", "landlock", "seccomp",
    ]
    .into_iter()
    .collect();
    assert_eq!(enf, want_enf);
    for (k, val) in v["enforcement"].as_object().unwrap() {
        assert!(val.is_string(), "enforcement.{k} is {val}");
    }
    assert_eq!(v["version"], 1);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["exit_code"], 0);
    assert!(v["signal"].is_null() && v["signal_name"].is_null());
    assert_eq!(v["limits_hit"], serde_json::json!([]));
    assert_eq!(v["stdout"], format!("{}\n", (0..3_000_000u64).sum::<u64>()));
    assert!(v["stdout_b64"].is_null());
    assert!(v["seccomp_violation"].is_null());
    for k in ["wall_ms", "cpu_ms", "user_ms", "sys_ms"] {
        assert!(v[k].is_number(), "{k} is {}", v[k]);
    }
    assert!(v["stdout_bytes"].is_u64() && v["oom_kills"].is_u64());
    assert!(v["stdout_truncated"].is_boolean());
    assert!(
        out.cpu_ms > 0.0,
        "a CPU-burning loop reported cpu_ms = {}",
        out.cpu_ms
    );
    assert!(out.user_ms > 0.0);
    assert!((out.cpu_ms - (out.user_ms + out.sys_ms)).abs() < 0.01);
    assert!(out.wall_ms > 0.0 && out.wall_ms < 20_000.0);
    // The report round-trips through serde unchanged.
    let back: rsandbox::Outcome = serde_json::from_value(v).unwrap();
    assert_eq!(back, out);
}

/// A short program (a few ms of CPU, less than one 10 ms tick) still reports its CPU time, with
/// user + system = total, in one-shot runs and in a session's runs. cgroup v1 splits its exact
/// total into user and system time only per tick: a report that took the split as the total
/// said `cpu_ms: 0` for most short runs.
#[test]
fn short_runs_report_their_cpu_time() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().build().unwrap();
    let burn = sh("i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done");
    let inst = sb.create().unwrap();
    for i in 0..6 {
        let (what, o) = if i % 2 == 0 {
            ("one-shot run", sb.run(&burn).unwrap())
        } else {
            ("session run", inst.exec(&burn).unwrap())
        };
        assert_eq!(o.status, Status::Ok, "{o:?}");
        assert!(o.cpu_ms > 0.0, "{what} {i}: cpu_ms = {} ({o:?})", o.cpu_ms);
        assert!(
            o.user_ms >= 0.0 && o.sys_ms >= 0.0 && (o.cpu_ms - (o.user_ms + o.sys_ms)).abs() < 0.01,
            "{what} {i}: user {} + sys {} != cpu {}",
            o.user_ms,
            o.sys_ms,
            o.cpu_ms
        );
    }
    inst.destroy().unwrap();
}

/// Status and limit names are snake_case strings, and the non-ok statuses a plain run can
/// produce (exit, signal, timeout) are reported with their fields.
#[test]
fn status_strings_are_snake_case() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let names: Vec<serde_json::Value> = [
        Status::Ok,
        Status::Exit,
        Status::Signal,
        Status::Timeout,
        Status::CpuTime,
        Status::Memory,
        Status::Pids,
        Status::OutputLimit,
        Status::Seccomp,
    ]
    .iter()
    .map(|s| serde_json::to_value(s).unwrap())
    .collect();
    assert_eq!(
        names,
        [
            "ok",
            "exit",
            "signal",
            "timeout",
            "cpu_time",
            "memory",
            "pids",
            "output_limit",
            "seccomp"
        ]
        .map(serde_json::Value::from)
    );
    let limits: Vec<serde_json::Value> = [
        Limit::Wall,
        Limit::CpuTime,
        Limit::Memory,
        Limit::Pids,
        Limit::Output,
    ]
    .iter()
    .map(|l| serde_json::to_value(l).unwrap())
    .collect();
    assert_eq!(
        limits,
        ["wall", "cpu_time", "memory", "pids", "output"].map(serde_json::Value::from)
    );

    let sb = util::sandbox();
    let v = serde_json::to_value(sb.run(&sh("exit 3")).unwrap()).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("exit"), Some(3))
    );
    let v = serde_json::to_value(sb.run(&sh("kill -KILL $$")).unwrap()).unwrap();
    assert_eq!(v["status"], "signal");
    assert_eq!(v["signal"], 9);
    assert_eq!(v["signal_name"], "SIGKILL");
    assert!(v["exit_code"].is_null());
    let v = serde_json::to_value(
        sb.run(&sh("sleep 30").timeout(Duration::from_millis(300)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["status"], "timeout");
    assert_eq!(v["limits_hit"], serde_json::json!(["wall"]));
}
