//! The egress proxy's throughput: a 64 MiB download from a loopback HTTP server, fetched by
//! the same Python client on the host directly and inside a run through the proxy (plain HTTP
//! forwarding and a CONNECT tunnel); median of a few rounds, side by side.
//!
//! `cargo bench --bench egress` (as root or with user namespaces).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use rsandbox::{Command, Net, Sandbox};

const SIZE: usize = 64 << 20;
const ROUNDS: usize = 5;

/// Fetches `http://127.0.0.1:PORT/` (argv[1]) directly, through the HTTP proxy with an
/// absolute URL (`forward`), or in a CONNECT tunnel (`connect`), and prints the seconds the
/// transfer took and the bytes received.
const CLIENT: &str = r#"
import socket, sys, time
port, mode = sys.argv[1], sys.argv[2]
t = '127.0.0.1:' + port
start = time.perf_counter()
if mode == 'direct':
    s = socket.create_connection(('127.0.0.1', int(port)))
    s.sendall(b'GET / HTTP/1.0\r\n\r\n')
else:
    s = socket.create_connection(('127.0.0.1', 3128))
    if mode == 'connect':
        s.sendall(('CONNECT %s HTTP/1.1\r\n\r\n' % t).encode())
        h = b''
        while not h.endswith(b'\r\n\r\n'):
            h += s.recv(1)
        s.sendall(b'GET / HTTP/1.0\r\n\r\n')
    else:
        s.sendall(('GET http://%s/ HTTP/1.0\r\n\r\n' % t).encode())
buf = bytearray(1 << 20)
n = 0
while True:
    k = s.recv_into(buf)
    if not k:
        break
    n += k
print(time.perf_counter() - start, n)
"#;

fn serve() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let body = vec![7u8; SIZE];
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut head = [0u8; 4096];
            let _ = c.read(&mut head);
            let _ = c
                .write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes());
            let _ = c.write_all(&body);
        }
    });
    port
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parse(out: &str) -> f64 {
    let mut f = out.split_whitespace();
    let secs: f64 = f.next().and_then(|s| s.parse().ok()).expect("seconds");
    let n: usize = f.next().and_then(|s| s.parse().ok()).expect("bytes");
    assert!(n >= SIZE, "short download: {n} bytes");
    secs
}

fn main() {
    let port = serve();
    let p = port.to_string();
    let sb = Sandbox::builder()
        .timeout(Duration::from_secs(120))
        .memory(1 << 30)
        .net(Net::allowlist([format!("127.0.0.1:{port}")]).unwrap())
        .build()
        .expect("building the sandbox");
    let mut rows = Vec::new();
    for mode in ["direct", "forward", "connect"] {
        let mut secs = Vec::new();
        for _ in 0..ROUNDS {
            let out = if mode == "direct" {
                let o = std::process::Command::new("/usr/bin/python3")
                    .args(["-c", CLIENT, &p, mode])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&o.stdout).into_owned()
            } else {
                let o = sb
                    .run(&Command::python_script("client.py").args([&p, mode]).file(
                        "client.py",
                        CLIENT,
                        0o644,
                    ))
                    .expect("run");
                o.stdout.clone().unwrap_or_default()
            };
            secs.push(parse(&out));
        }
        rows.push((mode, median(secs)));
    }
    let direct = rows[0].1;
    println!("64 MiB from a loopback server, median of {ROUNDS}:");
    for (mode, s) in rows {
        println!(
            "  {mode:<8} {:>8.1} ms  {:>8.0} MiB/s  ({:.2}x direct)",
            s * 1000.0,
            64.0 / s,
            direct / s
        );
    }
}
