//! Terminal runs without a user's terminal: `Command::tty` and a `Terminal` handle in the
//! library, and `"tty": true` on the daemon.

use std::time::Duration;

use rsandbox::{Command, Status, Stdin, Terminal};
use serde_json::json;

use crate::server::Daemon;
use crate::util;

/// `Command::tty(true)`: the program's 0, 1 and 2 are one pty of the instance and its
/// controlling terminal (the foreground group of its own session), 24x80; output arrives as one stream in `stdout` with the terminal's `\r\n`; stdin
/// bytes are typed into it (and echoed).
#[test]
fn a_tty_run_has_one_terminal_as_stdio_and_controlling_terminal() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = "import os, sys\n\
        print(os.ttyname(0) == os.ttyname(1) == os.ttyname(2), os.ttyname(0))\n\
        print(os.get_terminal_size())\n\
        print(os.tcgetpgrp(0) == os.getpgrp() == os.getsid(0))\n\
        print(os.ttyname(os.open('/proc/self/fd/0', os.O_RDWR)))\n\
        print('line:', sys.stdin.readline().strip())\n\
        print('to stderr', file=sys.stderr)\n\
        sys.exit(5)";
    let o = util::sandbox()
        .run(
            &Command::python(code)
                .tty(true)
                .stdin(Stdin::Bytes(b"typed\n".to_vec())),
        )
        .unwrap();
    assert_eq!((o.status, o.exit_code), (Status::Exit, Some(5)), "{o:#?}");
    let out = util::stdout(&o);
    assert!(out.contains("True /dev/pts/0\r\n"), "{out:?}");
    assert!(
        out.contains("os.terminal_size(columns=80, lines=24)\r\n"),
        "{out:?}"
    );
    assert!(out.contains("True\r\n/dev/pts/0\r\n"), "{out:?}");
    assert!(
        out.contains("typed\r\n"),
        "the echo of typed input: {out:?}"
    );
    assert!(out.contains("line: typed\r\n"), "{out:?}");
    assert!(
        out.contains("to stderr\r\n"),
        "stderr is the terminal too: {out:?}"
    );
    assert_eq!((o.stderr_bytes, o.stderr.as_deref()), (0, Some("")));
}

/// A `Terminal` handle: its size at the start, input typed before the program started, a
/// resize that the program sees (size and SIGWINCH), Ctrl-C through the line discipline, and
/// `BrokenPipe` once the run is over. The program marks its progress in a work-dir file, which
/// the driving thread reads, so nothing depends on timing.
#[test]
fn a_terminal_handle_types_resizes_and_interrupts() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = "import os, signal, sys, time\n\
        winch = []\n\
        signal.signal(signal.SIGWINCH, lambda *a: winch.append(1))\n\
        def stage(n):\n    open('stage.tmp', 'w').write(n); os.rename('stage.tmp', 'stage')\n\
        print('size', *os.get_terminal_size())\n\
        print('got', sys.stdin.readline().strip())\n\
        stage('1')\n\
        while os.get_terminal_size() == (100, 30) or not winch:\n    time.sleep(0.01)\n\
        print('resized', *os.get_terminal_size())\n\
        stage('2')\n\
        time.sleep(600)";
    let sb = util::builder().timeout(util::allow(60.0)).build().unwrap();
    let inst = sb.create().unwrap();
    let term = Terminal::new(30, 100);
    term.write(b"early\n").unwrap(); // queued until the program starts
    let wait_stage = |n: &[u8]| {
        let deadline = std::time::Instant::now() + util::allow(60.0);
        while inst.get_file("stage", 16).ok().as_deref() != Some(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "stage {n:?} never came"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let o = std::thread::scope(|s| {
        let run = s.spawn(|| inst.exec(&Command::python(code).terminal(&term)).unwrap());
        wait_stage(b"1");
        term.resize(50, 132).unwrap();
        wait_stage(b"2");
        term.write(b"\x03").unwrap();
        run.join().unwrap()
    });
    let out = util::stdout(&o);
    assert!(out.contains("size 100 30\r\n"), "{out:?}");
    assert!(out.contains("got early\r\n"), "{out:?}");
    assert!(out.contains("resized 132 50\r\n"), "{out:?}");
    assert!(out.contains("^C"), "the terminal echoes Ctrl-C: {out:?}");
    // Python's SIGINT handler raises KeyboardInterrupt, and Python then dies of SIGINT.
    assert!(out.contains("KeyboardInterrupt"), "{out:?}");
    assert_eq!(
        (o.status, o.signal),
        (Status::Signal, Some(libc::SIGINT)),
        "{o:#?}"
    );
    assert_eq!(
        term.write(b"late").unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
    inst.destroy().unwrap();
}

/// The output cap applies to a terminal run as to any stream; a timeout ends it as usual.
#[test]
fn a_tty_run_keeps_the_output_cap_and_the_timeout() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder()
        .output_limit(1000)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let o = sb
        .run(
            &Command::new("/bin/sh")
                .args(["-c", "head -c 5000 /dev/zero | tr '\\0' x; echo; sleep 600"])
                .tty(true),
        )
        .unwrap();
    assert_eq!(o.status, Status::Timeout, "{o:#?}");
    assert!(o.stdout_truncated && o.stdout_bytes >= 5000, "{o:#?}");
    assert_eq!(util::stdout(&o).len(), 1000);
}

/// `POST /v1/sessions/{id}/run` with `"tty": true`: the program runs on a pty of the session's
/// instance (freed when the run ends, so the next run gets `/dev/pts/0` again), its output one
/// stream in `stdout`; `/v1/run` takes it too; `"tty": "yes"` is a 422-class refusal.
#[test]
fn the_daemon_runs_on_a_tty_when_asked() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let a = d.post("/v1/sessions", &json!({}));
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    let run = |body: serde_json::Value| {
        let a = d.post(&format!("/v1/sessions/{id}/run"), &body);
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()
    };
    let r = run(json!({"argv": ["/bin/sh", "-c", "tty; echo err >&2; test -t 1"], "tty": true}));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["stdout"], "/dev/pts/0\r\nerr\r\n", "{r}");
    assert_eq!(r["stderr"], "", "{r}");
    let r = run(json!({"argv": ["/bin/sh", "-c", "tty; test -t 1"]}));
    assert_eq!(r["stdout"], "not a tty\n", "without tty: pipes: {r}");
    let r = run(
        json!({"code": "import sys; print(sys.stdin.isatty(), input())", "stdin": "hi\n", "tty": true}),
    );
    assert_eq!(r["stdout"], "hi\r\nTrue hi\r\n", "{r}");
    let a = d.post(
        "/v1/run",
        &json!({"argv": ["/bin/sh", "-c", "tty"], "tty": true}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["stdout"], "/dev/pts/0\r\n", "{}", a.body);
    let a = d.post("/v1/run", &json!({"argv": ["/bin/true"], "tty": "yes"}));
    assert!(a.status >= 400 && a.status < 500, "{} {}", a.status, a.body);
}
