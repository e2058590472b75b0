//! Privilege: capabilities, setuid, nested userns and setns, release_agent, nice, clock, hostname.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rsandbox::seccomp::Profile;

use super::{attack, eperm_verdict, expect_all, open_tempdir, s, with_profile};
use crate::util;

/// A C program that prints its real, effective and saved uid and gid, then tries setuid(0).
const WHOAMI_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    uid_t r, e, s; gid_t gr, ge, gs;
    getresuid(&r, &e, &s); getresgid(&gr, &ge, &gs);
    int rc = setuid(0);
    printf("uid %u %u %u gid %u %u %u setuid0 %s\n", r, e, s, gr, ge, gs, rc == 0 ? "ok" : strerrorname_np(errno));
    return 0;
}
"#;

/// Capability sets are empty, NoNewPrivs is 1, Seccomp is 2 (filter mode, one filter), in a
/// program and in its children. A setuid-root binary does not elevate: a host one (passwd,
/// setuid root, 04755, still marked so inside) runs as uid 1000, and as root a setuid-root
/// copy of a C program bound with `--ro` reports uid/euid/suid 1000 and setuid(0) EINVAL
/// (uid 0 is not even mapped), with and without the seccomp filter (nosuid mounts and
/// no_new_privs are the reasons, not seccomp).
#[test]
fn caps_no_new_privs_seccomp_and_setuid_binaries() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = open_tempdir();
    let whoami = util::compile_c(dir.path(), "whoami", WHOAMI_C);
    let suid = util::is_root();
    if suid {
        std::os::unix::fs::chown(&whoami, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&whoami, std::fs::Permissions::from_mode(0o6755)).unwrap();
    } else {
        eprintln!("NOTE: unprivileged pass: no setuid-root binary of our own (needs root); the host's passwd stands in");
    }
    let body = r#"
import subprocess, time
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
for k in ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp', 'Seccomp_filters']:
    out[k] = st[k].strip()
child = subprocess.run(['/bin/grep', '-E', '^(CapEff|NoNewPrivs|Seccomp):', '/proc/self/status'], capture_output=True, text=True)
out['child'] = ' '.join(child.stdout.split())
p = subprocess.Popen(['/usr/bin/passwd'], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)
out['passwd_mode'] = oct(os.stat('/usr/bin/passwd').st_mode & 0o7777)
out['passwd_uid'] = ' '.join(open('/proc/%d/status' % p.pid).read().split('Uid:')[1].split('\n')[0].split())
p.kill(); p.wait()
out['whoami_mode'] = oct(os.stat('/mnt/suid/whoami').st_mode & 0o7777)
out['whoami'] = subprocess.run(['/mnt/suid/whoami'], capture_output=True, text=True).stdout.strip()
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let sb = util::builder()
            .seccomp(profile.clone())
            .ro(dir.path(), Some(PathBuf::from("/mnt/suid")))
            .build()
            .unwrap();
        let r = attack(&sb, body);
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(s(&r, k), "0000000000000000", "{k}: {r:#?}");
        }
        assert_eq!(s(&r, "NoNewPrivs"), "1");
        if profile == Profile::Default {
            assert_eq!(s(&r, "Seccomp"), "2");
            assert_eq!(s(&r, "Seccomp_filters"), "1");
            assert_eq!(
                s(&r, "child"),
                "CapEff: 0000000000000000 NoNewPrivs: 1 Seccomp: 2"
            );
        }
        assert_eq!(s(&r, "passwd_mode"), "0o4755", "the setuid bit is there");
        assert_eq!(s(&r, "passwd_uid"), "1000 1000 1000 1000", "{profile:?}");
        if suid {
            assert_eq!(s(&r, "whoami_mode"), "0o6755");
        }
        assert_eq!(
            s(&r, "whoami"),
            "uid 1000 1000 1000 gid 1000 1000 1000 setuid0 EINVAL",
            "{profile:?}"
        );
    }
}

/// Nested user namespaces and setns fail with the profile's answer, with real arguments:
/// unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER) get EPERM, clone3 with CLONE_NEWUSER in its
/// struct gets ENOSYS (so libc would fall back to clone), `unshare -Ur` fails, setns on the
/// instance's own namespace fds gets EPERM and pid 1's namespace links are unreadable. Without
/// the filter the kernel allows the first three (a nested namespace is legal), so the filter
/// is the reason.
#[test]
fn nested_user_namespaces_and_setns_fail() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let body = r#"
import subprocess
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x20000, 17
out['unshare_user'] = attempt(272, CLONE_NEWUSER)
out['unshare_user_mnt'] = attempt(272, CLONE_NEWUSER | CLONE_NEWNS)
out['clone_user'] = attempt(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
args = (ctypes.c_uint64 * 11)(CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0)
out['clone3_user'] = attempt(435, args, 88)
r = subprocess.run(['unshare', '-Ur', 'true'], capture_output=True, text=True)
out['unshare_cmd'] = '%d %s' % (r.returncode, 'Operation not permitted' in r.stderr)
for ns in ['user', 'mnt', 'pid', 'net']:
    fd = os.open('/proc/self/ns/' + ns, os.O_RDONLY)
    out['setns_' + ns] = attempt(308, fd, 0)
    out['proc1_' + ns] = err(lambda: os.open('/proc/1/ns/' + ns, os.O_RDONLY))
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "unshare_user",
            "unshare_user_mnt",
            "clone_user",
            "setns_user",
            "setns_mnt",
            "setns_pid",
            "setns_net",
        ],
        "EPERM",
        "seccomp",
    );
    assert_eq!(s(&r, "clone3_user"), "ENOSYS");
    assert_eq!(s(&r, "unshare_cmd"), "1 True");
    for ns in ["user", "mnt", "pid", "net"] {
        assert_eq!(s(&r, &format!("proc1_{ns}")), "EACCES");
    }
    let bare = attack(&with_profile(Profile::Unconfined), body);
    expect_all(
        &bare,
        &[
            "unshare_user",
            "unshare_user_mnt",
            "clone_user",
            "clone3_user",
        ],
        "ok",
        "without the filter the kernel allows nesting",
    );
    // setns into one's own user namespace is EINVAL from the kernel: the filter's EPERM differs.
    assert_eq!(s(&bare, "setns_user"), "EINVAL");
    eperm_verdict(libc::SYS_setns, &[]);
}

