//! The fork server: instances hold none of the daemon's memory; a dead one falls back to clones.

use std::path::Path;

use serde_json::json;

use crate::server::Daemon;
use crate::util;

/// The pids of `ppid`'s children named `name`.
fn children_named(ppid: i32, name: &str) -> Vec<i32> {
    util::children_of(ppid)
        .into_iter()
        .filter(|(_, c)| c == name)
        .map(|(p, _)| p)
        .collect()
}

/// Whether `needle` occurs in any readable mapping of process `pid` (needs root: reapers are
/// not dumpable); `None` when the process is gone.
fn memory_contains(pid: i32, needle: &[u8]) -> Option<bool> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact_at(&mut buf, a).is_ok() && buf.windows(needle.len()).any(|w| w == needle)
        {
            return Some(true);
        }
    }
    Some(false)
}

/// The daemon clones instances from its fork server, a process forked before the daemon read
/// its token or any request: no reaper is the daemon's child, and (as root, who can read a
/// reaper's memory) the token is in the daemon's memory but in no reaper's.
#[test]
fn instances_come_from_the_fork_server_and_hold_none_of_the_daemons_memory() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("tok-{:x}-{nanos:x}", std::process::id());
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let mut d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        dir.path().join("token").to_str().unwrap(),
    ]);
    let a = d.post("/v1/sessions", &json!({}));
    assert_eq!(a.status, 201, "{}", a.body);
    let a = d.post("/v1/run", &json!({"code": "print(7)"}));
    assert_eq!(
        (a.status, a.json()["stdout"].as_str()),
        (200, Some("7\n")),
        "{}",
        a.body
    );

    let daemon = d.child.id() as i32;
    let kids = util::children_of(daemon);
    let servers = children_named(daemon, "rsandbox-fork");
    assert_eq!(servers.len(), 1, "the daemon's children: {kids:?}");
    assert!(
        kids.iter().all(|(_, c)| c != "rsandbox-init"),
        "a reaper is the daemon's own child: {kids:?}"
    );
    let reapers = children_named(servers[0], "rsandbox-init");
    assert!(
        !reapers.is_empty(),
        "the session's reaper is no child of the fork server"
    );

    if util::is_root() {
        // The control: the scan finds the token where it is.
        assert_eq!(
            memory_contains(daemon, token.as_bytes()),
            Some(true),
            "the scan did not find the token in the daemon's own memory"
        );
        // The one-shot run's reaper may be going away (teardown follows the answer); the
        // session's stays.
        let mut scanned = 0;
        for r in &reapers {
            match memory_contains(*r, token.as_bytes()) {
                Some(found) => {
                    assert!(!found, "reaper {r} holds the daemon's token");
                    scanned += 1;
                }
                None => eprintln!("reaper {r} exited before its scan"),
            }
        }
        assert!(scanned >= 1, "no reaper was left to scan");
    } else {
        eprintln!("NOTE: not root: reapers' memory not scanned for the daemon's token");
    }
    assert!(d.stop(20).success());
    // A graceful stop waits for the fork server.
    for p in servers.iter().chain(&reapers) {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} outlived the daemon"
        );
    }
}

/// A fork server that dies (here: SIGKILL) costs no request: the daemon says so once and clones
/// instances itself from then on, and stops cleanly.
#[test]
fn a_dead_fork_server_falls_back_to_direct_clones() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let mut d = Daemon::start(&[]);
    // The fork server names itself just after it is forked.
    let pid = d.child.id() as i32;
    d.wait_for(10, "the fork server", |_| {
        !children_named(pid, "rsandbox-fork").is_empty()
    });
    let servers = children_named(pid, "rsandbox-fork");
    assert_eq!(servers.len(), 1);
    // SAFETY: kill(2) on the daemon's own child, which this test started.
    assert_eq!(unsafe { libc::kill(servers[0], libc::SIGKILL) }, 0);
    for i in 0..4 {
        let a = d.post("/v1/run", &json!({"code": format!("print({i})")}));
        assert_eq!(
            (a.status, a.json()["stdout"].as_str()),
            (200, Some(format!("{i}\n").as_str())),
            "{}",
            a.body
        );
    }
    let kids = util::children_of(d.child.id() as i32);
    assert!(
        kids.iter().all(|(p, _)| *p != servers[0]),
        "the dead fork server was not reaped: {kids:?}"
    );
    assert!(d.stop(20).success());
    let log = d.log.lock().unwrap().join("\n");
    assert_eq!(
        log.matches("fork server stopped answering").count(),
        1,
        "{log}"
    );
}
