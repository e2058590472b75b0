//! Network: host listeners, raw sockets, AF_VSOCK, io_uring; other instances' loopback listeners.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rsandbox::seccomp::Profile;
use rsandbox::Net;

use super::{attack, attack_in, expect_all, nanos, open_tempdir, s};
use crate::util;

/// Non-blocking host listeners the network tests try to reach: TCP and UDP on 127.0.0.1 and
/// ::1 (when the host has IPv6 on lo), an abstract and a path unix socket.
struct HostListeners {
    tcp4: std::net::TcpListener,
    tcp6: Option<std::net::TcpListener>,
    udp4: std::net::UdpSocket,
    udp6: Option<std::net::UdpSocket>,
    abstract_name: String,
    abstract_sock: std::os::unix::net::UnixListener,
    path_sock: std::os::unix::net::UnixListener,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostListeners {
    fn new() -> HostListeners {
        use std::os::linux::net::SocketAddrExt;
        let tcp4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp6 = std::net::TcpListener::bind("[::1]:0").ok();
        let udp4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp6 = std::net::UdpSocket::bind("[::1]:0").ok();
        let abstract_name = format!("rsandbox-hostile-{}-{}", std::process::id(), nanos());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let abstract_sock = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let dir = open_tempdir();
        let path = dir.path().join("host.sock");
        let path_sock = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        tcp4.set_nonblocking(true).unwrap();
        udp4.set_nonblocking(true).unwrap();
        abstract_sock.set_nonblocking(true).unwrap();
        path_sock.set_nonblocking(true).unwrap();
        for t in tcp6.iter() {
            t.set_nonblocking(true).unwrap();
        }
        for u in udp6.iter() {
            u.set_nonblocking(true).unwrap();
        }
        HostListeners {
            tcp4,
            tcp6,
            udp4,
            udp6,
            abstract_name,
            abstract_sock,
            path_sock,
            path,
            _dir: dir,
        }
    }

    fn port(a: std::io::Result<std::net::SocketAddr>) -> u16 {
        a.unwrap().port()
    }

    /// Python assignments naming the targets.
    fn targets(&self) -> String {
        format!(
            "TCP4 = {}\nTCP6 = {}\nUDP4 = {}\nUDP6 = {}\nABSTRACT = {:?}\nPATH = {:?}\n",
            Self::port(self.tcp4.local_addr()),
            self.tcp6.as_ref().map_or(9, |t| Self::port(t.local_addr())),
            Self::port(self.udp4.local_addr()),
            self.udp6.as_ref().map_or(9, |u| Self::port(u.local_addr())),
            self.abstract_name,
            self.path.display().to_string(),
        )
    }

    /// Asserts nothing reached any listener.
    fn assert_untouched(&self) {
        let would_block = |r: std::io::Result<()>, what: &str| match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the host's {what} was reached: {other:?}"),
        };
        let mut buf = [0u8; 64];
        would_block(self.tcp4.accept().map(drop), "TCP 127.0.0.1 listener");
        if let Some(t) = &self.tcp6 {
            would_block(t.accept().map(drop), "TCP ::1 listener");
        }
        would_block(self.udp4.recv(&mut buf).map(drop), "UDP 127.0.0.1 socket");
        if let Some(u) = &self.udp6 {
            would_block(u.recv(&mut buf).map(drop), "UDP ::1 socket");
        }
        would_block(
            self.abstract_sock.accept().map(drop),
            "abstract unix socket",
        );
        would_block(self.path_sock.accept().map(drop), "path unix socket");
    }
}

