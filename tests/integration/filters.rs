//! Syscall and filesystem filters, proven by real attempts inside instances: the seccomp profiles
//! (default, strict, Docker's), Landlock (files, TCP, scopes), `--strict`, and the report's
//! `enforcement` and `seccomp_violation` (DESIGN.md §3 step 7, §5, §8).
//!
//! A denial counts only when rsandbox is the reason: each seccomp attempt is also made in an
//! instance without the filter (`Profile::Unconfined`) and must get a different answer there;
//! where the kernel alone would already answer the same (no capability, x32 compiled out), the
//! test evaluates the compiled BPF program on the same call instead. Landlock denials go
//! through paths that are mounted writable and that DAC allows, so nothing but Landlock can
//! refuse them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};
use rsandbox::{Command, Instance, Net, Outcome, Sandbox, SeccompViolation, Status};

use crate::util;

/// A sandbox with the given seccomp profile and the test defaults.
fn with_profile(profile: Profile) -> Sandbox {
    util::builder()
        .seccomp(profile)
        .build()
        .expect("building the sandbox")
}

/// Asserts a run ended with exit 0, showing its report otherwise; returns its stdout.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// Runs Python code in a live instance.
fn py_in(inst: &Instance, code: &str) -> Outcome {
    inst.exec(&Command::python(code)).expect("exec")
}

/// Parses the `{"name": number}` JSON object a script printed on its last line.
fn json_map(o: &Outcome) -> BTreeMap<String, i64> {
    let out = ok(o);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {out:?}"))
}

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

/// Docker's default profile (a copy in tests/data), written to a temp dir: in CI the
/// unprivileged pass may not be able to read the source tree. Keep the dir while it is used.
fn docker_profile() -> (tempfile::TempDir, Profile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker-default-seccomp.json");
    std::fs::write(&path, include_str!("../data/docker-default-seccomp.json")).unwrap();
    (dir, Profile::File(path))
}

/// Python helpers: `raw(nr, *args)` makes one syscall through libc and returns (result,
/// errno); `attempt(nr, *args)` makes it in a forked child and returns its errno (0 when it
/// succeeded), so a call the filter should have stopped cannot change the script's process.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def raw(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & 0xffffffffffffffff) for a in args])
    return r, (ctypes.get_errno() if r == -1 else 0)
def attempt(nr, *args):
    pid = os.fork()
    if pid == 0:
        os._exit(raw(nr, *args)[1])
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
def attempt_clone(flags):
    pid = os.fork()
    if pid == 0:
        r, e = raw(SYS_CLONE, flags, 0, 0, 0, 0)
        if r == 0:
            os._exit(0)
        if r > 0:
            os.waitpid(r, 0)
        os._exit(e)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
"#;

/// The prelude with `SYS_CLONE` defined.
fn prelude() -> String {
    format!("SYS_CLONE = {}\n{PRELUDE}", libc::SYS_clone)
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

/// The default profile answers each dangerous syscall of the issue's list with the errno it
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
        serde_json::from_str(include_str!("../../seccomp-profiles/default.json")).unwrap();
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

/// A small static x86_64 program that makes i386 (`int $0x80`) and x32 (bit 30) syscalls and
/// prints each raw result (`-errno` on failure). Built once with the host's C compiler.
fn abi_program() -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = r#"
#include <stdio.h>
static long i386_call(long nr, long a1, long a2, long a3) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
    return ret;
}
static long x64_call(long nr) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}
int main(void) {
    printf("i386_getpid %ld\n", i386_call(20, 0, 0, 0));
    printf("i386_ptrace %ld\n", i386_call(26, 16 /* PTRACE_ATTACH */, 0, 0));
    printf("i386_mount %ld\n", i386_call(21, 0, 0, 0));
    printf("x32_getpid %ld\n", x64_call(39 | 0x40000000L));
    printf("x64_getpid %ld\n", x64_call(39));
    return 0;
}
"#;
        let dir = tempfile::tempdir().unwrap();
        let out = util::compile_c(dir.path(), "abi", src);
        std::fs::read(&out).unwrap()
    })
}

