//! Syscall and filesystem filters, proven by real attempts inside instances: the seccomp profiles
//! (default, strict, Docker's), Landlock (files, TCP, scopes), `--strict`, and the report's
//! `enforcement` and `seccomp_violation` (DESIGN.md §3 step 7, §5, §8).
//!
//! A denial counts only when rsandbox is the reason: each seccomp attempt is also made in an
//! instance without the filter (`Profile::Unconfined`) and must get a different answer there;
//! where the kernel alone would already answer the same (no capability, x32 compiled out), the
//! test evaluates the compiled BPF program on the same call instead. Landlock denials go
//! through paths that are mounted writable and that DAC allows, so nothing but Landlock can
//! refuse them.
//!
//! A file per theme, below; the helpers and the attempt-script prelude they share are here.

use std::collections::BTreeMap;

use rsandbox::seccomp::Profile;
use rsandbox::{Outcome, Sandbox, Status};

use crate::util;

// The default profile's denials: each dangerous syscall's errno, user namespaces, personality.
mod denials;
// Non-native ABIs: i386 `int 0x80` and x32 calls refused with ENOSYS under every profile.
mod abi;
// The strict profile and `--strict`: ENOSYS for unlisted calls, kills named in the report.
mod strict;
// Ordinary programs keep working: CPython's own suites under strict, sqlite3, default, Docker's.
mod compat;
// Landlock: writes the mount and DAC allow, what it grants, TCP with the network off, scopes.
mod landlock;

/// A sandbox with the given seccomp profile and the test defaults.
fn with_profile(profile: Profile) -> Sandbox {
    util::builder()
        .seccomp(profile)
        .build()
        .expect("building the sandbox")
}

/// Asserts a run ended with exit 0, showing its report otherwise; returns its stdout.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// Parses the `{"name": number}` JSON object a script printed on its last line.
fn json_map(o: &Outcome) -> BTreeMap<String, i64> {
    let out = ok(o);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {out:?}"))
}

/// Docker's default profile (a copy in tests/data), written to a temp dir: in CI the
/// unprivileged pass may not be able to read the source tree. Keep the dir while it is used.
fn docker_profile() -> (tempfile::TempDir, Profile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-default-seccomp.json");
    std::fs::write(
        &path,
        include_str!("../../data/docker-default-seccomp.json"),
    )
    .unwrap();
    (dir, Profile::File(path))
}

/// Python helpers: `raw(nr, *args)` makes one syscall through libc and returns (result,
/// errno); `attempt(nr, *args)` makes it in a forked child and returns its errno (0 when it
/// succeeded), so a call the filter should have stopped cannot change the script's process.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def raw(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & 0xffffffffffffffff) for a in args])
    return r, (ctypes.get_errno() if r == -1 else 0)
def attempt(nr, *args):
    pid = os.fork()
    if pid == 0:
        os._exit(raw(nr, *args)[1])
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
def attempt_clone(flags):
    pid = os.fork()
    if pid == 0:
        r, e = raw(SYS_CLONE, flags, 0, 0, 0, 0)
        if r == 0:
            os._exit(0)
        if r > 0:
            os.waitpid(r, 0)
        os._exit(e)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
"#;

/// The prelude with `SYS_CLONE` defined.
fn prelude() -> String {
    format!("SYS_CLONE = {}\n{PRELUDE}", libc::SYS_clone)
}
