//! Isolation: fresh namespaces per instance, the reaper as pid 1, the root's contents, what is
//! not visible, the program's identity and privileges, hostname and network.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rsandbox::{Command, Instance, Net, Outcome, Status};

use crate::util;

/// The namespaces every instance must get fresh.
const NAMESPACES: [&str; 7] = ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"];

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

/// The script that prints each namespace link of the running shell, one per line.
fn ns_script() -> String {
    NAMESPACES
        .iter()
        .map(|n| format!("readlink /proc/self/ns/{n};"))
        .collect()
}

fn host_ns() -> Vec<String> {
    NAMESPACES
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

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

/// Every instance gets its own user, mount, pid, net, ipc, uts and cgroup namespace: all 7
/// links differ from the host's, and two live instances differ from each other.
#[test]
fn fresh_namespaces_per_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let host = host_ns();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    let ns_a: Vec<String> = ok(&sh_in(&a, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    let ns_b: Vec<String> = ok(&sh_in(&b, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ns_a.len(), 7, "{ns_a:?}");
    assert_eq!(ns_b.len(), 7, "{ns_b:?}");
    for (i, n) in NAMESPACES.iter().enumerate() {
        assert!(ns_a[i].starts_with(&format!("{n}:[")), "{n}: {}", ns_a[i]);
        assert_ne!(ns_a[i], host[i], "instance shares the host's {n} namespace");
        assert_ne!(ns_b[i], host[i], "instance shares the host's {n} namespace");
        assert_ne!(ns_a[i], ns_b[i], "two live instances share a {n} namespace");
    }
    // A one-shot run too.
    let one: Vec<String> = ok(&util::sh(&sb, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    for (i, n) in NAMESPACES.iter().enumerate() {
        assert_ne!(
            one[i], host[i],
            "one-shot run shares the host's {n} namespace"
        );
    }
    a.destroy().unwrap();
    b.destroy().unwrap();
}

/// The program is not pid 1: its parent is the reaper (pid 1), and the fresh pid namespace
/// holds only the reaper and the program.
#[test]
fn reaper_is_pid_1_and_only_instance_processes_are_visible() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os\n\
         pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n\
         ppid1 = open('/proc/1/stat').read().rsplit(')', 1)[1].split()[1]\n\
         print(os.getpid(), os.getppid(), os.path.isdir('/proc/1'), ppid1, ' '.join(map(str, pids)))",
    );
    let out = ok(&o);
    let f: Vec<&str> = out.split_whitespace().collect();
    let me: u32 = f[0].parse().unwrap();
    assert_ne!(me, 1, "the program must not be pid 1: {out}");
    assert_eq!(
        f[1], "1",
        "the program's parent must be the reaper (pid 1): {out}"
    );
    assert_eq!(f[2], "True", "/proc/1 must exist: {out}");
    assert_eq!(f[3], "0", "pid 1's parent is outside the namespace: {out}");
    let pids: Vec<u32> = f[4..].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(
        pids,
        vec![1, me],
        "only the reaper and the program may be visible: {out}"
    );
}

/// `kill(-1, SIGKILL)` inside reaches the instance's own processes, but neither a host process
/// (as non-root it runs under the very same host uid) nor another instance's processes.
#[test]
fn kill_minus_one_stays_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let mut sentinel = util::KillOnDrop(
        std::process::Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let other = sb.create().unwrap();
    let bg = ok(&sh_in(&other, "sleep 100 >/dev/null 2>&1 & echo $!"))
        .trim()
        .to_string();

    let o = util::py(
        &sb,
        "import os, signal, subprocess\n\
         p = subprocess.Popen(['sleep', '100'])\n\
         os.kill(-1, signal.SIGKILL)\n\
         print(p.wait())",
    );
    // The instance's own child was killed by it: the call did reach something.
    assert_eq!(ok(&o).trim(), "-9");

    std::thread::sleep(Duration::from_millis(100));
    let alive = sentinel.0.try_wait().unwrap();
    drop(sentinel);
    assert!(
        alive.is_none(),
        "kill(-1) inside killed a host process: {alive:?}"
    );
    let o = sh_in(&other, &format!("kill -0 {bg} && echo alive"));
    assert_eq!(
        ok(&o).trim(),
        "alive",
        "kill(-1) inside killed another instance's process"
    );
    other.destroy().unwrap();
}

/// Orphans are reparented to the reaper and reaped: after double-forked grandchildren exit,
/// no zombie is left, within one run and across execs of an instance.
#[test]
fn orphans_are_reaped() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    // Every process of the instance, and the zombies among them.
    let scan = "def scan():\n    \
                    pids, zombies = [], []\n    \
                    for p in os.listdir('/proc'):\n        \
                        if p.isdigit():\n            \
                            try:\n                \
                                s = open('/proc/%s/stat' % p).read()\n            \
                            except FileNotFoundError:\n                \
                                continue\n            \
                            pids.append(int(p))\n            \
                            if s.rsplit(')', 1)[1].split()[0] == 'Z':\n                \
                                zombies.append(int(p))\n    \
                    return 'pids=%s zombies=%s me=%d' % (sorted(pids), sorted(zombies), os.getpid())\n";
    let want = |line: &str| {
        let me = line.rsplit('=').next().unwrap();
        format!("pids=[1, {me}] zombies=[] me={me}")
    };
    let code = format!(
        "import os, time, sys\n{scan}\
         for i in range(5):\n    \
             pid = os.fork()\n    \
             if pid == 0:\n        \
                 if os.fork() == 0:\n            \
                     time.sleep(0.1)\n            \
                     sys.stdout.write('ppid %d\\n' % os.getppid()); sys.stdout.flush()\n            \
                     os._exit(0)\n        \
                 os._exit(0)\n    \
             os.waitpid(pid, 0)\n\
         time.sleep(0.5)\n\
         print(scan())\n"
    );
    let out = ok(&util::py(&sb, &code));
    let ppids: Vec<&str> = out.lines().filter(|l| l.starts_with("ppid")).collect();
    assert_eq!(
        ppids,
        vec!["ppid 1"; 5],
        "orphans must be reparented to the reaper: {out}"
    );
    let line = out.lines().find(|l| l.starts_with("pids=")).unwrap();
    assert_eq!(line, want(line), "zombies or stray processes left: {out}");

    // Across execs: orphans left by one exec are reaped before the next looks.
    let inst = sb.create().unwrap();
    ok(&sh_in(
        &inst,
        "for i in 1 2 3 4 5; do sh -c '(sleep 0.1; exit 3) &' ; done; setsid sh -c 'exit 0' &",
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = inst
        .exec(&Command::python(format!("import os\n{scan}print(scan())")))
        .unwrap();
    let out = ok(&out);
    assert_eq!(
        out.trim(),
        want(out.trim()),
        "zombies or stray processes left across execs"
    );
    inst.destroy().unwrap();
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
    for d in rsandbox::ns::template::SYSTEM_DIRS {
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
    for n in rsandbox::ns::template::DEV_NODES {
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
    let mut want: BTreeSet<String> = ["/", "/proc", "/dev/shm", "/tmp", "/home/sandbox"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for d in rsandbox::ns::template::SYSTEM_DIRS {
        let host = Path::new("/").join(d);
        if std::fs::symlink_metadata(&host)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            want.insert(host.display().to_string());
        }
    }
    for n in rsandbox::ns::template::DEV_NODES {
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
        "fd full null pts random shm stderr stdin stdout urandom zero"
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
        l[12], "[] False",
        "no pts and no tty in a non-interactive run"
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

/// The program is uid/gid 1000 with every capability set empty, no_new_privs, its own
/// session, only fds 0-2, RLIMIT_CORE 0 and RLIMIT_NOFILE 1024; it cannot read the reaper.
#[test]
fn identity_privileges_and_limits() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os, resource, errno\n\
         st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n\
         for k in ['Uid', 'Gid', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp']:\n    \
             print(k, ' '.join(st[k].split()))\n\
         print('sid', os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n\
         fds = [int(f) for f in os.listdir('/proc/self/fd')]\n\
         def is_open(fd):\n    \
             try:\n        \
                 os.fstat(fd); return True\n    \
             except OSError:\n        \
                 return False\n\
         print('fds', sorted(f for f in fds if is_open(f)))\n\
         print('core', resource.getrlimit(resource.RLIMIT_CORE))\n\
         print('nofile', resource.getrlimit(resource.RLIMIT_NOFILE))\n\
         print('groups', os.getgroups())\n\
         for p in ['/proc/1/mem', '/proc/1/environ']:\n    \
             try:\n        \
                 open(p, 'rb').read(1); print(p, 'readable')\n    \
             except OSError as e:\n        \
                 print(p, errno.errorcode[e.errno])\n\
         for name, f in [('setuid', lambda: os.setuid(0)), ('chroot', lambda: os.chroot('/tmp')),\n\
                         ('setgroups', lambda: os.setgroups([]))]:\n    \
             try:\n        \
                 f(); print(name, 'ok')\n    \
             except OSError as e:\n        \
                 print(name, errno.errorcode[e.errno])",
    );
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "Uid 1000 1000 1000 1000");
    assert_eq!(l[1], "Gid 1000 1000 1000 1000");
    for (i, k) in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .iter()
        .enumerate()
    {
        assert_eq!(l[2 + i], format!("{k} 0000000000000000"));
    }
    assert_eq!(l[7], "NoNewPrivs 1");
    assert_eq!(
        l[9], "sid True True",
        "the program must lead its own session"
    );
    assert_eq!(l[10], "fds [0, 1, 2]", "only stdio may be open");
    assert_eq!(l[11], "core (0, 0)");
    assert_eq!(l[12], "nofile (1024, 1024)");
    if util::is_root() {
        assert_eq!(l[13], "groups []", "supplementary groups must be cleared");
    }
    assert_eq!(
        l[14], "/proc/1/mem EACCES",
        "the reaper's memory must be unreadable"
    );
    assert_eq!(l[15], "/proc/1/environ EACCES");
    // uid 0 is not mapped at all: nothing inside can become root, even of the namespace.
    assert_eq!(l[16], "setuid EINVAL");
    // No capability in the instance's own user namespace either.
    assert_eq!(l[17], "chroot EPERM");
    assert_eq!(l[18], "setgroups EPERM");
}

/// Reads the uid of a `/proc/PID/uid_map` or `gid_map` with one line `1000 HOSTID 1`.
fn mapped_id(pid: i32, which: &str) -> u32 {
    let map = std::fs::read_to_string(format!("/proc/{pid}/{which}")).unwrap();
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 1, "{which}: {map}");
    assert_eq!(lines[0][0], "1000", "{which}: {map}");
    assert_eq!(
        lines[0][2], "1",
        "{which}: exactly one id may be mapped: {map}"
    );
    lines[0][1].parse().unwrap()
}

/// The host uid a process runs under.
fn host_uid_of(pid: i32) -> u32 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts a background `sleep` in `inst` and returns its host pid (a child of the reaper).
fn background_sleep_host_pid(inst: &Instance) -> i32 {
    ok(&sh_in(inst, "sleep 30 >/dev/null 2>&1 & echo $!"));
    let reaper = inst.reaper_pid().unwrap();
    for _ in 0..100 {
        if let Some(&(p, _)) = util::children_of(reaper).first() {
            return p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the background sleep never showed up under the reaper {reaper}");
}

/// As root, concurrent instances map uid 1000 to distinct host uids from the documented range,
/// never 0, and the programs really run under them.
#[test]
fn root_instances_get_distinct_unprivileged_host_uids() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("root") {
        return;
    }
    let sb = util::sandbox();
    let insts: Vec<Instance> = (0..3).map(|_| sb.create().unwrap()).collect();
    let mut uids = BTreeSet::new();
    for inst in &insts {
        let reaper = inst.reaper_pid().unwrap();
        let uid = mapped_id(reaper, "uid_map");
        let gid = mapped_id(reaper, "gid_map");
        let range =
            rsandbox::ns::user::UID_BASE..rsandbox::ns::user::UID_BASE + rsandbox::ns::user::SLOTS;
        assert!(
            range.contains(&uid),
            "host uid {uid} is outside the documented range {range:?}"
        );
        assert_ne!(uid, 0);
        assert_eq!(gid, uid, "gid follows the uid's slot");
        let prog = background_sleep_host_pid(inst);
        assert_eq!(
            host_uid_of(prog),
            uid,
            "the program must run as the mapped host uid"
        );
        uids.insert(uid);
    }
    assert_eq!(
        uids.len(),
        3,
        "concurrent instances share a host uid: {uids:?}"
    );
    for inst in insts {
        inst.destroy().unwrap();
    }
}

/// Unprivileged, uid 1000 inside maps to the invoking user (never root), one id only.
#[test]
fn nonroot_instances_map_to_the_invoking_user() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("nonroot") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    let reaper = inst.reaper_pid().unwrap();
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!(mapped_id(reaper, "uid_map"), euid);
    assert_eq!(mapped_id(reaper, "gid_map"), egid);
    let prog = background_sleep_host_pid(&inst);
    assert_eq!(host_uid_of(prog), euid);
    inst.destroy().unwrap();
}

/// The hostname inside is "sandbox"; the program cannot change it (EPERM), and the host's
/// hostname is untouched.
#[test]
fn hostname_is_sandbox_and_fixed() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import socket, errno, os\n\
         print(socket.gethostname(), os.uname().nodename)\n\
         try:\n    \
             socket.sethostname('pwned'); print('set')\n\
         except OSError as e:\n    \
             print(errno.errorcode[e.errno])\n\
         print(socket.gethostname())",
    );
    assert_eq!(ok(&o), "sandbox sandbox\nEPERM\nsandbox\n");
    let o = util::sh(&sb, "hostname; hostname pwned 2>&1; echo rc=$?");
    let out = ok(&o);
    assert!(
        out.starts_with("sandbox\n") && out.ends_with("rc=1\n"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_before
    );
    assert_ne!(host_before.trim(), "pwned");
}

/// Without network (the default) there is only `lo`, and it is down: UDP to 127.0.0.1 or
/// anywhere else (192.0.2.1, TEST-NET-1, never routed) fails with ENETUNREACH. TCP connects
/// fail too: EACCES where Landlock (ABI 4+) denies TCP when the network is off, else
/// ENETUNREACH from the empty namespace.
#[test]
fn net_none_has_only_a_down_loopback() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let landlock_abi: u32 = sb
        .enforcement()
        .landlock
        .strip_prefix("abi")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let tcp = if landlock_abi >= 4 {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    let o = util::py(
        &sb,
        "import socket, errno, fcntl, struct\n\
         print(socket.if_nameindex())\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         flags = struct.unpack('16sH14x', fcntl.ioctl(s.fileno(), 0x8913, struct.pack('16sH14x', b'lo', 0)))[1]\n\
         print('up' if flags & 1 else 'down')\n\
         def err(f):\n    \
             try:\n        \
                 f(); return 'ok'\n    \
             except OSError as e:\n        \
                 return errno.errorcode.get(e.errno, str(e))\n\
         for addr in [('127.0.0.1', 9), ('192.0.2.1', 9)]:\n    \
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
             t = socket.socket(); t.settimeout(2)\n    \
             print(err(lambda: u.sendto(b'x', addr)), err(lambda: u.connect(addr)), err(lambda: t.connect(addr)))",
    );
    assert_eq!(
        ok(&o),
        format!(
            "[(1, 'lo')]\ndown\nENETUNREACH ENETUNREACH {tcp}\nENETUNREACH ENETUNREACH {tcp}\n"
        )
    );
}

/// With `Net::Loopback`, `lo` is up and a server and client talk over 127.0.0.1 inside; the
/// rest of the world is still unreachable.
#[test]
fn net_loopback_works_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    let o = util::py(
        &sb,
        "import socket, threading, errno\n\
         print(socket.if_nameindex())\n\
         srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n\
         port = srv.getsockname()[1]\n\
         def serve():\n    \
             c, _ = srv.accept(); c.sendall(c.recv(100).upper()); c.close()\n\
         t = threading.Thread(target=serve); t.start()\n\
         c = socket.create_connection(('127.0.0.1', port), timeout=5)\n\
         c.sendall(b'ping'); print(c.recv(100).decode()); t.join()\n\
         c = socket.socket(); c.settimeout(2)\n\
         try:\n    \
             c.connect(('192.0.2.1', 80)); print('connected')\n\
         except OSError as e:\n    \
             print(errno.errorcode.get(e.errno, e))",
    );
    assert_eq!(ok(&o), "[(1, 'lo')]\nPING\nENETUNREACH\n");
}
