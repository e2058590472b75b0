//! The violation listener: a profile's kills become user notifications the supervisor names.
//!
//! The kernel's SIGSYS does not say which syscall was refused. For a profile that kills, the
//! program reports to a listener instead: the child loads the filter with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER` and hands the listener over on [`HANDOFF_FD`]; the
//! supervisor receives the notification, kills the offender itself, and names the syscall with
//! [`syscall_name`].

use libseccomp::{ScmpArch, ScmpSyscall};

use super::bpf::{
    AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, SECCOMP_RET_ACTION_FULL, SECCOMP_RET_KILL_PROCESS,
    SECCOMP_RET_KILL_THREAD, SECCOMP_RET_USER_NOTIF,
};
use super::compile::allow_exact;

/// The fd number on which a starting program hands its seccomp listener to the supervisor.
pub(crate) const HANDOFF_FD: u32 = 1000;

/// For profiles that kill: every kill becomes `SECCOMP_RET_USER_NOTIF`, so the supervisor,
/// holding the listener, learns the syscall and kills the offender itself. A 9-instruction
/// prefix lets the program make the one `sendmsg` on `HANDOFF_FD` that hands the listener over,
/// right after loading the filter.
pub(super) fn with_violation_listener(prog: &[libc::sock_filter]) -> Vec<libc::sock_filter> {
    const RET: u16 = 0x06;
    let mut out = allow_exact(libc::SYS_sendmsg, HANDOFF_FD as u64).to_vec();
    out.extend(prog.iter().map(|i| {
        let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
        let kill = matches!(
            i.k & SECCOMP_RET_ACTION_FULL,
            SECCOMP_RET_KILL_PROCESS | SECCOMP_RET_KILL_THREAD
        );
        if i.code == RET && kill {
            ins(RET, 0, 0, SECCOMP_RET_USER_NOTIF)
        } else {
            *i
        }
    }));
    out
}

/// The name of syscall `nr` on `arch` (an `AUDIT_ARCH_*` value), as libseccomp knows it.
pub(crate) fn syscall_name(arch: u32, nr: i32) -> String {
    let a = match arch {
        AUDIT_ARCH_X86_64 => Some(ScmpArch::X8664),
        AUDIT_ARCH_I386 => Some(ScmpArch::X86),
        _ => None,
    };
    a.and_then(|a| ScmpSyscall::from(nr).get_name_by_arch(a).ok())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}
