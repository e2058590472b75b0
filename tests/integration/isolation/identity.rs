//! Identity: uid/gid 1000 without capabilities, the host uids it maps to, the hostname.

use std::collections::BTreeSet;
use std::time::Duration;

use rsandbox::Instance;

use super::{ok, sh_in};
use crate::util;

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
        let range = rsandbox::testing::ns::user::UID_BASE
            ..rsandbox::testing::ns::user::UID_BASE + rsandbox::testing::ns::user::SLOTS;
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
