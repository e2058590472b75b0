//! What the shipped and foreign profiles decide, proven on the compiled programs with the BPF
//! interpreter; and the exact text of this module's errors.

use super::bpf::{
    self, BpfError, Data, Verdict, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT,
};
use super::compile::{compile_json, BUILTIN};
use super::*;

fn eval(c: &Compiled, arch: u32, nr: i64, args: [u64; 6]) -> Verdict {
    bpf::run(&c.program, &Data::new(arch, nr as i32, args)).unwrap()
}
fn x64(c: &Compiled, nr: i64, a0: u64, a1: u64) -> Verdict {
    eval(c, AUDIT_ARCH_X86_64, nr, [a0, a1, 0, 0, 0, 0])
}

const DENY_EPERM: Verdict = Verdict::Errno(libc::EPERM as u16);
const DENY_ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS as u16);

/// Every shipped profile compiles, with no syscall name unknown to libseccomp.
#[test]
fn every_shipped_profile_compiles() {
    for (name, json) in BUILTIN {
        let c = compile_json(json, name, name).unwrap();
        assert!(c.program.len() > 10, "{name}");
        assert!(
            c.unknown.is_empty(),
            "{name}: unknown syscalls {:?}",
            c.unknown
        );
    }
}

/// default.json denies each dangerous call with its errno, on the native ABI, and refuses
/// the i386 and x32 ABIs outright (DENY_ENOSYS), whatever the call.
#[test]
fn default_profile_denies_the_dangerous_calls() {
    let c = load(&Profile::Default).unwrap().unwrap();
    use libc::*;
    for nr in [
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_fsopen,
        SYS_fsmount,
        SYS_move_mount,
        SYS_open_tree,
        SYS_mount_setattr,
        SYS_setns,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pidfd_getfd,
        SYS_bpf,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_acct,
        SYS_syslog,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_open_by_handle_at,
    ] {
        assert_eq!(x64(&c, nr, 0, 0), DENY_EPERM, "syscall {nr}");
    }
    assert_eq!(x64(&c, SYS_clone3, 0, 0), DENY_ENOSYS);
    // New namespaces through clone/unshare flags; threads and plain forks stay allowed.
    assert_eq!(x64(&c, SYS_unshare, CLONE_NEWUSER as u64, 0), DENY_EPERM);
    assert_eq!(
        x64(&c, SYS_clone, (CLONE_NEWUSER | SIGCHLD) as u64, 0),
        DENY_EPERM
    );
    assert_eq!(
        x64(&c, SYS_clone, (CLONE_NEWNET | SIGCHLD) as u64, 0),
        DENY_EPERM
    );
    let thread =
        (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM) as u64;
    assert_eq!(x64(&c, SYS_clone, thread, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_clone, SIGCHLD as u64, 0), Verdict::Allow);
    // TIOCSTI/TIOCLINUX on the low 32 bits, as the kernel reads the command.
    assert_eq!(x64(&c, SYS_ioctl, 0, 0x5412), DENY_EPERM);
    assert_eq!(x64(&c, SYS_ioctl, 0, 0x1_0000_5412), DENY_EPERM);
    assert_eq!(x64(&c, SYS_ioctl, 0, 0xdead_0000_541c), DENY_EPERM);
    assert_eq!(x64(&c, SYS_ioctl, 0, TCGETS), Verdict::Allow);
    assert_eq!(x64(&c, SYS_socket, 40, 0), DENY_EPERM); // AF_VSOCK
    assert_eq!(x64(&c, SYS_socket, AF_UNIX as u64, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_personality, 0x0400000, 0), DENY_EPERM); // READ_IMPLIES_EXEC
    assert_eq!(x64(&c, SYS_personality, 0x0040000, 0), DENY_EPERM); // ADDR_NO_RANDOMIZE
    assert_eq!(x64(&c, SYS_personality, 0, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_personality, 0xffff_ffff, 0), Verdict::Allow); // the query
    assert_eq!(x64(&c, SYS_personality, 0x1_ffff_ffff, 0), DENY_EPERM); // not the query: flags
    for nr in [
        SYS_read, SYS_write, SYS_openat, SYS_execve, SYS_mmap, SYS_futex, SYS_wait4,
    ] {
        assert_eq!(x64(&c, nr, 0, 0), Verdict::Allow, "syscall {nr}");
    }
    // Non-native ABIs: i386 (`int 0x80`: ptrace 26, mount 21, getpid 20) and x32.
    for nr in [26, 21, 20, 288, 310] {
        assert_eq!(
            eval(&c, AUDIT_ARCH_I386, nr, [0; 6]),
            DENY_ENOSYS,
            "i386 {nr}"
        );
    }
    for nr in [SYS_ptrace, SYS_mount, SYS_getpid, SYS_keyctl] {
        assert_eq!(
            eval(&c, AUDIT_ARCH_X86_64, (X32_SYSCALL_BIT as i64) | nr, [0; 6]),
            DENY_ENOSYS,
            "x32 {nr}"
        );
    }
}

