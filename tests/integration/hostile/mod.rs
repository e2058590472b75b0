//! Hostile programs: real attacks, each run inside rsandbox with default settings, asserting
//! that it failed for the reason rsandbox gives (the errno of the layer that stops it: EPERM
//! from seccomp, EROFS from a read-only mount, EACCES from Landlock or an absent capability,
//! ENOSYS for a foreign ABI) and that the host is unchanged afterwards (DESIGN.md §8). Where
//! two layers answer alike, the compiled BPF program or a run without the filter shows which
//! one it was. The README's "Security model" maps each defended (and undefended) attack to the
//! cases here; cases that other modules already prove are referenced there, not repeated.
//!
//! One module per kind of attack (below); the attack-script prelude and the helpers they share
//! are here.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};
use rsandbox::{Command, Instance, Outcome, Sandbox, Status};
use serde_json::Value;

use crate::util;

// Filesystem escapes: read-only mounts, the mount API, chroot and `..`, propagation, fds, cwd.
mod fs;
// /proc: `/proc/*/exe` writes, sysrq, core_pattern, kcore, oom_score_adj, host processes' view.
mod proc;
// Privilege: capabilities, setuid, nested userns and setns, release_agent, nice, clock, hostname.
mod privilege;
// Syscalls through every ABI: each denied call natively, through i386 `int 0x80` and as x32.
mod syscalls;
// Terminal injection: TIOCSTI and TIOCLINUX with rsandbox on a real pseudo-terminal.
mod terminal;
// Network: host listeners, raw sockets, AF_VSOCK, io_uring; other instances' loopback listeners.
mod net;
// Signals and processes: fork and thread bombs, stopped trees, signal-ignoring daemons.
mod processes;
// Resource exhaustion: reservations, CPU spinners, output floods, full tmpfs, fds, SysV IPC.
mod resources;
// Leaks between runs and concurrent instances; the shared kernel's known gaps (flock, inotify).
mod leaks;

/// Python helpers every attack script starts with: `name(errno)`, `err(f)` (the errno name of
/// an OSError raised by `f`, or 'ok'), `raw(nr, *args)` (one syscall through libc: 'ok' or the
/// errno name) and `attempt(nr, *args)` (the same in a forked child, so a call that should
/// have been stopped cannot change the script's own process; a clone child leaves at once).
/// Results go into `out`, printed as JSON on the last line by `done()`.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def name(e):
    return errno.errorcode.get(e, str(e))
def err(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return name(e.errno)
def arg(a):
    if not isinstance(a, int):
        return a
    return ctypes.c_ulong(a & 0xffffffffffffffff)
def raw(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return 'ok' if r >= 0 else name(ctypes.get_errno())
def attempt(nr, *args):
    r, w = os.pipe()
    me = os.fork()
    if me == 0:
        pid = os.getpid()
        res = raw(nr, *args)
        if os.getpid() != pid:
            os._exit(0)
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    res = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(me, 0)
    return res
def done():
    print(json.dumps(out))
"#;

/// Asserts a run ended with exit 0, showing its report otherwise; returns its stdout.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// Runs an attack script (the prelude, `body`, then `done()`) and returns its `out`.
fn attack(sb: &Sandbox, body: &str) -> BTreeMap<String, Value> {
    parse(&util::py(sb, &script(body)))
}

/// The same in a live instance.
fn attack_in(inst: &Instance, body: &str) -> BTreeMap<String, Value> {
    parse(&inst.exec(&Command::python(script(body))).expect("exec"))
}

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}\ndone()\n")
}

fn parse(o: &Outcome) -> BTreeMap<String, Value> {
    let out = ok(o);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON result ({e}): {out:?}\n{o:#?}"))
}

/// `r[key]` as a string (errno names and 'ok' are strings).
fn s<'a>(r: &'a BTreeMap<String, Value>, key: &str) -> &'a str {
    r.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {r:?}"))
}

/// Asserts each listed key of `r` holds `want`.
fn expect_all(r: &BTreeMap<String, Value>, keys: &[&str], want: &str, why: &str) {
    for k in keys {
        assert_eq!(s(r, k), want, "{k}: expected {want} ({why}); all: {r:#?}");
    }
}

/// A sandbox with the test defaults and the given seccomp profile.
fn with_profile(p: Profile) -> Sandbox {
    util::builder().seccomp(p).build().unwrap()
}

/// The default profile's compiled verdict on (arch, nr, args): shows the filter is the reason
/// where the kernel alone would answer the same.
fn verdict(arch: u32, nr: i64, args: &[u64]) -> Verdict {
    static DEFAULT: OnceLock<rsandbox::testing::seccomp::Compiled> = OnceLock::new();
    let c = DEFAULT.get_or_init(|| {
        rsandbox::testing::seccomp::load(&Profile::Default)
            .unwrap()
            .unwrap()
    });
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    bpf::run(&c.program, &bpf::Data::new(arch, nr as i32, a)).unwrap()
}

fn eperm_verdict(nr: i64, args: &[u64]) {
    assert_eq!(
        verdict(bpf::AUDIT_ARCH_X86_64, nr, args),
        Verdict::Errno(libc::EPERM as u16),
        "syscall {nr} {args:?}: the default profile must answer EPERM"
    );
}

/// A hash of a file's bytes, to show host binaries unchanged.
fn file_hash(p: &Path) -> (u64, u64) {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        len += n as u64;
        h.write(&buf[..n]);
    }
    (len, h.finish())
}

/// A temp dir the sandbox user may use: as root the instance's host uid is an unprivileged one,
/// so the directory is opened up (0777), like its files.
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
