//! Integration tests: copying files into and out of an instance's work dir (put_file, get_file,
//! Command::file): ownership and modes, refused paths, planted and racing symlinks, limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rsandbox::{Command, Error, Instance, Status};

use crate::util;

fn sh(script: &str) -> Command {
    Command::new("/bin/sh").args(["-c", script])
}

/// Runs `sh -c script` in `inst`, asserting it exits 0, and returns its stdout.
fn run_ok(inst: &Instance, script: &str) -> String {
    let out = inst.exec(&sh(script)).unwrap();
    assert_eq!(out.status, Status::Ok, "{script}: {out:?}");
    out.stdout.unwrap_or_default()
}

fn assert_path_err<T: std::fmt::Debug>(r: rsandbox::Result<T>, what: &str) -> String {
    match r {
        Err(e @ Error::Path { .. }) => e.to_string(),
        other => panic!("{what}: expected Error::Path, got {other:?}"),
    }
}

/// A file put into the work dir comes back byte for byte; parent directories are created;
/// inside, the file and its directories belong to the sandbox user (1000), the mode is kept
/// minus setuid/setgid bits, and the program can write to it.
#[test]
fn put_and_get_round_trip_with_owner_and_mode() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    inst.put_file("a/b/c.bin", &data, 0o6755).unwrap();
    assert_eq!(inst.get_file("a/b/c.bin", 1 << 20).unwrap(), data);
    // The same file through its absolute path inside.
    assert_eq!(
        inst.get_file("/home/sandbox/a/b/c.bin", 1 << 20).unwrap(),
        data
    );

    inst.put_file("plain.txt", b"hello\n", 0o600).unwrap();
    let stat = run_ok(&inst, "stat -c '%u %g %a %n' a a/b a/b/c.bin plain.txt");
    assert_eq!(
        stat,
        "1000 1000 755 a\n1000 1000 755 a/b\n1000 1000 755 a/b/c.bin\n1000 1000 600 plain.txt\n"
    );
    assert_eq!(run_ok(&inst, "id -u; cat plain.txt"), "1000\nhello\n");

    // The program owns it: it can append, and the change comes back out.
    run_ok(
        &inst,
        "echo more >> plain.txt && echo new > a/b/made-inside.txt",
    );
    assert_eq!(inst.get_file("plain.txt", 100).unwrap(), b"hello\nmore\n");
    assert_eq!(inst.get_file("a/b/made-inside.txt", 100).unwrap(), b"new\n");

    // put_file over an existing file replaces its content.
    inst.put_file("plain.txt", b"replaced", 0o644).unwrap();
    assert_eq!(
        run_ok(&inst, "cat plain.txt; stat -c ' %a' plain.txt"),
        "replaced 644\n"
    );
    inst.destroy().unwrap();
}

/// Paths that are empty, contain `.`/`..` or NUL, or are absolute outside /home/sandbox are
/// refused with Error::Path, for put_file and get_file alike, before touching anything.
#[test]
fn bad_paths_are_refused() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    for bad in [
        "",
        "/",
        ".",
        "..",
        "../x",
        "a/../../x",
        "a/./b",
        "/etc/passwd",
        "/home/sandboxx/f",
        "/tmp/x",
        "a\0b",
    ] {
        let msg = assert_path_err(
            inst.put_file(bad, b"x", 0o644),
            &format!("put_file({bad:?})"),
        );
        assert!(msg.contains("refused path"), "{msg}");
        assert_path_err(inst.get_file(bad, 100), &format!("get_file({bad:?})"));
    }
    // Nothing was created by the refused calls.
    assert_eq!(
        run_ok(&inst, "ls -A; test -e /tmp/x || echo no-tmp-x"),
        "no-tmp-x\n"
    );
    // A missing file, a directory and an oversized file are refused on the way out too.
    assert_path_err(inst.get_file("missing", 100), "get_file(missing)");
    run_ok(&inst, "mkdir dir; head -c 1000 /dev/zero > big");
    let msg = assert_path_err(inst.get_file("dir", 100), "get_file(dir)");
    assert!(msg.contains("not a regular file"), "{msg}");
    let msg = assert_path_err(inst.get_file("big", 999), "get_file(big)");
    assert!(msg.contains("over the limit"), "{msg}");
    assert_eq!(inst.get_file("big", 1000).unwrap().len(), 1000);
    inst.destroy().unwrap();
}

