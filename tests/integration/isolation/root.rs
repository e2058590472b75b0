//! The instance's root: read-only system dirs, exactly the planned mounts, /dev, no host paths.

use std::collections::BTreeSet;
use std::path::Path;

use rsandbox::Status;

use super::ok;
use crate::util;

/// Mount points and options of a `/proc/self/mountinfo` text: (mount point, per-mount options,
/// fstype, super options).
fn mountinfo(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(|l| {
            let (a, b) = l
                .split_once(" - ")
                .expect("mountinfo line with a separator");
            let a: Vec<&str> = a.split(' ').collect();
            let b: Vec<&str> = b.split(' ').collect();
            (
                a[4].to_string(),
                a[5].to_string(),
                b[0].to_string(),
                b.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// A comma-separated option list as a set.
fn opt_set(opts: &str) -> BTreeSet<String> {
    opts.split(',').map(str::to_string).collect()
}

/// The system directories and the template root are read-only (EROFS), bound nosuid,nodev;
/// /tmp, /dev/shm and the work dir are writable.
#[test]
fn system_dirs_are_read_only() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os, errno\n\
         def w(p):\n    \
             try:\n        \
                 open(p, 'w').close(); return 'ok'\n    \
             except OSError as e:\n        \
                 return errno.errorcode[e.errno]\n\
         def m(p):\n    \
             try:\n        \
                 os.mkdir(p); return 'ok'\n    \
             except OSError as e:\n        \
                 return errno.errorcode[e.errno]\n\
         print(w('/usr/x'), w('/usr/bin/x'), w('/x'), w('/etc/passwd'), w('/etc/x'), m('/usr/d'), m('/d'))\n\
         print(w('/tmp/x'), w('/dev/shm/x'), w('/home/sandbox/x'), w('x'), w('/dev/null'))",
    );
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "EROFS EROFS EROFS EROFS EROFS EROFS EROFS",
        "{out}"
    );
    assert_eq!(lines[1], "ok ok ok ok ok", "{out}");

    // The message as a shell reports it.
    let o = util::sh(&sb, "echo hi > /usr/x");
    assert_eq!(o.status, Status::Exit);
    assert!(
        o.stderr
            .as_deref()
            .unwrap_or("")
            .contains("Read-only file system"),
        "{o:#?}"
    );

    let o = util::py(&sb, "print(open('/proc/self/mountinfo').read(), end='')");
    let mounts = mountinfo(&ok(&o));
    let opts = |mp: &str| {
        mounts
            .iter()
            .find(|m| m.0 == mp)
            .unwrap_or_else(|| panic!("no mount at {mp}: {mounts:?}"))
            .1
            .clone()
    };
    let mut system = vec!["/".to_string()];
    for d in rsandbox::testing::ns::template::SYSTEM_DIRS {
        let host = Path::new("/").join(d);
        if std::fs::symlink_metadata(&host)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            system.push(host.display().to_string());
        }
    }
    assert!(
        system.len() > 1,
        "no system dir is a directory on this host?"
    );
    for mp in &system {
        let o = opt_set(&opts(mp));
        for want in ["ro", "nosuid", "nodev"] {
            assert!(o.contains(want), "{mp} must be {want}: {o:?}");
        }
    }
    for mp in ["/tmp", "/dev/shm", "/home/sandbox"] {
        let o = opt_set(&opts(mp));
        assert!(
            o.contains("rw") && o.contains("nosuid") && o.contains("nodev"),
            "{mp}: {o:?}"
        );
    }
    for n in rsandbox::testing::ns::template::DEV_NODES {
        let o = opt_set(&opts(&format!("/dev/{n}")));
        assert!(
            o.contains("nosuid") && o.contains("noexec"),
            "/dev/{n}: {o:?}"
        );
    }
}

