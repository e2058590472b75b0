//! Integration tests: sessions, over real sockets (`/v1/sessions`, Maze's `/create_session`,
//! `/execute`, `/close`, `rsandbox session`), and the `Instance` calls they stand on: files and
//! background processes that persist between runs, a run's timeout that leaves the session's
//! other processes alone, the session's limits covering everything in it, idle and lifetime
//! expiry, a files API that never leaves the work dir, the daemon's limits (503), 200 sessions
//! at once with the daemon's memory figures, and nothing left behind. A file per theme, below;
//! the request helpers are here.

use serde_json::{json, Value};

use crate::server::Daemon;

// What persists: files and background processes between runs, main.py untouched, runs in order.
mod persistence;
// Files: the library calls sessions stand on and the files API, which never leaves the work dir.
mod files;
// Clients: Maze's session API with its exact shapes, and the `rsandbox session` CLI.
mod clients;
// Lifetimes and limits: expiry, the daemon's session limits and SIGTERM, 200 at once, GPUs.
mod limits;

/// Creates a session (asserting 201); returns its id.
fn create(d: &Daemon, body: Value) -> String {
    let a = d.post("/v1/sessions", &body);
    assert_eq!(a.status, 201, "{}", a.body);
    let v = a.json();
    v["id"].as_str().expect("an id").to_string()
}

/// Runs in a session (asserting 200); returns the report.
fn run(d: &Daemon, id: &str, body: Value) -> Value {
    let a = d.post(&format!("/v1/sessions/{id}/run"), &body);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// `sh -c script` in a session.
fn sh(d: &Daemon, id: &str, script: &str) -> Value {
    run(d, id, json!({"argv": ["/bin/sh", "-c", script]}))
}