/// Runs the ABI program under `profile` and returns its results by name.
fn abi_results(profile: Profile) -> BTreeMap<String, i64> {
    let cmd = Command::new("./abi").file("abi", abi_program(), 0o755);
    let o = with_profile(profile).run(&cmd).expect("run");
    ok(&o)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Every non-native ABI is refused with ENOSYS, whatever the call: i386 `int 0x80` getpid,
/// ptrace and mount, and x32 getpid, under the default and the strict profile (the strict one
/// does not kill for them: the architecture check comes first). Without a filter this kernel
/// runs i386 calls (getpid returns the pid), so the filter is what refuses them. This kernel
/// has no x32 at all (it answers -ENOSYS unfiltered too), so for x32 the proof is the compiled
/// program: its verdict is ENOSYS although the default profile's default action is to allow.
#[test]
fn non_native_abis_are_refused() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let enosys = -(libc::ENOSYS as i64);
    for profile in [Profile::Default, Profile::Strict] {
        let r = abi_results(profile.clone());
        for k in ["i386_getpid", "i386_ptrace", "i386_mount", "x32_getpid"] {
            assert_eq!(r[k], enosys, "{profile:?}: {k}: {r:?}");
        }
        assert!(
            r["x64_getpid"] > 0,
            "{profile:?}: the native getpid must work: {r:?}"
        );
    }
    let bare = abi_results(Profile::Unconfined);
    if bare["i386_getpid"] > 0 {
        assert_eq!(bare["i386_getpid"], bare["x64_getpid"], "{bare:?}");
        assert_ne!(bare["i386_mount"], enosys, "{bare:?}");
    } else {
        eprintln!("NOTE: this kernel runs no i386 syscalls (ia32 emulation off); relying on the BPF verdict");
    }
    let c = rsandbox::testing::seccomp::load(&Profile::Default)
        .unwrap()
        .unwrap();
    let eval = |arch, nr: i32| bpf::run(&c.program, &bpf::Data::new(arch, nr, [0; 6])).unwrap();
    assert_eq!(
        eval(bpf::AUDIT_ARCH_I386, 20),
        Verdict::Errno(libc::ENOSYS as u16)
    );
    // x32: the kernel answered the same unfiltered, so only the program can show the denial.
    assert_eq!(
        bare["x32_getpid"], enosys,
        "x32 is compiled out of this kernel: {bare:?}"
    );
    assert_eq!(
        eval(
            bpf::AUDIT_ARCH_X86_64,
            bpf::X32_SYSCALL_BIT | libc::SYS_getpid as i32
        ),
        Verdict::Errno(libc::ENOSYS as u16)
    );
    assert_eq!(
        eval(bpf::AUDIT_ARCH_X86_64, libc::SYS_getpid as i32),
        Verdict::Allow
    );
}

/// The report says which profile is in force (`default`, `strict`, `none` without a filter,
/// a file's stem) and the Landlock ABI used (`abiN`, N = min(kernel ABI, 7): `abi7` here), in
/// the Outcome of a real run as in `Sandbox::enforcement`.
#[test]
fn report_names_the_profile_and_the_landlock_abi() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let abi = rsandbox::probe::host().landlock_abi;
    let landlock = format!("abi{}", abi.min(7));
    let (_dir, docker) = docker_profile();
    for (profile, name) in [
        (Profile::Default, "default"),
        (Profile::Strict, "strict"),
        (Profile::Unconfined, "none"),
        (docker, "docker-default-seccomp"),
    ] {
        let sb = with_profile(profile);
        assert_eq!(sb.enforcement().seccomp, name);
        let o = sb.run(&Command::new("/bin/true")).unwrap();
        ok(&o);
        assert_eq!(o.enforcement.seccomp, name);
        assert_eq!(o.enforcement.landlock, landlock);
        assert_eq!(o.seccomp_violation, None);
    }
    if abi >= 7 {
        assert_eq!(landlock, "abi7");
    }
}

