//! The default profile's denials: each dangerous syscall's errno, user namespaces, personality.

use std::sync::OnceLock;

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};

use super::{json_map, ok, prelude, with_profile};
use crate::util;

/// The compiled default profile's verdict on a native call.
fn default_verdict(nr: i64, args: &[i64]) -> Verdict {
    static DEFAULT: OnceLock<rsandbox::testing::seccomp::Compiled> = OnceLock::new();
    let c = DEFAULT.get_or_init(|| {
        rsandbox::testing::seccomp::load(&Profile::Default)
            .unwrap()
            .unwrap()
    });
    let mut a = [0u64; 6];
    for (i, v) in args.iter().enumerate() {
        a[i] = *v as u64;
    }
    bpf::run(
        &c.program,
        &bpf::Data::new(bpf::AUDIT_ARCH_X86_64, nr as i32, a),
    )
    .unwrap()
}

/// One attempted syscall: a name for messages, the number, the arguments, and the errno the
/// default profile must answer (0: it must be allowed). The arguments are chosen so that the
/// kernel itself, without the filter, answers something else wherever it can (a bad pointer,
/// a bad fd, flags it rejects), and so that the call is harmless if it did go through.
struct Attempt {
    name: &'static str,
    nr: i64,
    args: Vec<i64>,
    errno: i32,
}