/// The cgroup v1 `release_agent` escape (unshare a user, mount and cgroup namespace, mount a
/// v1 hierarchy, write release_agent) fails at its first step: the unshare and the cgroup
/// mount get the profile's EPERM, and no cgroup filesystem is reachable inside (/sys is not
/// mounted; /proc/self/cgroup shows only '/'). The host's release_agent and
/// notify_on_release files read the same afterwards.
#[test]
fn cgroup_release_agent_trick_fails_at_its_first_step() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let host_files = || -> BTreeMap<PathBuf, String> {
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in ["release_agent", "notify_on_release"] {
                let p = e.path().join(f);
                if let Ok(v) = std::fs::read_to_string(&p) {
                    m.insert(p, v);
                }
            }
        }
        m
    };
    let before = host_files();
    let body = r#"
out['unshare'] = attempt(272, 0x10000000 | 0x20000 | 0x02000000)
os.mkdir('/tmp/cgrp')
for ctl in ['memory', 'rdma', 'none,name=x']:
    out['mount_' + ctl] = attempt(165, b'cgroup', b'/tmp/cgrp', b'cgroup', 0, ctl.encode())
out['mount_cgroup2'] = attempt(165, b'cgroup2', b'/tmp/cgrp', b'cgroup2', 0, 0)
out['sys'] = err(lambda: os.listdir('/sys'))
out['cgroupfs'] = [l for l in open('/proc/self/mountinfo') if ' - cgroup' in l]
out['paths'] = sorted(set(l.strip().split(':', 2)[2] for l in open('/proc/self/cgroup')))
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "unshare",
            "mount_memory",
            "mount_rdma",
            "mount_none,name=x",
            "mount_cgroup2",
        ],
        "EPERM",
        "seccomp",
    );
    eperm_verdict(libc::SYS_mount, &[]);
    assert_eq!(s(&r, "sys"), "ENOENT");
    assert_eq!(r["cgroupfs"], serde_json::json!([]));
    assert_eq!(r["paths"], serde_json::json!(["/"]));
    assert_eq!(host_files(), before);
}

/// Raising priority (nice below 0, a real-time scheduler), setting the clock
/// (clock_settime, settimeofday, adjtimex) and changing the host or domain name all fail
/// (EPERM; the clock calls by the profile, as the compiled program shows) and reach nothing
/// of the host: its hostname, its clock (wall minus monotonic) and the supervisor's nice
/// value are the same afterwards.
#[test]
fn nice_clock_and_hostname_stay_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let clock_offset = || {
        let mut rt = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut mono = rt;
        // SAFETY: clock_gettime writes the timespecs we pass.
        unsafe {
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut rt);
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono);
        }
        (rt.tv_sec - mono.tv_sec) as f64 + (rt.tv_nsec - mono.tv_nsec) as f64 / 1e9
    };
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    // SAFETY: getpriority has no memory effects.
    let nice_before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let offset_before = clock_offset();
    let body = r#"
import socket
out['nice'] = err(lambda: os.nice(-1))
out['setpriority'] = err(lambda: os.setpriority(os.PRIO_PROCESS, 0, -10))
out['fifo'] = err(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)))
ts = (ctypes.c_long * 2)(0, 0)
out['clock_settime'] = attempt(227, 0, ts)
out['settimeofday'] = attempt(164, ts, 0)
tx = (ctypes.c_char * 256)()
ctypes.memmove(tx, (ctypes.c_int * 1)(0x8001), 4)  # ADJ_OFFSET | ADJ_OFFSET_SINGLESHOT... any mode
out['adjtimex'] = attempt(159, tx)
out['sethostname'] = err(lambda: socket.sethostname('pwned'))
out['setdomainname'] = attempt(171, b'pwned', 5)
out['hostname'] = socket.gethostname()
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "nice",
            "fifo",
            "clock_settime",
            "settimeofday",
            "adjtimex",
            "sethostname",
            "setdomainname",
        ],
        "EPERM",
        "no capability; seccomp for the clocks",
    );
    assert_eq!(s(&r, "setpriority"), "EACCES", "no CAP_SYS_NICE");
    assert_eq!(s(&r, "hostname"), "sandbox");
    for nr in [
        libc::SYS_clock_settime,
        libc::SYS_settimeofday,
        libc::SYS_adjtimex,
    ] {
        eperm_verdict(nr, &[]);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host_domain
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        nice_before
    );
    assert!(
        (clock_offset() - offset_before).abs() < 0.5,
        "the host's wall clock moved"
    );
}