/// Under strict, a syscall the allowlist does not name gets ENOSYS (getcpu and
/// sched_rr_get_interval succeed without the filter).
#[test]
fn strict_answers_unlisted_syscalls_with_enosys() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = format!(
        "{}\nprint(json.dumps({{'getcpu': raw({}, 0, 0, 0)[1], 'sched_rr_get_interval': attempt({}, 0, 0)}}))",
        prelude(),
        libc::SYS_getcpu,
        libc::SYS_sched_rr_get_interval
    );
    let strict = json_map(&util::py(&with_profile(Profile::Strict), &code));
    let bare = json_map(&util::py(&with_profile(Profile::Unconfined), &code));
    assert_eq!(strict["getcpu"], libc::ENOSYS as i64, "{strict:?}");
    assert_eq!(
        strict["sched_rr_get_interval"],
        libc::ENOSYS as i64,
        "{strict:?}"
    );
    assert_eq!(bare["getcpu"], 0, "{bare:?}");
    assert_eq!(
        bare["sched_rr_get_interval"],
        libc::EFAULT as i64,
        "{bare:?}"
    );
}

/// Under strict, a kill-class call (ptrace, bpf, keyctl) kills the program: status `seccomp`,
/// `seccomp_violation` names the syscall and its number, and what it printed before is kept.
#[test]
fn strict_kills_attacks_and_names_the_syscall() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = with_profile(Profile::Strict);
    for (name, nr) in [
        ("ptrace", libc::SYS_ptrace),
        ("bpf", libc::SYS_bpf),
        ("keyctl", libc::SYS_keyctl),
    ] {
        let code = format!(
            "{}\nprint('before', flush=True)\nr = raw({nr}, 0, 0, 0, 0)\nprint('after', r)",
            prelude()
        );
        let o = util::py(&sb, &code);
        assert_eq!(o.status, Status::Seccomp, "{name}: {o:#?}");
        assert_eq!(
            o.seccomp_violation,
            Some(SeccompViolation {
                syscall: name.into(),
                nr
            }),
            "{o:#?}"
        );
        assert_eq!(util::stdout(&o), "before\n", "{name}: {o:#?}");
        assert_eq!(o.exit_code, None);
        assert!(o.signal.is_some(), "{o:#?}");
    }
}

/// Under strict, a child process (subprocess) that calls ptrace is killed and the violation
/// is reported, while the parent goes on and prints after it: the run itself is `ok`.
#[test]
fn strict_kill_in_a_child_is_reported_and_the_parent_goes_on() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = format!(
        "import subprocess, sys\n\
child = 'import ctypes; ctypes.CDLL(None).syscall({}, 0, 0, 0, 0); print(\"child survived\")'\n\
r = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)\n\
print('child', r.returncode, repr(r.stdout))\n\
print('parent goes on')",
        libc::SYS_ptrace
    );
    let o = util::py(&with_profile(Profile::Strict), &code);
    assert_eq!(ok(&o), "child -9 ''\nparent goes on\n");
    assert_eq!(
        o.seccomp_violation,
        Some(SeccompViolation {
            syscall: "ptrace".into(),
            nr: libc::SYS_ptrace
        })
    );
}

/// Under strict, a sleep that is stopped and continued resumes: the kernel restarts it with
/// `restart_syscall`, which strict.json does not list, so the resumed sleep gets ENOSYS
/// (coreutils: "cannot read realtime clock"; glibc aborts a futex wait the same way:
/// "The futex facility returned an unexpected error code", which test_subprocess hits when a
/// thread's timed GIL wait is interrupted by a child's SIGCHLD).
#[test]
fn strict_lets_a_stopped_sleep_resume() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let script =
        "/bin/sleep 0.5 & p=$!; /bin/sleep 0.2; kill -STOP $p; kill -CONT $p; wait $p; echo rc=$?";
    for profile in [Profile::Unconfined, Profile::Strict] {
        let o = util::sh(&with_profile(profile.clone()), script);
        assert_eq!(ok(&o), "rc=0\n", "{profile:?}: {o:#?}");
    }
}