/// Symlinks planted by the program are never followed by the supervisor: a link to
/// /etc/passwd, a linked directory component (to / and to a relative `..`), and writing
/// through a link to /tmp all fail, and nothing is written outside the work dir.
#[test]
fn planted_symlinks_are_not_followed() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    run_ok(&inst, "ln -s /etc/passwd x; ln -s / d; ln -s /tmp t; ln -s ../.. up; ln -s /tmp/y y; ln -s . self");

    let msg = assert_path_err(inst.get_file("x", 1 << 20), "get_file(x -> /etc/passwd)");
    assert!(msg.contains("symlink"), "{msg}");
    assert_path_err(
        inst.get_file("d/etc/passwd", 1 << 20),
        "get_file(d/etc/passwd, d -> /)",
    );
    assert_path_err(
        inst.get_file("up/etc/passwd", 1 << 20),
        "get_file(up/etc/passwd, up -> ../..)",
    );
    assert_path_err(inst.get_file("self/x", 1 << 20), "get_file(self/x)");

    assert_path_err(
        inst.put_file("t/x", b"escaped", 0o644),
        "put_file(t/x, t -> /tmp)",
    );
    assert_path_err(
        inst.put_file("y", b"escaped", 0o644),
        "put_file(y -> /tmp/y)",
    );
    assert_path_err(
        inst.put_file("t/new/deeper", b"escaped", 0o644),
        "put_file(t/new/deeper)",
    );
    assert_path_err(
        inst.put_file("d/tmp/z", b"escaped", 0o644),
        "put_file(d/tmp/z)",
    );
    // Nothing appeared in the instance's /tmp, and the links are unchanged.
    assert_eq!(
        run_ok(&inst, "ls -A /tmp; readlink x y"),
        "/etc/passwd\n/tmp/y\n"
    );
    // Nor on the host (as root, a followed link would have written to the host's /tmp).
    for p in ["/tmp/x", "/tmp/y", "/tmp/z"] {
        if let Ok(s) = std::fs::read(p) {
            assert_ne!(s, b"escaped", "{p} was written on the host");
        }
    }
    inst.destroy().unwrap();
}

/// A FIFO or other special file planted in the work dir is refused by get_file and put_file
/// without blocking the supervisor (opening a FIFO with no writer would hang).
#[test]
fn special_files_are_refused_without_blocking() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    run_ok(&inst, "mkfifo p");
    let start = Instant::now();
    let msg = assert_path_err(inst.get_file("p", 100), "get_file(fifo)");
    assert!(msg.contains("not a regular file"), "{msg}");
    assert_path_err(inst.put_file("p", b"x", 0o644), "put_file(fifo)");
    assert!(
        start.elapsed() < util::allow(2.0),
        "took {:?}",
        start.elapsed()
    );
    inst.destroy().unwrap();
}

/// While a program swaps `d` between a real directory and a symlink to /etc (and `f` between
/// a file and a symlink to /etc/passwd) as fast as it can with renameat2(RENAME_EXCHANGE),
/// hundreds of get_file/put_file calls through those names either fail or see only the work
/// dir's own content: never /etc/passwd, and no file is created in /etc inside or on the host.
#[test]
fn symlink_swapped_during_copies_never_escapes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    let name = format!("rsandbox-race-{}", std::process::id());
    let swapper = r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
def exchange(a, b):
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), 'renameat2')
os.mkdir('d')
with open('d/passwd', 'w') as f: f.write('inside\n')
with open('f', 'w') as f: f.write('inside\n')
os.symlink('/etc', 'dl')
os.symlink('/etc/passwd', 'fl')
open('ready', 'w').close()
n = 0
end = time.monotonic() + 2
while time.monotonic() < end:
    exchange(b'd', b'dl')
    exchange(b'f', b'fl')
    n += 1
print(n)
"#;
    let done = AtomicBool::new(false);
    let (mut attempts, mut ok_get, mut ok_put) = (0u32, 0u32, 0u32);
    let swaps = std::thread::scope(|s| {
        let bg = s.spawn(|| {
            let out = inst.exec(&Command::python(swapper));
            done.store(true, Ordering::SeqCst);
            out
        });
        // Wait for the swapper's setup, then hammer until it stops.
        let t0 = Instant::now();
        while inst.get_file("ready", 10).is_err() && !done.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < util::allow(10.0),
                "the swapper never got ready"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        while !done.load(Ordering::SeqCst) || attempts < 300 {
            attempts += 1;
            for p in ["d/passwd", "f", "dl/passwd", "fl"] {
                if let Ok(data) = inst.get_file(p, 1 << 20) {
                    assert_eq!(
                        data, b"inside\n",
                        "get_file({p}) returned content from outside the work dir"
                    );
                    ok_get += 1;
                }
            }
            for dir in ["d", "dl"] {
                if inst
                    .put_file(
                        &format!("{dir}/{name}"),
                        b"written by the supervisor\n",
                        0o644,
                    )
                    .is_ok()
                {
                    ok_put += 1;
                }
            }
        }
        bg.join().unwrap()
    })
    .unwrap();
    assert_eq!(swaps.status, Status::Ok, "{swaps:?}");
    let swaps: u64 = swaps.stdout.as_deref().unwrap().trim().parse().unwrap();
    eprintln!("{swaps} swaps; {attempts} rounds; {ok_get} reads and {ok_put} writes succeeded");
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    assert!(attempts >= 300);

    // Nothing was written through /etc: not inside, not in the template, not on the host.
    assert!(
        !std::path::Path::new("/etc").join(&name).exists(),
        "/etc/{name} appeared on the host"
    );
    assert!(
        !sb.template_dir().join("etc").join(&name).exists(),
        "{name} appeared in the template's /etc"
    );
    let inside = run_ok(
        &inst,
        &format!(
            "test -e /etc/{name} && echo LEAK; ls -A d dl 2>/dev/null | grep -c {name} || true"
        ),
    );
    assert!(!inside.contains("LEAK"), "/etc/{name} appeared inside");
    if ok_put > 0 {
        // The successful writes landed in the real directory, whichever name it has now.
        assert_ne!(
            inside.trim(),
            "0",
            "successful put_file calls left no file in the real directory"
        );
    }
    inst.destroy().unwrap();
}

