//! Landlock: writes the mount and DAC allow, what it grants, TCP with the network off, scopes.

use std::path::PathBuf;

use rsandbox::seccomp::Profile;
use rsandbox::{Command, Instance, Net, Outcome};

use super::{json_map, ok, with_profile};
use crate::util;

/// Runs Python code in a live instance.
fn py_in(inst: &Instance, code: &str) -> Outcome {
    inst.exec(&Command::python(code)).expect("exec")
}

/// Landlock refuses writes beneath paths it did not grant, through a mount that is writable
/// and files DAC lets the process write: /proc is mounted read-write, and a process owns its
/// /proc/self/comm (mode 0644) and may write its own attr/current. `access(W_OK)`, which
/// checks DAC and read-only mounts but not Landlock, says yes; `open(O_WRONLY)` gets EACCES.
/// The same without a seccomp filter, so seccomp is not the reason either.
#[test]
fn landlock_denies_writes_that_the_mount_and_dac_allow() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let code = r#"
import json, os
assert not os.statvfs("/proc").f_flag & os.ST_RDONLY
st = os.stat("/proc/self/comm")
assert st.st_uid == os.getuid() and st.st_mode & 0o200, st
out = {}
for p in ["/proc/self/comm", "/proc/thread-self/comm", "/proc/self/attr/current"]:
    assert os.access(p, os.W_OK), p
    try:
        os.close(os.open(p, os.O_WRONLY))
        out[p] = 0
    except OSError as e:
        out[p] = e.errno
print(json.dumps(out))
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let r = json_map(&util::py(&with_profile(profile.clone()), code));
        assert_eq!(r.len(), 3);
        for (path, errno) in &r {
            assert_eq!(
                *errno,
                libc::EACCES as i64,
                "{profile:?}: writing {path}: {r:?}"
            );
        }
    }
}

/// What Landlock grants still works: writing and reading back in the work dir, /tmp, /dev/shm
/// and a `--rw` bind (and the host sees the file), writing /dev/null and `> /dev/stdout`,
/// reading /etc/passwd, executing /usr/bin/true.
#[test]
fn landlock_grants_the_work_dir_tmp_shm_devices_and_rw_binds() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if util::is_root() {
        // As root the sandbox user is an unprivileged host uid (no idmapped mounts yet).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let sb = util::builder()
        .rw(dir.path(), Some(PathBuf::from("/mnt/rsandbox-test-rw")))
        .build()
        .unwrap();
    let script = "set -e
for d in /home/sandbox /tmp /dev/shm /mnt/rsandbox-test-rw; do
  mkdir $d/sub && echo \"in $d\" > $d/sub/f && cat $d/sub/f && mv $d/sub/f $d/sub/g && rm $d/sub/g && rmdir $d/sub
done
echo kept > /mnt/rsandbox-test-rw/kept
echo gone > /dev/null
echo to-stdout > /dev/stdout
grep -c '^sandbox:' /etc/passwd
/usr/bin/true && echo exec-ok";
    let o = util::sh(&sb, script);
    assert_eq!(
        ok(&o),
        "in /home/sandbox\nin /tmp\nin /dev/shm\nin /mnt/rsandbox-test-rw\nto-stdout\n1\nexec-ok\n",
        "{o:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kept")).unwrap(),
        "kept\n"
    );
}

/// With the network off (`Net::None`), Landlock refuses TCP bind and connect with EACCES. The
/// address is not the reason: a UDP socket (which Landlock does not handle) binds to the same
/// 127.0.0.1 in the same instance, and both go through the same address check in the kernel.
#[test]
fn landlock_denies_tcp_when_the_network_is_off() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    if rsandbox::probe::host().landlock_abi < 4 {
        eprintln!("SKIP: Landlock ABI < 4 has no network rules");
        return;
    }
    let code = r#"
import json, socket
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(json.dumps({
    "tcp_bind": errno_of(lambda: tcp.bind(("127.0.0.1", 0))),
    "udp_bind": errno_of(lambda: udp.bind(("127.0.0.1", 0))),
    "tcp_connect": errno_of(lambda: socket.socket().connect(("127.0.0.1", 9))),
}))
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let sb = util::builder()
            .seccomp(profile.clone())
            .net(Net::None)
            .build()
            .unwrap();
        let r = json_map(&util::py(&sb, code));
        assert_eq!(r["tcp_bind"], libc::EACCES as i64, "{profile:?}: {r:?}");
        assert_eq!(r["tcp_connect"], libc::EACCES as i64, "{profile:?}: {r:?}");
        assert_eq!(r["udp_bind"], 0, "{profile:?}: {r:?}");
    }
}

/// With `Net::Loopback` a TCP server and client on 127.0.0.1 work (Landlock handles no TCP
/// rights then).
#[test]
fn loopback_tcp_works_when_the_network_is_on() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import socket, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
def serve():
    c, _ = srv.accept()
    c.sendall(c.recv(16).upper())
    c.close()
t = threading.Thread(target=serve)
t.start()
cli = socket.create_connection(srv.getsockname())
cli.sendall(b"ping")
print(cli.recv(16).decode())
t.join()
"#;
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    assert_eq!(ok(&util::py(&sb, code)), "PING\n");
}

/// Landlock scopes (ABI 6+: signals and abstract unix sockets) are set on the instance's one
/// domain, which the reaper enters before it starts any program. Nothing outside that domain
/// is reachable from inside anyway (the pid and network namespaces hide every other process
/// and abstract socket), so the scopes cannot be shown apart from the namespaces here. What
/// can be shown: they do not split a session, since every run shares the domain. Run 1
/// leaves a `sleep` and an abstract-socket server behind; run 2 signals the one and connects
/// to the other.
#[test]
fn landlock_scopes_keep_a_session_together() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let inst = util::sandbox().create().unwrap();
    let start = r#"
import os, socket, subprocess
sleeper = subprocess.Popen(["/bin/sleep", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind("\0rsandbox-filters-test")
srv.listen()
if os.fork() == 0:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    c, _ = srv.accept()
    c.sendall(b"hello from run 1")
    c.close()
    os._exit(0)
print(sleeper.pid)
"#;
    let pid: i32 = ok(&py_in(&inst, start)).trim().parse().unwrap();
    let second = format!(
        r#"
import os, signal, socket, time
os.kill({pid}, signal.SIGTERM)
for _ in range(200):
    try:
        os.kill({pid}, 0)
        time.sleep(0.01)
    except ProcessLookupError:
        break
else:
    raise SystemExit("the sleep outlived SIGTERM")
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect("\0rsandbox-filters-test")
print(c.recv(64).decode())
"#
    );
    assert_eq!(ok(&py_in(&inst, &second)), "hello from run 1\n");
    inst.destroy().unwrap();
}
