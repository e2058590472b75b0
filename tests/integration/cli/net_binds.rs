//! Network and binds: --net loopback and none, --ro read-only, --rw reaching the host.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::{code, rsb, stderr, stdout, write};
use crate::util;

const ECHO_SERVER: &str = "import socket, threading\n\
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
port = s.getsockname()[1]\n\
def serve():\n\
\x20   c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()\n\
t = threading.Thread(target=serve, daemon=True); t.start()\n\
c = socket.create_connection(('127.0.0.1', port), timeout=5)\n\
c.sendall(b'ping'); print(c.recv(100).decode()); t.join()\n";

/// `--net loopback`: a server and client on 127.0.0.1 inside talk; `--net none` (the
/// default): nothing can be reached, not even 127.0.0.1: connecting fails with ENETUNREACH
/// (loopback is down) or EACCES (Landlock's TCP rules, where the kernel has them, deny it
/// first), and the only interface is `lo`.
#[test]
fn net_loopback_works_and_none_blocks() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    // Python with threads and sockets: seconds under emulation, hence the scaled allowance.
    let timeout = (10.0 * util::time_scale()).to_string();
    let o = rsb([
        "run",
        "--net",
        "loopback",
        "--timeout",
        &timeout,
        "-c",
        ECHO_SERVER,
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "PING\n"), "{o:?}");

    for net in [&["--net", "none"][..], &[][..]] {
        let mut args = vec!["run", "--timeout", &timeout];
        args.extend(net);
        args.extend(["-c", ECHO_SERVER]);
        let o = rsb(&args);
        assert_eq!(code(&o), 1, "{args:?}: {o:?}");
        let err = stderr(&o);
        assert!(
            err.contains("Network is unreachable") || err.contains("Permission denied"),
            "{args:?}: the server/client did not fail on the network: {err}"
        );
    }
    let connect = "import socket, errno\n\
                   try:\n\
                   \x20   socket.create_connection(('127.0.0.1', 80), timeout=5); print('connected')\n\
                   except OSError as e:\n\
                   \x20   print(errno.errorcode[e.errno])\n\
                   print(sorted(n for _, n in socket.if_nameindex()))";
    let o = rsb(["run", "--net", "none", "-c", connect]);
    assert_eq!(code(&o), 0, "{o:?}");
    let out = stdout(&o);
    // Landlock ABI 4+ denies TCP connect itself (EACCES); without it the down loopback
    // answers ENETUNREACH. Which one is decided by the kernel, not left open.
    let expected = if rsandbox::probe::host().landlock_abi >= 4 {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    assert_eq!(out, format!("{expected}\n['lo']\n"), "--net none: {out}");
    // With loopback up, the same connection reaches the (closed) port: refused, not unreachable.
    let o = rsb(["run", "--net", "loopback", "-c", connect]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "ECONNREFUSED\n['lo']\n"),
        "{o:?}"
    );
}

/// `--ro HOST:INSIDE` shows a host directory at INSIDE, read-only (writes fail with EROFS and
/// the host is unchanged).
#[test]
fn ro_bind_is_readable_and_not_writable() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(dir.path(), "f.txt", "host content\n", 0o644);
    let o = rsb([
        "run",
        "--ro",
        &format!("{}:/mnt/rsandbox-test-ro", dir.path().display()),
        "--",
        "/bin/sh",
        "-c",
        "cat /mnt/rsandbox-test-ro/f.txt; echo x > /mnt/rsandbox-test-ro/new.txt || echo write-failed; \
         echo y >> /mnt/rsandbox-test-ro/f.txt || echo append-failed",
    ]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(stdout(&o), "host content\nwrite-failed\nappend-failed\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f.txt")).unwrap(),
        "host content\n"
    );
}

/// `--rw`: a host directory is writable inside and what the program writes appears on the
/// host. Unprivileged, the sandbox user maps to the invoking user, so the caller's own
/// (0700) directory is writable and new files are the caller's. As root, the sandbox user maps
/// to an unprivileged host uid (1000000000+slot), so a root-owned 0755 directory is NOT
/// writable inside (no idmapped mount yet); a 0777 directory is, and files written there
/// belong to that host uid.
#[test]
fn rw_bind_is_writable_and_changes_reach_the_host() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uid = euid();
    if util::is_root() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = rsb([
        "run",
        "--rw",
        &format!("{}:/mnt/rsandbox-test-rw", dir.path().display()),
        "--",
        "/bin/sh",
        "-c",
        "echo from inside > /mnt/rsandbox-test-rw/out.txt && cat /mnt/rsandbox-test-rw/out.txt",
    ]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "from inside\n"),
        "{o:?}"
    );
    let host_file = dir.path().join("out.txt");
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "from inside\n"
    );
    let owner = std::fs::metadata(&host_file).unwrap().uid();
    if util::is_root() {
        let base = rsandbox::testing::ns::user::UID_BASE;
        assert!(
            (base..base + rsandbox::testing::ns::user::SLOTS).contains(&owner),
            "owner {owner} is not an instance uid"
        );
    } else {
        assert_eq!(
            owner, uid,
            "the file written inside is not the invoking user's"
        );
    }
}

/// This process's effective uid (the owner of /proc/self).
fn euid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}
