//! Isolation: fresh namespaces per instance, the reaper as pid 1, the root's contents, what is
//! not visible, the program's identity and privileges, hostname and network. A file per theme,
//! below; the shared helpers are here.

use rsandbox::{Command, Instance, Outcome, Status};

use crate::util;

// Namespaces and processes: fresh namespaces per instance, the reaper as pid 1, kill(-1), orphans.
mod namespaces;
// The instance's root: read-only system dirs, exactly the planned mounts, /dev, no host paths.
mod root;
// Identity: uid/gid 1000 without capabilities, the host uids it maps to, the hostname.
mod identity;
// Network: no network but a down loopback by default; a working loopback with `Net::Loopback`.
mod net;

/// Runs `sh -c script` in a live instance.
fn sh_in(inst: &Instance, script: &str) -> Outcome {
    inst.exec(&Command::new("/bin/sh").args(["-c", script]))
        .expect("exec")
}

/// Asserts a run ended with exit 0, showing its output otherwise.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}