/// The attempts against the host's listeners and the raw families, from inside.
const NET_ATTACK: &str = r#"
import socket, time
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2)
    return err(lambda: s.connect(addr))
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    return err(lambda: s.sendto(b'pwned', addr))
out['tcp4'] = tcp(socket.AF_INET, ('127.0.0.1', TCP4))
out['tcp6'] = tcp(socket.AF_INET6, ('::1', TCP6))
out['udp4'] = udp(socket.AF_INET, ('127.0.0.1', UDP4))
out['udp6'] = udp(socket.AF_INET6, ('::1', UDP6))
out['udp4_bcast'] = udp(socket.AF_INET, ('255.255.255.255', UDP4))
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out['abstract'] = err(lambda: u.connect('\0' + ABSTRACT))
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out['path'] = err(lambda: u.connect(PATH))
out['packet'] = err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
out['packet_dgram'] = err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300))
out['vsock'] = err(lambda: socket.socket(40, socket.SOCK_STREAM))
out['raw_icmp'] = err(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
out['raw_icmp6'] = err(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
out['ping_dgram'] = err(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
out['netlink_route_ok'] = err(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
out['io_uring'] = raw(425, 8, (ctypes.c_char * 120)())
unix_table = open('/proc/net/unix').read()
out['unix_table_leaks'] = [n for n in (ABSTRACT, PATH) if n in unix_table]
out['ifaces'] = [n for _, n in socket.if_nameindex()]
"#;

/// With `--net none` nothing on the host is reachable, whatever the family: the test listens
/// on 127.0.0.1 and ::1 (TCP and UDP) and on an abstract and a path unix socket, and none of
/// them hears anything. TCP gets Landlock's EACCES (ABI 4+), UDP ENETUNREACH from the empty
/// namespace (EADDRNOTAVAIL for ::1, which a down lo does not even have); the host's abstract socket does not exist in the instance's network namespace
/// (ECONNREFUSED) nor its path in the mount namespace (ENOENT), and neither shows in
/// /proc/net/unix. AF_PACKET and raw ICMP need CAP_NET_RAW (EPERM), ICMP datagram sockets are
/// closed by the namespace's ping_group_range (EACCES), AF_VSOCK and io_uring (whose socket
/// operations seccomp would never see) get the profile's EPERM: without the filter both
/// succeed, so the filter is the reason.
#[test]
fn none_reaches_no_host_listener_or_raw_family() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let l = HostListeners::new();
    if l.tcp6.is_none() {
        eprintln!("NOTE: no IPv6 on the host's loopback: the ::1 attempts target a closed port");
    }
    let body = format!("{}{NET_ATTACK}", l.targets());
    let sb = util::builder().net(Net::None).build().unwrap();
    let landlock_tcp = sb
        .enforcement()
        .landlock
        .strip_prefix("abi")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 4);
    let r = attack(&sb, &body);
    let tcp = if landlock_tcp {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    assert_eq!(s(&r, "tcp4"), tcp, "{r:#?}");
    assert_eq!(s(&r, "tcp6"), tcp, "{r:#?}");
    expect_all(
        &r,
        &["udp4", "udp4_bcast"],
        "ENETUNREACH",
        "no interface up",
    );
    assert_eq!(
        s(&r, "udp6"),
        "EADDRNOTAVAIL",
        "::1 is not even assigned while lo is down"
    );
    assert_eq!(s(&r, "abstract"), "ECONNREFUSED");
    assert_eq!(s(&r, "path"), "ENOENT");
    expect_all(
        &r,
        &["packet", "packet_dgram", "raw_icmp", "raw_icmp6"],
        "EPERM",
        "no CAP_NET_RAW",
    );
    assert_eq!(s(&r, "ping_dgram"), "EACCES", "ping_group_range");
    expect_all(&r, &["vsock", "io_uring"], "EPERM", "seccomp");
    assert_eq!(s(&r, "netlink_route_ok"), "ok");
    assert_eq!(r["unix_table_leaks"], serde_json::json!([]));
    assert_eq!(r["ifaces"], serde_json::json!(["lo"]));
    let bare = attack(
        &util::builder()
            .net(Net::None)
            .seccomp(Profile::Unconfined)
            .build()
            .unwrap(),
        &body,
    );
    assert_eq!(s(&bare, "io_uring"), "ok", "allowed by the kernel alone");
    // A kernel without vsock (as the v2 guest's) answers EAFNOSUPPORT, on the host as inside:
    // still not the EPERM the profile gives above.
    // SAFETY: socket(2) with constant arguments; the fd is closed at once.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    let host_vsock = if fd >= 0 {
        unsafe { libc::close(fd) };
        "ok"
    } else {
        "EAFNOSUPPORT"
    };
    assert_eq!(
        s(&bare, "vsock"),
        host_vsock,
        "as the host's kernel alone answers: {bare:#?}"
    );
    assert_eq!(s(&bare, "tcp4"), tcp, "{bare:#?}");
    l.assert_untouched();
}

/// Loopback listeners stay in their instance: with `Net::Loopback`, instance A serves on
/// 127.0.0.1:P and an abstract socket; instance B (also with loopback) connecting to the
/// same port and name is refused, and so is A reaching the host's listener; A itself
/// reaches its own (the control).
#[test]
fn loopback_listeners_stay_in_their_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let l = HostListeners::new();
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    let serve = r#"
import socket, subprocess, sys
code = '''
import socket, os, time
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 4242)); t.listen()
u = socket.socket(socket.AF_UNIX); u.bind("\\0rsandbox-hostile-lo"); u.listen()
print("up", flush=True)
time.sleep(60)
'''
p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
out['server'] = p.stdout.readline().decode().strip()
"#;
    let r = attack_in(&a, serve);
    assert_eq!(s(&r, "server"), "up");
    let probe = format!(
        "{}import socket\n\
         def tcp(port):\n    \
             s = socket.socket(); s.settimeout(2)\n    \
             return err(lambda: s.connect(('127.0.0.1', port)))\n\
         out['own_port'] = tcp(4242)\n\
         u = socket.socket(socket.AF_UNIX)\n\
         out['own_abstract'] = err(lambda: u.connect('\\0rsandbox-hostile-lo'))\n\
         out['host_tcp'] = tcp(TCP4)\n",
        l.targets()
    );
    let ra = attack_in(&a, &probe);
    let rb = attack_in(&b, &probe);
    assert_eq!(
        s(&ra, "own_port"),
        "ok",
        "the control: A reaches its own server"
    );
    assert_eq!(s(&ra, "own_abstract"), "ok");
    assert_eq!(s(&rb, "own_port"), "ECONNREFUSED", "B reached A's listener");
    assert_eq!(
        s(&rb, "own_abstract"),
        "ECONNREFUSED",
        "B reached A's socket"
    );
    assert_eq!(s(&ra, "host_tcp"), "ECONNREFUSED", "A reached the host");
    assert_eq!(s(&rb, "host_tcp"), "ECONNREFUSED");
    a.destroy().unwrap();
    b.destroy().unwrap();
    l.assert_untouched();
}