/// Files attached with Command::file are in place before the program starts, relative to the
/// work dir, which is the program's cwd and HOME.
#[test]
fn command_files_are_copied_before_start_into_the_cwd() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let cmd = sh("pwd; echo $HOME; cat in.txt; ./tool.sh; cat sub/dir/data")
        .file("in.txt", "hello", 0o644)
        .file("tool.sh", "#!/bin/sh\necho tool ran\n", 0o755)
        .file("sub/dir/data", vec![b'z'; 3], 0o600);
    let out = sb.run(&cmd).unwrap();
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(
        out.stdout.as_deref(),
        Some("/home/sandbox\n/home/sandbox\nhellotool ran\nzzz")
    );

    // A Python script attached as a file, run with python_script.
    let out = sb
        .run(&Command::python_script("job.py").arg("x").file(
            "job.py",
            "import sys, os; print(os.getcwd(), sys.argv[1:])",
            0o644,
        ))
        .unwrap();
    assert_eq!(out.stdout.as_deref(), Some("/home/sandbox ['x']\n"));

    // A refused path in Command::file fails the run before anything starts.
    let r = sb.run(&sh("echo should not run").file("../escape", "x", 0o644));
    assert_path_err(r, "Command::file(../escape)");
}

/// In one instance, files persist across execs and across put_file/get_file in both directions.
#[test]
fn files_persist_across_execs_in_one_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    run_ok(&inst, "echo 1 > counter");
    run_ok(&inst, "echo $(( $(cat counter) + 1 )) > counter");
    inst.put_file("note", b"from the host\n", 0o644).unwrap();
    let out = inst
        .exec(&sh("cat counter note").file("extra", "attached\n", 0o644))
        .unwrap();
    assert_eq!(out.stdout.as_deref(), Some("2\nfrom the host\n"));
    assert_eq!(run_ok(&inst, "cat extra"), "attached\n");
    assert_eq!(inst.get_file("counter", 10).unwrap(), b"2\n");
    // A fresh instance of the same sandbox starts with an empty work dir.
    let other = sb.create().unwrap();
    assert_eq!(run_ok(&other, "ls -A | wc -l"), "0\n");
    other.destroy().unwrap();
    inst.destroy().unwrap();
}

/// A file bigger than the work dir (--work-size) fails with Error::Path saying the work dir
/// is full, through put_file and through Command::file, and the instance stays usable.
#[test]
fn file_bigger_than_the_work_dir_is_a_clear_error() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().work_size(1 << 20).build().unwrap();
    let inst = sb.create().unwrap();
    let big = vec![7u8; 2 << 20];
    let msg = assert_path_err(
        inst.put_file("big.bin", &big, 0o644),
        "put_file(2 MiB into 1 MiB)",
    );
    assert!(msg.contains("work dir is full"), "{msg}");
    let msg = assert_path_err(
        inst.exec(&sh("true").file("big2.bin", big, 0o644)),
        "Command::file(2 MiB)",
    );
    assert!(msg.contains("work dir is full"), "{msg}");
    // Still usable: remove the partial files and a small file fits.
    run_ok(&inst, "rm -f big.bin big2.bin");
    inst.put_file("small", b"fits", 0o644).unwrap();
    assert_eq!(run_ok(&inst, "cat small"), "fits");
    // The program hits the same limit with ENOSPC.
    let out = inst.exec(&sh("head -c 2000000 /dev/zero > fill")).unwrap();
    assert_eq!(out.status, Status::Exit);
    assert!(
        out.stderr
            .as_deref()
            .unwrap()
            .contains("No space left on device"),
        "{out:?}"
    );
    inst.destroy().unwrap();
}
