//! Allowed and unlisted loopback ports, `all` keeping loopback closed, SOCKS, the report's
//! figures, a flood of connections and garbage sent to the proxy, and bad patterns.

use rsandbox::{Command, Net, Sandbox};

use super::{probe_lines, Server, PROBE};
use crate::util;

/// Runs the probe in a fresh instance of `sb`.
fn probe(sb: &Sandbox, actions: &[String]) -> (rsandbox::Outcome, Vec<(String, String)>) {
    let o = sb
        .run(
            &Command::python_script("probe.py")
                .args(actions)
                .file("probe.py", PROBE, 0o644),
        )
        .expect("run");
    let lines = probe_lines(&util::stdout(&o));
    (o, lines)
}

fn result<'a>(lines: &'a [(String, String)], key: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("no line for {key}: {lines:?}"))
}

/// An allowed loopback port answers through the HTTP proxy (plain and CONNECT) and SOCKS; an
/// unlisted one, listening just as well, gets a 403 naming it (SOCKS: "not allowed", code 2);
/// a name rule that resolves to loopback does not open it (only an exact address rule does).
/// The report counts the decisions and bytes.
#[test]
fn egress_allowlist_opens_only_the_named_loopback_port() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let (open, shut) = (Server::start(), Server::start());
    let (p, q) = (open.port, shut.port);
    let net = Net::allowlist([format!("127.0.0.1:{p}"), format!("localhost:{q}")]).unwrap();
    let sb = util::builder().net(net).build().unwrap();
    let actions: Vec<String> = [
        format!("get:127.0.0.1:{p}"),
        format!("connect:127.0.0.1:{p}"),
        format!("socks:127.0.0.1:{p}"),
        format!("get:127.0.0.1:{q}"),
        format!("connect:127.0.0.1:{q}"),
        format!("socks:127.0.0.1:{q}"),
        format!("get:localhost:{q}"),
        format!("get:[::1]:{p}"),
        format!("get:0.0.0.0:{p}"),
    ]
    .into();
    let (o, lines) = probe(&sb, &actions);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let hello = format!("hello {p}");
    assert_eq!(
        result(&lines, &format!("get 127.0.0.1:{p}")),
        format!("200:{hello}")
    );
    assert_eq!(
        result(&lines, &format!("connect 127.0.0.1:{p}")),
        format!("tunnel:200:{hello}")
    );
    assert_eq!(
        result(&lines, &format!("socks 127.0.0.1:{p}")),
        format!("tunnel:200:{hello}")
    );
    assert_eq!(
        result(&lines, &format!("get 127.0.0.1:{q}")),
        format!("403:rsandbox: 127.0.0.1:{q} is not in the allowlist")
    );
    assert_eq!(result(&lines, &format!("connect 127.0.0.1:{q}")), "403");
    assert_eq!(result(&lines, &format!("socks 127.0.0.1:{q}")), "socks2");
    let by_name = result(&lines, &format!("get localhost:{q}"));
    assert!(by_name.starts_with("403:rsandbox: localhost:"), "{by_name}");
    assert!(by_name.contains("loopback"), "{by_name}");
    assert!(result(&lines, &format!("get [::1]:{p}")).starts_with("403:"));
    assert!(result(&lines, &format!("get 0.0.0.0:{p}")).starts_with("403:"));
    let n = o.network.expect("a report with the proxy's figures");
    assert_eq!((n.allowed, n.denied), (3, 6), "{n:?}");
    assert!(
        n.bytes_down >= 3 * hello.len() as u64 && n.bytes_up > 0,
        "{n:?}"
    );
    // Without a proxy the report says so.
    let plain = util::builder().net(Net::Loopback).build().unwrap();
    assert_eq!(util::sh(&plain, "true").network, None);
}

/// `all` reaches any destination outside the closed set, and keeps loopback (the host's, in
/// every spelling) closed: the servers listen, and the proxy refuses them.
#[test]
fn egress_all_keeps_loopback_closed() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let s = Server::start();
    let p = s.port;
    let sb = util::builder().net(Net::All).build().unwrap();
    let targets = [
        format!("127.0.0.1:{p}"),
        format!("127.0.0.2:{p}"),
        format!("localhost:{p}"),
        format!("[::1]:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("0.0.0.0:{p}"),
    ];
    let mut actions: Vec<String> = targets.iter().map(|t| format!("get:{t}")).collect();
    actions.push(format!("socks:127.0.0.1:{p}"));
    actions.push(format!("socks:localhost:{p}"));
    let (o, lines) = probe(&sb, &actions);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    for t in &targets {
        let r = result(&lines, &format!("get {t}"));
        assert!(r.starts_with("403:rsandbox: "), "{t}: {r}");
    }
    assert_eq!(result(&lines, &format!("socks 127.0.0.1:{p}")), "socks2");
    assert_eq!(result(&lines, &format!("socks localhost:{p}")), "socks2");
    assert_eq!(o.network.unwrap().denied, 8);
}