/// The root holds exactly the planned mounts: the template, the system binds, a fresh /proc of
/// the instance's pid namespace, five device nodes, /dev/shm (64M), /tmp (256M) and the work
/// dir (256M, the cwd); the old root is gone.
#[test]
fn root_holds_exactly_the_planned_mounts() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os\n\
         print(open('/proc/self/mountinfo').read(), end='')\n\
         print('--')\n\
         print(os.getcwd())\n\
         print(os.readlink('/proc/self'), os.getpid())\n\
         r, p = os.stat('/'), os.stat('/..')\n\
         print((r.st_dev, r.st_ino) == (p.st_dev, p.st_ino))\n\
         for d in ['/dev/shm', '/tmp', '/home/sandbox']:\n    \
             s = os.statvfs(d); print(d, s.f_blocks * s.f_frsize)\n",
    );
    let out = ok(&o);
    let (mi, rest) = out.split_once("--\n").unwrap();
    let rest: Vec<&str> = rest.lines().collect();
    assert_eq!(rest[0], "/home/sandbox", "the cwd must be the work dir");
    let (self_link, pid) = rest[1].split_once(' ').unwrap();
    assert_eq!(
        self_link, pid,
        "/proc must be the instance's pid namespace's procfs"
    );
    assert_eq!(rest[2], "True", "'/..' must be '/'");
    assert_eq!(
        rest[3],
        format!("/dev/shm {}", rsandbox::defaults::SHM_SIZE)
    );
    assert_eq!(rest[4], format!("/tmp {}", rsandbox::defaults::TMP_SIZE));
    assert_eq!(
        rest[5],
        format!("/home/sandbox {}", rsandbox::defaults::WORK_SIZE)
    );

    let mounts = mountinfo(mi);
    let points: BTreeSet<String> = mounts.iter().map(|m| m.0.clone()).collect();
    let mut want: BTreeSet<String> = [
        "/",
        "/proc",
        "/dev/pts",
        "/dev/shm",
        "/tmp",
        "/home/sandbox",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for d in rsandbox::testing::ns::template::SYSTEM_DIRS {
        let host = Path::new("/").join(d);
        if std::fs::symlink_metadata(&host)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            want.insert(host.display().to_string());
        }
    }
    for n in rsandbox::testing::ns::template::DEV_NODES {
        want.insert(format!("/dev/{n}"));
    }
    assert_eq!(points, want, "mount points inside");
    assert_eq!(
        mounts.len(),
        want.len(),
        "a mount point is stacked twice: {mounts:?}"
    );
    let fstype = |mp: &str| mounts.iter().find(|m| m.0 == mp).unwrap().2.clone();
    assert_eq!(fstype("/proc"), "proc");
    assert_eq!(fstype("/dev/pts"), "devpts");
    for mp in ["/dev/shm", "/tmp", "/home/sandbox"] {
        assert_eq!(fstype(mp), "tmpfs", "{mp}");
    }
    for m in &mounts {
        for host_path in [
            "/work",
            "/var/lib/rsandbox",
            "/run/rsandbox",
            "/root",
            "/tmp/",
        ] {
            assert!(
                !m.0.starts_with(host_path),
                "a host path is mounted inside: {m:?}"
            );
        }
    }
}