/// Runs `python3 -m test ARGS` (CPython's own test modules) in a fresh instance under the
/// strict profile; on failure, runs it again without a filter to say whether the profile is
/// at fault, and shows the ENOSYS lines the tests printed. Returns the wall time under strict.
fn stdlib_under_strict(args: &[&str]) -> Duration {
    let mut py = vec!["-m", "test"];
    py.extend_from_slice(args);
    python_under_strict(&py, None)
}

/// Runs `/usr/bin/python3 ARGS` as [`stdlib_under_strict`] does; `extra_tests`, a directory
/// from tests/fetch-cpython-tests, is bound read-only at /opt/cpython-tests and put on
/// PYTHONPATH.
fn python_under_strict(args: &[&str], extra_tests: Option<&std::path::Path>) -> Duration {
    let run = |profile: Profile| {
        let mut b = util::builder();
        if let Some(dir) = extra_tests {
            b = b
                .ro(dir, Some(PathBuf::from("/opt/cpython-tests")))
                .env("PYTHONPATH", "/opt/cpython-tests");
        }
        let sb = b
            .seccomp(profile)
            .net(Net::Loopback) // asyncio's streams tests use TCP on 127.0.0.1
            .output_limit(8 << 20)
            .timeout(util::allow(240.0))
            // These runs are about syscalls, not limits: room for multiprocessing's processes
            // (unprivileged, the memory watchdog adds up every process's RSS, shared pages
            // included).
            .memory(4 << 30)
            .build()
            .unwrap();
        let cmd = Command::new("/usr/bin/python3").args(args);
        let t = Instant::now();
        (sb.run(&cmd).expect("run"), t.elapsed())
    };
    let (o, took) = run(Profile::Strict);
    eprintln!(
        "python3 {} under strict: {:.1} s",
        args.join(" "),
        took.as_secs_f64()
    );
    if o.status != Status::Ok {
        let out = format!(
            "{}{}",
            util::stdout(&o),
            String::from_utf8_lossy(&o.stderr_bytes())
        );
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("  File ")).collect();
        let failed: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("FAIL:") || l.starts_with("ERROR:"))
            .collect();
        let enosys: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.contains("Errno 38")
                    || l.contains("Function not implemented")
                    || l.contains("futex facility")
            })
            .collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        let (bare, _) = run(Profile::Unconfined);
        let culprit = if bare.status == Status::Ok {
            "passes (the profile is at fault)"
        } else {
            "fails too"
        };
        panic!(
            "python3 {} failed under strict ({:?}, exit {:?}, violation {:?}); without a filter it {culprit}.\n\
             failed: {failed:#?}\nENOSYS: {enosys:#?}\n--- last lines under strict ---\n{tail}",
            args.join(" "),
            o.status,
            o.exit_code,
            o.seccomp_violation,
        );
    }
    took
}

/// Whether the test package (libpython3.11-testsuite) ships this CPython test module; a
/// loud SKIP line when it does not.
fn has_stdlib_test(name: &str) -> bool {
    let base = PathBuf::from("/usr/lib/python3.11/test");
    let there = base.join(format!("{name}.py")).exists() || base.join(name).is_dir();
    if !there {
        eprintln!(
            "SKIP: {name} is not in {} (install libpython3.11-testsuite); test not run",
            base.display()
        );
    }
    there
}

/// The strict allowlist runs CPython's test_subprocess. test_user and test_group are left
/// out: they run children as uid/gid 65534, which the instance's user namespace does not map,
/// so they fail with EINVAL even without a filter (they accept only EPERM/EACCES).
#[test]
fn strict_runs_stdlib_test_subprocess() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_subprocess") {
        return;
    }
    stdlib_under_strict(&["test_subprocess", "-i", "test_user", "-i", "test_group"]);
}

/// The strict allowlist runs CPython's test_threading.
#[test]
fn strict_runs_stdlib_test_threading() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_threading") {
        return;
    }
    stdlib_under_strict(&["test_threading"]);
}

