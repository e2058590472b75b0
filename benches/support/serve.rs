//! Starting `rsandbox serve` for a bench (shared by the benches that drive a daemon).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `rsandbox serve --socket SOCKET` (`BENCH_BIN`, or this build's binary) and returns
/// once it says it is ready; its stderr is drained from then on.
pub fn start(socket: &Path) -> Child {
    let bin = std::env::var_os("BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_rsandbox").into());
    let mut daemon = Command::new(bin)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rsandbox serve");
    let mut err = BufReader::new(daemon.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("ready") {
        line.clear();
    }
    std::thread::spawn(move || for _ in err.lines() {});
    daemon
}