fn attempts() -> Vec<Attempt> {
    use libc::*;
    let a = |name, nr, args: &[i64], errno| Attempt {
        name,
        nr,
        args: args.to_vec(),
        errno,
    };
    let newuser = CLONE_NEWUSER as i64;
    vec![
        // The mount family.
        a("mount", SYS_mount, &[0, 0, 0, 0, 0], EPERM),
        a("umount2", SYS_umount2, &[0, 0xffff_ffff], EPERM),
        a("pivot_root", SYS_pivot_root, &[0, 0], EPERM),
        a("chroot", SYS_chroot, &[0], EPERM),
        a("fsopen", SYS_fsopen, &[0, 0xffff], EPERM),
        a("fsconfig", SYS_fsconfig, &[-1, 0, 0, 0, 0], EPERM),
        a("fsmount", SYS_fsmount, &[-1, 0, 0], EPERM),
        a("fspick", SYS_fspick, &[-1, 0, 0xffff], EPERM),
        a("move_mount", SYS_move_mount, &[-1, 0, -1, 0, 0xffff], EPERM),
        a("open_tree", SYS_open_tree, &[-1, 0, 0xffff], EPERM),
        a("mount_setattr", SYS_mount_setattr, &[-1, 0, 0, 0, 0], EPERM),
        // Namespaces: new ones (clone3 answers ENOSYS so libc falls back to clone) and setns.
        a("unshare(CLONE_NEWUSER)", SYS_unshare, &[newuser], EPERM),
        a(
            "unshare(CLONE_NEWNET)",
            SYS_unshare,
            &[CLONE_NEWNET as i64],
            EPERM,
        ),
        a("clone3", SYS_clone3, &[0, 0], ENOSYS),
        a("setns", SYS_setns, &[-1, 0], EPERM),
        // Other processes' memory and descriptors.
        a("ptrace(PTRACE_TRACEME)", SYS_ptrace, &[0, 0, 0, 0], EPERM),
        a(
            "process_vm_readv",
            SYS_process_vm_readv,
            &[1, 0, 0, 0, 0, 0],
            EPERM,
        ),
        a(
            "process_vm_writev",
            SYS_process_vm_writev,
            &[1, 0, 0, 0, 0, 0],
            EPERM,
        ),
        a("pidfd_getfd", SYS_pidfd_getfd, &[-1, 0, 0], EPERM),
        a("kcmp", SYS_kcmp, &[0, 0, 0, 0, 0], EPERM),
        // Kernel attack surface.
        a("bpf", SYS_bpf, &[0, 0, 0], EPERM),
        a("keyctl", SYS_keyctl, &[0, 0, 0], EPERM),
        a("add_key", SYS_add_key, &[0, 0, 0, 0, 0], EPERM),
        a("request_key", SYS_request_key, &[0, 0, 0, 0], EPERM),
        a("io_uring_setup", SYS_io_uring_setup, &[1, 0], EPERM),
        a(
            "io_uring_enter",
            SYS_io_uring_enter,
            &[-1, 0, 0, 0, 0, 0],
            EPERM,
        ),
        a(
            "io_uring_register",
            SYS_io_uring_register,
            &[-1, 0, 0, 0],
            EPERM,
        ),
        a(
            "perf_event_open",
            SYS_perf_event_open,
            &[0, 0, -1, -1, 0],
            EPERM,
        ),
        a(
            "userfaultfd(UFFD_USER_MODE_ONLY)",
            SYS_userfaultfd,
            &[1],
            EPERM,
        ),
        // Modules, kexec, reboot, host administration, the kernel log, clocks.
        a("init_module", SYS_init_module, &[0, 0, 0], EPERM),
        a("finit_module", SYS_finit_module, &[-1, 0, 0], EPERM),
        a("delete_module", SYS_delete_module, &[0, 0], EPERM),
        a("kexec_load", SYS_kexec_load, &[0, 0, 0, 0], EPERM),
        a(
            "kexec_file_load",
            SYS_kexec_file_load,
            &[-1, -1, 0, 0, 0],
            EPERM,
        ),
        a("reboot", SYS_reboot, &[0, 0, 0, 0], EPERM),
        a("swapon", SYS_swapon, &[0, 0], EPERM),
        a("swapoff", SYS_swapoff, &[0], EPERM),
        a("acct", SYS_acct, &[0], EPERM),
        a("quotactl", SYS_quotactl, &[0, 0, 0, 0], EPERM),
        a("syslog(SIZE_BUFFER)", SYS_syslog, &[10, 0, 0], EPERM),
        a("settimeofday", SYS_settimeofday, &[1, 0], EPERM),
        a("clock_settime", SYS_clock_settime, &[0, 0], EPERM),
        a("clock_adjtime", SYS_clock_adjtime, &[0, 0], EPERM),
        a("adjtimex", SYS_adjtimex, &[0], EPERM),
        a(
            "open_by_handle_at",
            SYS_open_by_handle_at,
            &[-1, 0, 0],
            EPERM,
        ),
        // personality beyond the harmless values; the harmless ones stay allowed.
        a(
            "personality(READ_IMPLIES_EXEC)",
            SYS_personality,
            &[0x0040_0000],
            EPERM,
        ),
        a(
            "personality(ADDR_NO_RANDOMIZE)",
            SYS_personality,
            &[0x0004_0000],
            EPERM,
        ),
        a("personality(PER_LINUX)", SYS_personality, &[0], 0),
        a("personality(PER_LINUX32)", SYS_personality, &[8], 0),
        // Terminal input injection, on the low 32 bits of the command as the kernel reads it.
        a("ioctl(TIOCSTI)", SYS_ioctl, &[0, 0x5412, 0], EPERM),
        a(
            "ioctl(1<<32|TIOCSTI)",
            SYS_ioctl,
            &[0, 0x1_0000_5412, 0],
            EPERM,
        ),
        a("ioctl(TIOCLINUX)", SYS_ioctl, &[0, 0x541c, 0], EPERM),
        // AF_VSOCK reaches the hypervisor host whatever the network namespace.
        a(
            "socket(AF_VSOCK)",
            SYS_socket,
            &[40, SOCK_STREAM as i64, 0],
            EPERM,
        ),
        a(
            "socket(AF_UNIX)",
            SYS_socket,
            &[AF_UNIX as i64, SOCK_STREAM as i64, 0],
            0,
        ),
    ]
}

/// The script that makes every attempt (and clone with CLONE_NEWUSER, which needs care: if it
/// succeeds the new process must leave at once) and prints `{"name": errno}`.
fn attempts_script(list: &[Attempt]) -> String {
    let mut s = prelude();
    s.push_str("out = {}\n");
    for t in list {
        let args: Vec<String> = t.args.iter().map(i64::to_string).collect();
        s.push_str(&format!(
            "out[{:?}] = attempt({}, {})\n",
            t.name,
            t.nr,
            args.join(", ")
        ));
    }
    s.push_str(&format!(
        "out['clone(CLONE_NEWUSER)'] = attempt_clone({})\n",
        libc::CLONE_NEWUSER | libc::SIGCHLD
    ));
    s.push_str("print(json.dumps(out))\n");
    s
}