/// The strict allowlist runs CPython's socketpair and Unix-socket tests from test_socket
/// (BasicSocketPairTest, Unix stream sockets, SCM_RIGHTS, sendmsg/recvmsg).
#[test]
fn strict_runs_stdlib_test_socket_unix_and_socketpair() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_socket") {
        return;
    }
    stdlib_under_strict(&["test_socket", "-m", "*SocketPair*", "-m", "*Unix*"]);
}

/// The strict allowlist runs CPython's test_json, test_re and test_tempfile.
#[test]
fn strict_runs_stdlib_json_re_tempfile() {
    let _g = util::shared();
    if !util::require("userns")
        || !["test_json", "test_re", "test_tempfile"]
            .iter()
            .all(|t| has_stdlib_test(t))
    {
        return;
    }
    stdlib_under_strict(&["test_json", "test_re", "test_tempfile"]);
}

/// The strict allowlist runs a subset of CPython's test_asyncio: tasks, streams over TCP on
/// loopback, and the Unix event loop.
#[test]
fn strict_runs_stdlib_test_asyncio_subset() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_asyncio") {
        return;
    }
    stdlib_under_strict(&[
        "test_asyncio.test_tasks",
        "test_asyncio.test_streams",
        "test_asyncio.test_unix_events",
    ]);
}

/// The strict allowlist runs CPython's test_asyncio.test_subprocess (child watchers, pidfds,
/// a watcher thread per child). Now and then (1 run in 8 here) it aborts: a thread's timed
/// futex wait is interrupted by SIGCHLD and resumed through restart_syscall, which strict.json
/// lacks.
#[test]
fn strict_runs_stdlib_test_asyncio_subprocess() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_asyncio") {
        return;
    }
    stdlib_under_strict(&["test_asyncio.test_subprocess"]);
}

/// The strict allowlist runs a subset of CPython's multiprocessing tests under each start
/// method: Process (forkserver), Pool (spawn) and Queue (fork).
#[test]
fn strict_runs_stdlib_multiprocessing_subset() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_multiprocessing_spawn") {
        return;
    }
    stdlib_under_strict(&[
        "test_multiprocessing_forkserver",
        "-m",
        "*WithProcessesTestProcess*",
    ]);
    stdlib_under_strict(&[
        "test_multiprocessing_spawn",
        "-m",
        "*WithProcessesTestPool*",
    ]);
    stdlib_under_strict(&[
        "test_multiprocessing_fork",
        "-m",
        "*WithProcessesTestQueue*",
    ]);
}

/// The strict allowlist runs CPython's test_sqlite3 (433 tests). Debian 12's
/// libpython3.11-testsuite leaves it out: tests/fetch-cpython-tests takes it from the Debian
/// source package of the same interpreter, and `RSANDBOX_TEST_CPYTHON_TESTS` names where
/// (feature `cpython-tests`).
#[test]
fn strict_runs_stdlib_test_sqlite3() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("cpython-tests") {
        return;
    }
    let dir = PathBuf::from(std::env::var_os("RSANDBOX_TEST_CPYTHON_TESTS").unwrap());
    let modules = [
        "backup",
        "dbapi",
        "dump",
        "factory",
        "hooks",
        "regression",
        "transactions",
        "types",
        "userfunctions",
    ]
    .map(|m| format!("test.test_sqlite3.test_{m}"));
    let mut args = vec!["-m", "unittest"];
    args.extend(modules.iter().map(String::as_str));
    python_under_strict(&args, Some(&dir));
}

/// sqlite3 under strict, the way applications use it: a file database in WAL mode written by
/// four threads at once and read by another process, rollback-journal mode, VACUUM, a backup,
/// blob I/O, user functions and an in-memory database.
#[test]
fn strict_runs_a_sqlite3_workload() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import os, sqlite3, subprocess, sys, tempfile, threading
d = tempfile.mkdtemp()
path = os.path.join(d, "t.db")
con = sqlite3.connect(path)
assert con.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
con.execute("create table t(k integer primary key, v text)")
con.executemany("insert into t(v) values (?)", [(str(i),) for i in range(1000)])
con.commit()
def writer(n):
    c = sqlite3.connect(path, timeout=60)
    for i in range(50):
        with c:
            c.execute("insert into t(v) values (?)", (f"w{n}-{i}",))
    c.close()
