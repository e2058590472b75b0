//! Access: bearer tokens on TCP, peer credentials and modes on the Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::server::{http, Daemon};
use crate::util;

/// TCP needs the bearer token (401 without or with a wrong one); starting TCP without a token
/// needs --no-auth, which is refused on a non-loopback address.
#[test]
fn tcp_requires_a_bearer_token_and_no_auth_only_on_loopback() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-0123456789";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        dir.path().join("token").to_str().unwrap(),
    ]);
    let addr = d.tcp.expect("a tcp address in the log");
    let tcp = |extra: &str| {
        http(
            std::net::TcpStream::connect(addr).unwrap(),
            "POST",
            "/v1/run",
            json!({"code": "print(5)"}).to_string().as_bytes(),
            extra,
        )
    };
    let a = tcp("");
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        tcp("Authorization: Bearer wrong-token-0123456789\r\n").status,
        401
    );
    let a = tcp(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(
        (a.status, a.json()["stdout"].as_str()),
        (200, Some("5\n")),
        "{}",
        a.body
    );
    // The Unix socket needs no token.
    assert_eq!(d.post("/v1/run", &json!({"code": "print(1)"})).status, 200);

    for (args, word) in [
        (vec!["--listen", "127.0.0.1:0"], "--token-file"),
        (
            vec!["--listen", "0.0.0.0:0", "--no-auth"],
            "refusing --no-auth",
        ),
    ] {
        let o = Command::new(util::bin())
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("x.sock"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(word), "{o:?}");
        assert!(!dir.path().join("x.sock").exists());
    }
}

/// Who may use the Unix socket: the socket is 0660 so others cannot even connect; if it is
/// opened up anyway, SO_PEERCRED refuses them (403); `--group` lets a group in.
#[test]
fn peer_credentials_decide_who_may_use_the_socket() {
    let _g = util::shared();
    if !util::require("root") || !util::require("userns") {
        return;
    }
    let user = std::env::var("RSANDBOX_TEST_USER").unwrap_or_else(|_| "rstest".into());
    let Some(gid) = user_gid(&user) else {
        eprintln!("SKIP: no user {user} to connect as; test not run");
        return;
    };
    let client = |socket: &Path| {
        let code = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES'); sys.exit()\ns.sendall(b'GET /v1/ping HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\nprint(s.makefile('rb').readline().decode().split()[1])\n";
        let o = Command::new("runuser")
            .args(["-u", &user, "--", "/usr/bin/python3", "-c", code])
            .arg(socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(client(&d.socket), "EACCES");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(client(&d.socket), "403");
    // The refusal is logged as the connection ends, which may be just after the answer.
    d.wait_for(10, "the refusal in the daemon's log", |d| {
        d.log().contains("refused uid")
    });
    assert_eq!(d.get("/v1/ping").status, 200);
    drop(d);
    let d = Daemon::start(&["--group", &gid.to_string()]);
    assert_eq!(client(&d.socket), "200");
}

fn user_gid(user: &str) -> Option<u32> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .and_then(|l| l.split(':').nth(3)?.parse().ok())
}
