//! Files: the library calls sessions stand on and the files API, which never leaves the work dir.

use serde_json::json;

use super::{create, run, sh};
use crate::server::Daemon;
use crate::util;

/// The library's calls for sessions: `list_dir` (sorted, symlinks listed as such, never
/// followed on the way), `remove_file` (a link itself, an empty directory, not a full one) and
/// `usage` (the instance's processes, background ones included).
#[test]
fn instance_lists_removes_and_reports_usage() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    inst.put_file("b.txt", b"12345", 0o600).unwrap();
    inst.put_file("d/inner.txt", b"x", 0o644).unwrap();
    let o = inst
        .exec(&rsandbox::Command::new("/bin/sh").args([
            "-c",
            "ln -s /etc/passwd link; mkdir empty; ln -s /etc d2; sleep 1000 >/dev/null 2>&1 &",
        ]))
        .unwrap();
    assert_eq!(o.status, rsandbox::Status::Ok, "{o:#?}");
    let names: Vec<(String, rsandbox::FileKind, u64, u32)> = inst
        .list_dir("")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind, e.size, e.mode))
        .collect();
    use rsandbox::FileKind::*;
    assert_eq!(
        names
            .iter()
            .map(|(n, k, _, _)| (n.as_str(), *k))
            .collect::<Vec<_>>(),
        [
            ("b.txt", File),
            ("d", Dir),
            ("d2", Symlink),
            ("empty", Dir),
            ("link", Symlink)
        ]
    );
    assert_eq!((names[0].2, names[0].3), (5, 0o600));
    assert_eq!(inst.list_dir("d").unwrap()[0].name, "inner.txt");
    assert!(matches!(
        inst.list_dir("d2"),
        Err(rsandbox::Error::Path { .. })
    ));
    assert!(matches!(
        inst.list_dir("../"),
        Err(rsandbox::Error::Path { .. })
    ));
    inst.remove_file("link").unwrap();
    inst.remove_file("empty").unwrap();
    assert!(inst.remove_file("d").is_err(), "a full directory stays");
    assert!(inst.remove_file("missing").is_err());
    assert!(std::path::Path::new("/etc/passwd").exists());
    let left: Vec<String> = inst
        .list_dir(".")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(left, ["b.txt", "d", "d2"]);
    let u = inst.usage().unwrap();
    // The reaper and the background sleep.
    assert!(u.pids.unwrap() >= 2, "{u:?}");
    assert!(u.memory_bytes.unwrap() > 0, "{u:?}");
    // Without cgroups only live processes count (the reaper and a sleep: no tick yet).
    assert!(u.cpu_ms > 0.0 || u.source == "procfs", "{u:?}");
    inst.destroy().unwrap();
}

/// The files API: PUT (with ?mode), GET (raw bytes), DELETE, listings; `..`, absolute paths
/// and symlinks planted inside (to a host file, to a host directory, to a directory inside)
/// are refused without reading or writing anything through them; a missing file is 404.
#[test]
fn the_files_api_never_leaves_the_work_dir() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let d = Daemon::start(&[]);
    let id = create(&d, json!({}));
    let f = |p: &str| format!("/v1/sessions/{id}/files/{p}");
    let a = d.unix(
        "PUT",
        &f("bin/tool.sh?mode=0755"),
        b"#!/bin/sh\necho tool $1\n",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["mode"], 0o755);
    let r = run(&d, &id, json!({"argv": ["bin/tool.sh", "ran"]}));
    assert_eq!(r["stdout"], "tool ran\n", "{r}");
    let a = d.unix("PUT", &f("with%20space.txt"), b"spaced");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(d.get(&f("with%20space.txt")).body, "spaced");
    let list = d.get(&format!("/v1/sessions/{id}/files?dir=bin")).json();
    assert_eq!(
        list["entries"],
        json!([{"name": "tool.sh", "size": 23, "mode": 0o755, "type": "file"}])
    );

    sh(
        &d,
        &id,
        "ln -s /etc/passwd passwd; ln -s /etc etc; mkdir real; ln -s real inner; ln -s ../.. up",
    );
    let entries = d.get(&format!("/v1/sessions/{id}/files")).json()["entries"].clone();
    let kind = |name: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["type"].clone())
    };
    assert_eq!(kind("passwd"), Some(json!("symlink")), "{entries}");
    assert_eq!(kind("real"), Some(json!("dir")), "{entries}");

    let refused = |method: &str, path: &str| {
        let a = d.unix(method, path, b"planted");
        assert_eq!(a.status, 422, "{method} {path}: {}", a.body);
        assert!(!a.body.contains("root:"), "{method} {path}: {}", a.body);
        assert_eq!(a.json()["error"]["stage"], "files", "{}", a.body);
    };
    for p in [
        "..%2Fx",
        "a/../../x",
        "%2Fetc%2Fpasswd",
        "passwd",
        "etc/passwd",
        "up/etc/passwd",
        "inner/f",
    ] {
        refused("GET", &f(p));
    }
    for p in [
        "..%2Fx",
        "%2Fetc%2Frsandbox-planted",
        "etc/rsandbox-planted",
        "inner/f",
        "up/x",
    ] {
        refused("PUT", &f(p));
    }
    refused("GET", &format!("/v1/sessions/{id}/files?dir=etc"));
    refused("GET", &format!("/v1/sessions/{id}/files?dir=..%2F"));
    refused("DELETE", &f("etc/passwd"));
    assert!(!std::path::Path::new("/etc/rsandbox-planted").exists());
    // Deleting a link removes the link.
    assert_eq!(d.unix("DELETE", &f("passwd"), b"").status, 200);
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert_eq!(d.get(&f("passwd")).status, 404);
    let a = d.get(&f("missing.txt"));
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(
        d.unix("DELETE", &f("real"), b"").status,
        200,
        "an empty directory"
    );
    let a = d.unix("PUT", &f("x?mode=999"), b"");
    assert_eq!(a.status, 422, "{}", a.body);
}