ts = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
child = f"import sqlite3; print(sqlite3.connect({path!r}).execute('select count(*) from t').fetchone()[0])"
r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
assert int(r.stdout) == 1200, r
con.create_function("double", 1, lambda x: 2 * x)
assert con.execute("select double(21)").fetchone()[0] == 42
con.execute("create table b(id integer primary key, data blob)")
con.execute("insert into b(data) values (zeroblob(65536))")
con.commit()
with con.blobopen("b", "data", 1) as blob:
    blob.write(b"x" * 1000)
assert con.execute("select substr(data, 1, 3) from b").fetchone()[0] == b"xxx"
mem = sqlite3.connect(":memory:")
con.backup(mem)
assert mem.execute("select count(*) from t").fetchone()[0] == 1200
assert con.execute("pragma journal_mode=delete").fetchone()[0] == "delete"
con.execute("delete from t where k % 2 = 0")
con.commit()
con.execute("vacuum")
print("sqlite3 ok", con.execute("select count(*) from t").fetchone()[0])
"#;
    let t = Instant::now();
    let o = util::py(&with_profile(Profile::Strict), code);
    eprintln!(
        "sqlite3 workload under strict: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if o.status != Status::Ok {
        let bare = util::py(&with_profile(Profile::Unconfined), code);
        panic!(
            "sqlite3 workload failed under strict: {o:#?}\nwithout a filter: {:?}",
            bare.status
        );
    }
    assert_eq!(util::stdout(&o), "sqlite3 ok 600\n");
}

/// Docker's own default profile (tests/data, via Profile::File) runs ordinary programs as it
/// is: subprocess, threads, fork; and it is in force (bpf gets its EPERM; EINVAL unfiltered).
#[test]
fn docker_profile_runs_ordinary_programs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let (_dir, docker) = docker_profile();
    let code = format!(
        "{}\n\
import subprocess, threading
r = subprocess.run(['/bin/sh', '-c', 'echo sub'], capture_output=True, text=True, check=True)
seen = []
ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
pid = os.fork()
if pid == 0:
    os._exit(3)
print(r.stdout.strip(), sorted(seen), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), attempt({}, 0, 0, 0))",
        prelude(),
        libc::SYS_bpf
    );
    let o = util::py(&with_profile(docker), &code);
    assert_eq!(ok(&o), format!("sub [0, 1, 2, 3] 3 {}\n", libc::EPERM));
    assert_eq!(o.enforcement.seccomp, "docker-default-seccomp");
    let bare = util::py(&with_profile(Profile::Unconfined), &code);
    assert_eq!(ok(&bare), format!("sub [0, 1, 2, 3] 3 {}\n", libc::EINVAL));
}

/// Ordinary programs work under the default profile: subprocess, threads, a multiprocessing
/// Pool of 2, sqlite3 in memory, an asyncio loop with a subprocess, socketpair, mmap.
#[test]
fn default_profile_runs_ordinary_programs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import asyncio, mmap, multiprocessing, os, socket, sqlite3, subprocess, sys, threading
def square(x):
    return x * x
if __name__ == "__main__":
    r = subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True, check=True)
    assert r.stdout == "child\n", r
    seen = []
    ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert sorted(seen) == list(range(8))
    with multiprocessing.Pool(2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    con = sqlite3.connect(":memory:")
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [(i,) for i in range(100)])
    assert con.execute("select sum(x) from t").fetchone()[0] == 4950
    async def main():
        await asyncio.sleep(0.01)
        p = await asyncio.create_subprocess_exec("/bin/echo", "hi", stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        return out
    assert asyncio.run(main()) == b"hi\n"
    a, b = socket.socketpair()
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    m = mmap.mmap(-1, 4096)
    m[:5] = b"hello"
    assert m[:5] == b"hello"
    print("ordinary ok")
"#;
    let o = util::py(&util::sandbox(), code);
    assert_eq!(ok(&o), "ordinary ok\n");
}