/// strict.json allows the basics, kills attacks (so they are reported) and answers
/// anything unlisted with ENOSYS.
#[test]
fn strict_profile_is_an_allowlist() {
    let c = load(&Profile::Strict).unwrap().unwrap();
    assert!(c.kills);
    use libc::*;
    for nr in [
        SYS_read, SYS_write, SYS_openat, SYS_execve, SYS_futex, SYS_wait4,
    ] {
        assert_eq!(x64(&c, nr, 0, 0), Verdict::Allow, "syscall {nr}");
    }
    assert_eq!(x64(&c, SYS_clone, SIGCHLD as u64, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_socketpair, AF_UNIX as u64, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_socket, 40, 0), DENY_ENOSYS);
    assert_eq!(x64(&c, SYS_ioctl, 0, TCGETS), Verdict::Allow);
    for nr in [
        SYS_ptrace,
        SYS_bpf,
        SYS_keyctl,
        SYS_io_uring_setup,
        SYS_mount,
        SYS_unshare,
    ] {
        assert_eq!(x64(&c, nr, 0, 0), Verdict::Notify, "syscall {nr}");
    }
    assert_eq!(x64(&c, SYS_acct, 0, 0), DENY_ENOSYS);
    assert_eq!(x64(&c, SYS_restart_syscall, 0, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_setgroups, 0, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_clone3, 0, 0), DENY_ENOSYS);
    assert_eq!(x64(&c, SYS_clone, CLONE_NEWUSER as u64, 0), DENY_EPERM);
    assert_eq!(x64(&c, SYS_ioctl, 0, 0x1_0000_5412), DENY_EPERM);
    assert_eq!(eval(&c, AUDIT_ARCH_I386, 20, [0; 6]), DENY_ENOSYS);
    // The listener handoff: sendmsg on HANDOFF_FD only (strict denies sendmsg nowhere, so
    // check through a profile that kills it).
    let kill_sendmsg = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sendmsg"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#;
    let k = compile_json(kill_sendmsg, "k.json", "k").unwrap();
    assert_eq!(x64(&k, SYS_sendmsg, HANDOFF_FD as u64, 0), Verdict::Allow);
    assert_eq!(x64(&k, SYS_sendmsg, 3, 0), Verdict::Notify);
    assert_eq!(
        x64(&k, SYS_sendmsg, (1u64 << 32) | HANDOFF_FD as u64, 0),
        Verdict::Notify
    );
    assert_eq!(x64(&k, SYS_read, 0, 0), Verdict::Allow);
}

/// Docker's own default profile loads as it is (archMap, includes/excludes, minKernel,
/// errnoRet, argument comparisons) and behaves like Docker's: bpf denied, read allowed.
#[test]
fn docker_default_profile_compiles_and_behaves() {
    // A copy of ../shared/fixtures/docker-default-seccomp.json (Docker's profile, Apache-2.0).
    let json = include_str!("../../tests/data/docker-default-seccomp.json");
    let c = compile_json(json, "docker-default", "docker-default").unwrap();
    use libc::*;
    assert_eq!(x64(&c, SYS_read, 0, 0), Verdict::Allow);
    assert_eq!(x64(&c, SYS_bpf, 0, 0), DENY_EPERM);
    assert_eq!(x64(&c, SYS_mount, 0, 0), DENY_EPERM); // needs CAP_SYS_ADMIN, which we never grant
    assert_eq!(x64(&c, SYS_personality, 0x0400000, 0), DENY_EPERM);
    assert_eq!(x64(&c, SYS_personality, 0, 0), Verdict::Allow);
    // Docker lists x86 and x32 as sub-architectures: they are filtered, not refused.
    assert_eq!(
        eval(&c, AUDIT_ARCH_I386, 3 /* read */, [0; 6]),
        Verdict::Allow
    );
}

/// Bad profiles are refused with a message that says what is wrong.
#[test]
fn bad_profiles_are_refused_clearly() {
    let e = compile_json("{", "x.json", "x").unwrap_err().to_string();
    assert!(
        e.contains("x.json") && e.contains("not a seccomp profile"),
        "{e}"
    );
    let e = compile_json(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "x.json", "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown action"), "{e}");
    let bad_op = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_LIKE"}]}]}"#;
    assert!(compile_json(bad_op, "x.json", "x")
        .unwrap_err()
        .to_string()
        .contains("unknown comparison"));
    let bad_arch = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#;
    assert!(compile_json(bad_arch, "x.json", "x")
        .unwrap_err()
        .to_string()
        .contains("unknown architecture"));
}

/// The messages users and tests see, word for word.
#[test]
fn error_messages_are_pinned() {
    assert_eq!(
        "".parse::<Profile>().unwrap_err().to_string(),
        "empty seccomp profile name"
    );
    assert_eq!("none".parse::<Profile>(), Ok(Profile::Unconfined));
    assert_eq!(
        "p/x.json".parse::<Profile>(),
        Ok(Profile::File("p/x.json".into()))
    );
    let data = Data::new(AUDIT_ARCH_X86_64, 0, [0; 6]);
    let ins = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let err = |prog: &[libc::sock_filter]| bpf::run(prog, &data).unwrap_err();
    assert_eq!(err(&[]), BpfError::FellOffEnd { pc: 0 });
    assert_eq!(err(&[]).to_string(), "fell off the end at 0");
    assert_eq!(err(&[ins(0x20, 2)]).to_string(), "bad load offset 2");
    assert_eq!(err(&[ins(0x28, 0)]).to_string(), "unsupported ld 0x28");
    assert_eq!(err(&[ins(0x21, 0)]).to_string(), "unsupported ldx 0x21");
    assert_eq!(err(&[ins(0x34, 0)]).to_string(), "division by zero");
    assert_eq!(err(&[ins(0x94, 0)]).to_string(), "unsupported alu 0x90");
    assert_eq!(err(&[ins(0x55, 0)]).to_string(), "unsupported jump 0x50");
    assert_eq!(BpfError::NoReturn.to_string(), "program did not return");
}