/// /dev holds exactly null, zero, full, random, urandom (working character devices), the fd
/// links, shm and pts: no tty, no other node.
#[test]
fn dev_has_only_the_safe_nodes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os, stat, errno\n\
         print(' '.join(sorted(os.listdir('/dev'))))\n\
         for n in ['null', 'zero', 'full', 'random', 'urandom']:\n    \
             s = os.stat('/dev/' + n)\n    \
             print(n, stat.S_ISCHR(s.st_mode), os.major(s.st_rdev), os.minor(s.st_rdev))\n\
         for n in ['fd', 'stdin', 'stdout', 'stderr']:\n    \
             print(n, os.readlink('/dev/' + n))\n\
         print(len(open('/dev/zero', 'rb').read(10)), len(open('/dev/urandom', 'rb').read(10)))\n\
         try:\n    \
             f = open('/dev/full', 'wb', buffering=0); f.write(b'x')\n\
         except OSError as e:\n    \
             print('full', errno.errorcode[e.errno])\n\
         print(os.listdir('/dev/pts'), os.path.exists('/dev/tty'))",
    );
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(
        l[0],
        "fd full null ptmx pts random shm stderr stdin stdout urandom zero"
    );
    assert_eq!(
        &l[1..6],
        [
            "null True 1 3",
            "zero True 1 5",
            "full True 1 7",
            "random True 1 8",
            "urandom True 1 9"
        ]
    );
    assert_eq!(
        &l[6..10],
        [
            "fd /proc/self/fd",
            "stdin /proc/self/fd/0",
            "stdout /proc/self/fd/1",
            "stderr /proc/self/fd/2"
        ]
    );
    assert_eq!(l[10], "10 10");
    assert_eq!(l[11], "full ENOSPC");
    assert_eq!(
        l[12], "['ptmx'] False",
        "the instance's own devpts holds only its ptmx until a pty is opened; no /dev/tty"
    );
}

/// Host secrets and trees are not visible: /etc/shadow, /root's files, the project tree, the
/// test's working directory, /sys (so /sys/fs/cgroup), the state and template dirs, other
/// homes, and the host's /tmp (a file created there just before).
///
/// Directories may exist as empty skeletons: the template keeps mount points for INSIDE
/// paths other sandboxes bound (e.g. a pyenv interpreter under /root). No file may be there.
#[test]
fn host_paths_are_not_visible() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("/tmp/rsandbox-isolation-{}-{nanos}", std::process::id());
    std::fs::write(&marker, b"host secret").unwrap();
    let manifest = env!("CARGO_MANIFEST_DIR");
    let mut absent: Vec<String> = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/root/.bashrc",
        "/root/.profile",
        "/root/.cargo",
        "/root/.ssh",
        "/sys",
        "/var/lib/rsandbox",
        "/run/rsandbox",
        "/run/user",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    absent.extend([
        format!("{manifest}/Cargo.toml"),
        format!("{manifest}/src"),
        marker.clone(),
    ]);
    let mut trees: Vec<String> = [
        "/root", "/work", "/home", "/mnt", "/opt", "/srv", "/var", "/run",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    trees.push(manifest.to_string());
    // The test's own working directory and what is in it, unless the sandbox provides that
    // directory itself (/, /tmp, /usr/...).
    let cwd = std::env::current_dir().unwrap();
    let provided = [
        "/usr",
        "/bin",
        "/sbin",
        "/lib",
        "/etc",
        "/dev",
        "/proc",
        "/tmp",
        "/home/sandbox",
    ];
    if cwd != Path::new("/") && !provided.iter().any(|p| cwd.starts_with(p)) {
        trees.push(cwd.display().to_string());
        for e in std::fs::read_dir(&cwd)
            .into_iter()
            .flatten()
            .flatten()
            .take(20)
        {
            absent.push(e.path().display().to_string());
        }
    }
    let quote = |v: &[String]| {
        v.iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let o = util::py(
        &sb,
        &format!(
            "import os\n\
             print([p for p in [{}] if os.path.lexists(p)])\n\
             print([os.path.join(d, f) for t in [{}] for d, _, fs in os.walk(t) for f in fs])\n\
             print(os.listdir('/home'), os.listdir('/tmp'), os.listdir('/home/sandbox'))\n\
             print(sorted(os.listdir('/etc')))",
            quote(&absent),
            quote(&trees)
        ),
    );
    let _ = std::fs::remove_file(&marker);
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "[]", "host paths visible inside: {out}");
    assert_eq!(l[1], "[]", "host files visible inside: {out}");
    assert_eq!(
        l[2], "['sandbox'] [] []",
        "/home, /tmp and the work dir must hold nothing of the host: {out}"
    );
    for secret in ["shadow", "sudoers", "ssh", "gshadow", "subuid"] {
        assert!(!l[3].contains(secret), "/etc holds {secret}: {}", l[3]);
    }
}