/// The default profile answers each dangerous syscall of the list with the errno it
/// sets (EPERM; clone3 ENOSYS), and allows the harmless personality values and AF_UNIX
/// sockets. Without the filter the kernel answers differently for most of them; for those it
/// also refuses with EPERM (no capability: pivot_root, fsopen, fsmount, fspick, move_mount,
/// reboot, swapon/off, acct, syslog, unshare(CLONE_NEWNET); more where sysctls restrict bpf,
/// perf or io_uring) the compiled program is shown to return that errno, and a copy of the
/// profile whose errnos are all EHWPOISON, loaded the same way, answers every denied call
/// with EHWPOISON: the loaded filter is the answer whatever the kernel's configuration.
#[test]
fn default_profile_denies_dangerous_syscalls_with_its_errno() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let list = attempts();
    let script = attempts_script(&list);
    let filtered = json_map(&util::py(&with_profile(Profile::Default), &script));
    let unfiltered = json_map(&util::py(&with_profile(Profile::Unconfined), &script));
    let mut same = Vec::new();
    for t in &list {
        let got = filtered[t.name];
        assert_eq!(
            got, t.errno as i64,
            "{}: the default profile answered errno {got}, expected {}",
            t.name, t.errno
        );
        if t.errno == 0 {
            continue;
        }
        if unfiltered[t.name] == t.errno as i64 {
            // The kernel alone refuses this one the same way: the filter must be why here.
            assert_eq!(
                default_verdict(t.nr, &t.args),
                Verdict::Errno(t.errno as u16),
                "{}: not denied by the filter",
                t.name
            );
            same.push(t.name);
        }
    }
    assert_eq!(filtered["clone(CLONE_NEWUSER)"], libc::EPERM as i64);
    assert_eq!(
        unfiltered["clone(CLONE_NEWUSER)"], 0,
        "unfiltered, an unprivileged user namespace should be allowed here"
    );
    eprintln!(
        "calls the kernel also refuses with the same errno (checked on the compiled BPF and \
         through the tagged profile): {same:?}"
    );

    // How many of these the kernel refuses by itself depends on its configuration (sysctls
    // such as kernel.unprivileged_bpf_disabled, perf_event_paranoid, io_uring_disabled): so
    // the loaded filter is also shown to be the answer for every denied call on any kernel.
    // The same profile with every errnoRet replaced by EHWPOISON, which none of these calls
    // returns by itself, must answer exactly the denied calls with EHWPOISON and let the
    // others through as before.
    let mut tagged: serde_json::Value =
        serde_json::from_str(include_str!("../../../seccomp-profiles/default.json")).unwrap();
    for rule in tagged["syscalls"].as_array_mut().unwrap() {
        if rule["action"] == "SCMP_ACT_ERRNO" {
            rule["errnoRet"] = serde_json::json!(libc::EHWPOISON);
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), tagged.to_string()).unwrap();
    let got = json_map(&util::py(
        &with_profile(Profile::File(file.path().to_path_buf())),
        &script,
    ));
    for t in &list {
        let want = if t.errno == 0 {
            0
        } else {
            libc::EHWPOISON as i64
        };
        assert_eq!(
            got[t.name], want,
            "{}: under the tagged profile the answer was errno {}, expected {want}",
            t.name, got[t.name]
        );
    }
    assert_eq!(got["clone(CLONE_NEWUSER)"], libc::EHWPOISON as i64);
}

/// No new user namespaces under the default profile (`unshare -U` fails with EPERM), while
/// os.fork, threads and subprocess work: libc's clone3 gets ENOSYS and falls back to clone,
/// whose flags the filter can read.
#[test]
fn default_profile_refuses_user_namespaces_but_not_processes_or_threads() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::sh(&sb, "unshare -U /bin/true; echo rc=$?");
    assert_eq!(ok(&o), "rc=1\n", "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr_bytes()).into_owned();
    assert!(err.contains("Operation not permitted"), "{err:?}");

    let code = format!(
        "{}\n\
import subprocess, threading
assert raw({}, 0, 0)[1] == errno.ENOSYS
pid = os.fork()
if pid == 0:
    os._exit(7)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
seen = []
ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
assert sorted(seen) == [0, 1, 2, 3], seen
r = subprocess.run(['/bin/sh', '-c', 'echo from-child'], capture_output=True, text=True)
print(r.returncode, r.stdout.strip())",
        prelude(),
        libc::SYS_clone3
    );
    assert_eq!(ok(&util::py(&sb, &code)), "0 from-child\n");
}

/// `personality(0xffffffff)` only reads the persona; it is harmless and Docker's profile
/// allows it, but default.json's masked rules match it (all bits set), so it gets EPERM.
#[test]
fn default_profile_allows_the_personality_query() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = format!(
        "{}\nprint(raw({}, 0xffffffff))",
        prelude(),
        libc::SYS_personality
    );
    assert_eq!(ok(&util::py(&util::sandbox(), &code)), "(0, 0)\n");
}