/// Landlock refuses writes beneath paths it did not grant, through a mount that is writable
/// and files DAC lets the process write: /proc is mounted read-write, and a process owns its
/// /proc/self/comm (mode 0644) and may write its own attr/current. `access(W_OK)`, which
/// checks DAC and read-only mounts but not Landlock, says yes; `open(O_WRONLY)` gets EACCES.
/// The same without a seccomp filter, so seccomp is not the reason either.
#[test]
fn landlock_denies_writes_that_the_mount_and_dac_allow() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let code = r#"
import json, os
assert not os.statvfs("/proc").f_flag & os.ST_RDONLY
st = os.stat("/proc/self/comm")
assert st.st_uid == os.getuid() and st.st_mode & 0o200, st
out = {}
for p in ["/proc/self/comm", "/proc/thread-self/comm", "/proc/self/attr/current"]:
    assert os.access(p, os.W_OK), p
    try:
        os.close(os.open(p, os.O_WRONLY))
        out[p] = 0
    except OSError as e:
        out[p] = e.errno
print(json.dumps(out))
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let r = json_map(&util::py(&with_profile(profile.clone()), code));
        assert_eq!(r.len(), 3);
        for (path, errno) in &r {
            assert_eq!(
                *errno,
                libc::EACCES as i64,
                "{profile:?}: writing {path}: {r:?}"
            );
        }
    }
}

/// What Landlock grants still works: writing and reading back in the work dir, /tmp, /dev/shm
/// and a `--rw` bind (and the host sees the file), writing /dev/null and `> /dev/stdout`,
/// reading /etc/passwd, executing /usr/bin/true.
#[test]
fn landlock_grants_the_work_dir_tmp_shm_devices_and_rw_binds() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if util::is_root() {
        // As root the sandbox user is an unprivileged host uid (no idmapped mounts yet).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let sb = util::builder()
        .rw(dir.path(), Some(PathBuf::from("/mnt/rsandbox-test-rw")))
        .build()
        .unwrap();
    let script = "set -e
for d in /home/sandbox /tmp /dev/shm /mnt/rsandbox-test-rw; do
  mkdir $d/sub && echo \"in $d\" > $d/sub/f && cat $d/sub/f && mv $d/sub/f $d/sub/g && rm $d/sub/g && rmdir $d/sub
done
echo kept > /mnt/rsandbox-test-rw/kept
echo gone > /dev/null
echo to-stdout > /dev/stdout
grep -c '^sandbox:' /etc/passwd
/usr/bin/true && echo exec-ok";
    let o = util::sh(&sb, script);
    assert_eq!(
        ok(&o),
        "in /home/sandbox\nin /tmp\nin /dev/shm\nin /mnt/rsandbox-test-rw\nto-stdout\n1\nexec-ok\n",
        "{o:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("kept")).unwrap(),
        "kept\n"
    );
}

/// With the network off (`Net::None`), Landlock refuses TCP bind and connect with EACCES. The
/// address is not the reason: a UDP socket (which Landlock does not handle) binds to the same
/// 127.0.0.1 in the same instance, and both go through the same address check in the kernel.
#[test]
fn landlock_denies_tcp_when_the_network_is_off() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    if rsandbox::probe::host().landlock_abi < 4 {
        eprintln!("SKIP: Landlock ABI < 4 has no network rules");
        return;
    }
    let code = r#"
import json, socket
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(json.dumps({
    "tcp_bind": errno_of(lambda: tcp.bind(("127.0.0.1", 0))),
    "udp_bind": errno_of(lambda: udp.bind(("127.0.0.1", 0))),
    "tcp_connect": errno_of(lambda: socket.socket().connect(("127.0.0.1", 9))),
}))
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let sb = util::builder()
            .seccomp(profile.clone())
            .net(Net::None)
            .build()
            .unwrap();
        let r = json_map(&util::py(&sb, code));
        assert_eq!(r["tcp_bind"], libc::EACCES as i64, "{profile:?}: {r:?}");
        assert_eq!(r["tcp_connect"], libc::EACCES as i64, "{profile:?}: {r:?}");
        assert_eq!(r["udp_bind"], 0, "{profile:?}: {r:?}");
    }
}

