//! Non-native ABIs: i386 `int 0x80` and x32 calls refused with ENOSYS under every profile.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};
use rsandbox::Command;

use super::{ok, with_profile};
use crate::util;

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
