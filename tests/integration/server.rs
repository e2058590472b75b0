//! The test harness for `rsandbox serve` over real sockets, shared by the daemon and session
//! tests: a daemon started per test on a socket in its own temp dir, raw HTTP/1.1 requests,
//! and the host fingerprint around a daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::util;

/// A daemon started for one test, on a socket in its own temp dir.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

/// An HTTP answer: status, headers (lowercased names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (Connection: close) and reads the whole answer.
pub fn http<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
) -> Answer {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused request may be answered before the body is read; that is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_env(args, &[])
    }

    /// `start` with more environment for the daemon.
    pub fn start_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("rsandbox.sock");
        let mut cmd = Command::new(util::bin());
        cmd.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon::spawn(cmd, socket, dir)
    }

    /// Waits for the "ready" line; collects the log and the TCP address.
    pub fn spawn(mut cmd: Command, socket: PathBuf, dir: tempfile::TempDir) -> Daemon {
        let mut child = cmd.spawn().expect("starting rsandbox serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("ready") {
                    let _ = tx.send(());
                }
                l.lock().unwrap().push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("the daemon did not get ready: {:?}", log.lock().unwrap());
        }
        let tcp = log.lock().unwrap().iter().find_map(|l| {
            l.split("listening on tcp:")
                .nth(1)
                .and_then(|a| a.trim().parse().ok())
        });
        Daemon {
            child,
            socket,
            tcp,
            log,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn unix(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        http(
            UnixStream::connect(&self.socket).unwrap(),
            method,
            path,
            body,
            "",
        )
    }

    pub fn post(&self, path: &str, v: &Value) -> Answer {
        self.unix("POST", path, v.to_string().as_bytes())
    }

    pub fn get(&self, path: &str) -> Answer {
        self.unix("GET", path, b"")
    }

    /// One figure of /metrics (the first sample whose name and labels start with `name`).
    pub fn metric(&self, name: &str) -> f64 {
        let m = self.get("/metrics");
        assert_eq!(m.status, 200);
        m.body
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls until `f` holds (at most `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, f: impl Fn(&Daemon) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGTERM, then the exit status (at most `secs`).
    pub fn stop(&mut self, secs: u64) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "the daemon did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    /// SIGTERM, so the daemon destroys its instances (ready ones included) itself; SIGKILL
    /// only if it has not exited 10 s later.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The host's fingerprint before a daemon starts, to compare after it stopped (its ready
/// instances are processes of its own). A daemon started and stopped first runs the janitor,
/// which may remove records other supervisors left.
pub fn host_before() -> util::Fingerprint {
    let _ = Daemon::start(&[]).stop(20);
    util::Fingerprint::take(&util::sandbox())
}

pub fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn unb64(v: &Value) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}
