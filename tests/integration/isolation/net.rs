//! Network: no network but a down loopback by default; a working loopback with `Net::Loopback`.

use rsandbox::Net;

use super::ok;
use crate::util;

/// Without network (the default) there is only `lo`, and it is down: UDP to 127.0.0.1 or
/// anywhere else (192.0.2.1, TEST-NET-1, never routed) fails with ENETUNREACH. TCP connects
/// fail too: EACCES where Landlock (ABI 4+) denies TCP when the network is off, else
/// ENETUNREACH from the empty namespace.
#[test]
fn net_none_has_only_a_down_loopback() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let landlock_abi: u32 = sb
        .enforcement()
        .landlock
        .strip_prefix("abi")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let tcp = if landlock_abi >= 4 {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    let o = util::py(
        &sb,
        "import socket, errno, fcntl, struct\n\
         print(socket.if_nameindex())\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         flags = struct.unpack('16sH14x', fcntl.ioctl(s.fileno(), 0x8913, struct.pack('16sH14x', b'lo', 0)))[1]\n\
         print('up' if flags & 1 else 'down')\n\
         def err(f):\n    \
             try:\n        \
                 f(); return 'ok'\n    \
             except OSError as e:\n        \
                 return errno.errorcode.get(e.errno, str(e))\n\
         for addr in [('127.0.0.1', 9), ('192.0.2.1', 9)]:\n    \
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
             t = socket.socket(); t.settimeout(2)\n    \
             print(err(lambda: u.sendto(b'x', addr)), err(lambda: u.connect(addr)), err(lambda: t.connect(addr)))",
    );
    assert_eq!(
        ok(&o),
        format!(
            "[(1, 'lo')]\ndown\nENETUNREACH ENETUNREACH {tcp}\nENETUNREACH ENETUNREACH {tcp}\n"
        )
    );
}

/// With `Net::Loopback`, `lo` is up and a server and client talk over 127.0.0.1 inside; the
/// rest of the world is still unreachable.
#[test]
fn net_loopback_works_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    let o = util::py(
        &sb,
        "import socket, threading, errno\n\
         print(socket.if_nameindex())\n\
         srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n\
         port = srv.getsockname()[1]\n\
         def serve():\n    \
             c, _ = srv.accept(); c.sendall(c.recv(100).upper()); c.close()\n\
         t = threading.Thread(target=serve); t.start()\n\
         c = socket.create_connection(('127.0.0.1', port), timeout=5)\n\
         c.sendall(b'ping'); print(c.recv(100).decode()); t.join()\n\
         c = socket.socket(); c.settimeout(2)\n\
         try:\n    \
             c.connect(('192.0.2.1', 80)); print('connected')\n\
         except OSError as e:\n    \
             print(errno.errorcode.get(e.errno, e))",
    );
    assert_eq!(ok(&o), "[(1, 'lo')]\nPING\nENETUNREACH\n");
}
