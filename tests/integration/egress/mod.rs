//! Egress through rsandbox's proxy (networks `allowlist` and `all`): loopback test servers
//! stand for destinations; the only outside host is the package index pip is configured with.
//! Blocking is tested with loopback ports only: no packet ever goes to a private range.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

// Allowed and unlisted loopback ports, `all`, SOCKS, flood and garbage, bad patterns.
mod loopback;
// HTTPS to the package index through CONNECT, pip inside a run, a raw connection bypassing it.
mod index;
// The daemon: a request's policy, sessions keeping theirs, --max-network, /metrics.
mod daemon;

/// A probe run inside the instance: each argument is `get:HOST:PORT` (plain HTTP through
/// 3128), `connect:HOST:PORT` (CONNECT through 3128, then a GET in the tunnel) or
/// `socks:HOST:PORT` (SOCKS5 through 1080, then a GET); prints `ACTION TARGET RESULT` per
/// argument, where RESULT is the HTTP status (`200`, `403`...), `socksN` for a SOCKS reply
/// code, or the error.
pub const PROBE: &str = r#"
import socket, sys
def recv_all(s):
    data = b''
    while True:
        c = s.recv(65536)
        if not c:
            return data
        data += c
def head(s):
    data = b''
    while b'\r\n\r\n' not in data:
        c = s.recv(1)
        if not c:
            break
        data += c
    return data
def get(s, t):
    s.sendall(('GET / HTTP/1.0\r\nHost: %s\r\n\r\n' % t).encode())
    r = recv_all(s)
    return r.split(b' ')[1].decode() + ':' + r.split(b'\r\n\r\n', 1)[-1].decode()
def run(action, t):
    s = socket.create_connection(('127.0.0.1', 1080 if action == 'socks' else 3128), timeout=20)
    if action == 'get':
        s.sendall(('GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n' % (t, t)).encode())
        r = recv_all(s)
        return r.split(b' ')[1].decode() + ':' + r.split(b'\r\n\r\n', 1)[-1].decode().strip()
    if action == 'connect':
        s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (t, t)).encode())
        code = head(s).split(b' ')[1].decode()
        return 'tunnel:' + get(s, t) if code == '200' else code
    host, port = t.rsplit(':', 1)
    host = host.strip('[]').encode()
    s.sendall(b'\x05\x01\x00')
    if s.recv(2) != b'\x05\x00':
        return 'socks-method-refused'
    s.sendall(b'\x05\x01\x00\x03' + bytes([len(host)]) + host + int(port).to_bytes(2, 'big'))
    r = s.recv(10)
    return 'tunnel:' + get(s, t) if r[1] == 0 else 'socks%d' % r[1]
for arg in sys.argv[1:]:
    action, t = arg.split(':', 1)
    try:
        print(action, t, run(action, t), flush=True)
    except OSError as e:
        print(action, t, 'error:' + type(e).__name__, flush=True)
"#;

/// A loopback HTTP server answering every request with `200` and `hello PORT`; stops when
/// dropped.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        Server::serving(|port| format!("hello {port}").into_bytes())
    }

    /// A server whose body is `body(port)`.
    pub fn serving(body: impl Fn(u16) -> Vec<u8> + Send + 'static) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let body = Arc::new(body(port));
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(&body);
                });
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probe's lines for these actions, as `(action target, result)`.
pub fn probe_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (a, rest) = l.split_once(' ')?;
            let (t, r) = rest.split_once(' ')?;
            Some((format!("{a} {t}"), r.to_string()))
        })
        .collect()
}
