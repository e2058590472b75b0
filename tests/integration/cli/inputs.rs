//! What goes in: --file into the work dir, --env and the clean environment, --stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{code, rsb, stderr, stdout, write};
use crate::util;

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