/// The run's environment names the proxy for pip, curl, git, urllib, requests and npm, in
/// both cases; NO_PROXY is left unset; urllib goes through it.
#[test]
fn egress_environment_names_the_proxy() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let s = Server::start();
    let net = Net::allowlist([format!("127.0.0.1:{}", s.port)]).unwrap();
    let sb = util::builder().net(net).build().unwrap();
    let code = format!(
        "import os, urllib.request\n\
         for k in ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy', 'NO_PROXY', 'no_proxy']:\n\
         \x20   print(k, os.environ.get(k))\n\
         print(urllib.request.urlopen('http://127.0.0.1:{}/', timeout=20).read().decode())",
        s.port
    );
    let o = util::py(&sb, &code);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    let http = "http://127.0.0.1:3128";
    let socks = "socks5h://127.0.0.1:1080";
    assert_eq!(
        util::stdout(&o),
        format!(
            "HTTP_PROXY {http}\nHTTPS_PROXY {http}\nALL_PROXY {socks}\nhttp_proxy {http}\nhttps_proxy {http}\nall_proxy {socks}\nNO_PROXY None\nno_proxy None\nhello {}\n",
            s.port
        )
    );
}

/// A flood past the connection bound gets 503s (the bound holds), garbage gets a 400, an
/// oversized head a 431, a non-SOCKS greeting is closed; afterwards the proxy still serves.
#[test]
fn egress_flood_and_garbage_get_clear_errors_and_leave_the_proxy_working() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let s = Server::start();
    let p = s.port;
    let net = Net::allowlist([format!("127.0.0.1:{p}")]).unwrap();
    let sb = util::builder()
        .net(net)
        .egress_max_conns(4)
        .build()
        .unwrap();
    let code = format!(
        r#"
import socket, time
def ask(data, port=3128):
    s = socket.create_connection(('127.0.0.1', port), timeout=20)
    try:
        s.sendall(data)
        r = b''
        while True:
            c = s.recv(65536)
            if not c: break
            r += c
    except ConnectionResetError:
        return b'RESET'
    return r
def tunnel():
    s = socket.create_connection(('127.0.0.1', 3128), timeout=20)
    s.sendall(b'CONNECT 127.0.0.1:{p} HTTP/1.1\r\n\r\n')
    assert s.recv(100).startswith(b'HTTP/1.1 200'), 'tunnel'
    return s
# Hold 4 open tunnels (the bound): every further connection is refused at once.
held = [tunnel() for _ in range(4)]
busy = [ask(b'') for _ in range(20)]
print('busy', sum(b.startswith(b'HTTP/1.1 503') for b in busy), b'at most 4' in busy[0])
for h in held: h.close()
# The proxy frees the permits as it sees the tunnels close: retry until one is free.
for _ in range(200):
    r = ask(bytes(range(256)) + b'\r\n\r\n')
    if not r.startswith(b'HTTP/1.1 503') and r != b'RESET': break
    time.sleep(0.05)
print('garbage', r.split(b'\r\n')[0].decode())
print('big', ask(b'GET http://127.0.0.1:{p}/ HTTP/1.1\r\nX: ' + b'a' * 40000 + b'\r\n\r\n').split(b'\r\n')[0].decode())
print('socks', 'closed' if ask(b'\x04\x01\x00\x50garbage', 1080) in (b'', b'RESET') else 'answered')
print('after', ask(b'GET http://127.0.0.1:{p}/ HTTP/1.1\r\n\r\n').split(b'\r\n')[0].decode())
"#
    );
    let o = util::py(&sb, &code);
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert_eq!(
        util::stdout(&o),
        "busy 20 True\ngarbage HTTP/1.1 400 Bad Request\nbig HTTP/1.1 431 Request Header Fields Too Large\nsocks closed\nafter HTTP/1.0 200 OK\n"
    );
}

/// Bad patterns are refused before anything starts, with the reason: the library's parser
/// and the CLI (which names the option).
#[test]
fn egress_bad_patterns_are_refused_with_the_reason() {
    for (p, why) in [
        ("*", "`all`"),
        ("10.0.0.0/8", "CIDR"),
        ("127.0.0.1", "needs a port"),
    ] {
        let e = Net::allowlist([p]).unwrap_err();
        assert!(e.to_string().contains(why), "{p}: {e}");
        let o = std::process::Command::new(util::bin())
            .args(["run", "--allow-host", p, "--", "/bin/true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{p}: {err}");
        assert!(
            err.contains("--allow-host") && err.contains(why),
            "{p}: {err}"
        );
    }
    let o = std::process::Command::new(util::bin())
        .args([
            "run",
            "--net",
            "all",
            "--allow-host",
            "example.org",
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("--allow-host goes with --net allowlist"),
        "{err}"
    );
}
