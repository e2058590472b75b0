//! Integration tests: the `rsandbox` command line (run and check): scripts, pass-through and
//! exit codes, --json, files, env and stdin, options and their defaults, errors, network, binds.
//! A file per theme, below; the helpers that run the CLI and read its output are here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util;

// Running: scripts by kind, output and exit codes passed through, --json, programs after --.
mod run;
// What goes in: --file into the work dir, --env and the clean environment, --stdin.
mod inputs;
// Options: --help with every default, clear errors for bad input, limit options, check.
mod options;
// Network and binds: --net loopback and none, --ro read-only, --rw reaching the host.
mod net_binds;

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