/// With `Net::Loopback` a TCP server and client on 127.0.0.1 work (Landlock handles no TCP
/// rights then).
#[test]
fn loopback_tcp_works_when_the_network_is_on() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import socket, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
def serve():
    c, _ = srv.accept()
    c.sendall(c.recv(16).upper())
    c.close()
t = threading.Thread(target=serve)
t.start()
cli = socket.create_connection(srv.getsockname())
cli.sendall(b"ping")
print(cli.recv(16).decode())
t.join()
"#;
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    assert_eq!(ok(&util::py(&sb, code)), "PING\n");
}

/// Landlock scopes (ABI 6+: signals and abstract unix sockets) are set on the instance's one
/// domain, which the reaper enters before it starts any program. Nothing outside that domain
/// is reachable from inside anyway (the pid and network namespaces hide every other process
/// and abstract socket), so the scopes cannot be shown apart from the namespaces here. What
/// can be shown: they do not split a session, since every run shares the domain. Run 1
/// leaves a `sleep` and an abstract-socket server behind; run 2 signals the one and connects
/// to the other.
#[test]
fn landlock_scopes_keep_a_session_together() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let inst = util::sandbox().create().unwrap();
    let start = r#"
import os, socket, subprocess
sleeper = subprocess.Popen(["/bin/sleep", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind("\0rsandbox-filters-test")
srv.listen()
if os.fork() == 0:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    c, _ = srv.accept()
    c.sendall(b"hello from run 1")
    c.close()
    os._exit(0)
print(sleeper.pid)
"#;
    let pid: i32 = ok(&py_in(&inst, start)).trim().parse().unwrap();
    let second = format!(
        r#"
import os, signal, socket, time
os.kill({pid}, signal.SIGTERM)
for _ in range(200):
    try:
        os.kill({pid}, 0)
        time.sleep(0.01)
    except ProcessLookupError:
        break
else:
    raise SystemExit("the sleep outlived SIGTERM")
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect("\0rsandbox-filters-test")
print(c.recv(64).decode())
"#
    );
    assert_eq!(ok(&py_in(&inst, &second)), "hello from run 1\n");
    inst.destroy().unwrap();
}

/// `--strict` (`.strict(true)`) builds and runs here, where the kernel has Landlock and
/// seccomp, with every layer in force; the CLI's `--strict` too. Unprivileged, this host's v1
/// cgroups are not delegated, so `--strict` refuses for cgroups, the check that follows the
/// Landlock and seccomp ones: the refusal must name cgroups, never Landlock or seccomp.
#[test]
fn strict_mode_builds_and_runs_here() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let cli = std::process::Command::new(util::bin())
        .args(["run", "--strict", "--json", "--", "/bin/true"])
        .output()
        .unwrap();
    let sb = match util::builder().strict(true).build() {
        Ok(sb) => sb,
        Err(rsandbox::Error::Unsupported {
            feature: "cgroups",
            message,
        }) if !util::is_root() => {
            eprintln!("NOTE: unprivileged, --strict refuses for cgroups only: {message}");
            assert_eq!(cli.status.code(), Some(125), "{cli:?}");
            assert!(
                String::from_utf8_lossy(&cli.stdout).contains("cgroup"),
                "{cli:?}"
            );
            return;
        }
        Err(e) => panic!("--strict on a kernel with Landlock and seccomp: {e:?}"),
    };
    let o = sb.run(&Command::new("/bin/true")).unwrap();
    ok(&o);
    assert_eq!(o.enforcement.seccomp, "default");
    assert_ne!(o.enforcement.landlock, "none");
    assert_eq!(cli.status.code(), Some(0), "{cli:?}");
    let v: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["enforcement"]["seccomp"], "default");
    assert_eq!(
        v["enforcement"]["landlock"],
        o.enforcement.landlock.as_str()
    );
}
