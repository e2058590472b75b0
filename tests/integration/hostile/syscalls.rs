//! Syscalls through every ABI: each denied call natively, through i386 `int 0x80` and as x32.

use std::collections::BTreeMap;

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};
use rsandbox::Command;
use serde_json::Value;

use super::{ok, verdict, with_profile};
use crate::util;

/// `name -> number` from a kernel uapi header (`#define __NR_name N`).
fn syscall_numbers(header: &str) -> BTreeMap<String, i64> {
    std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header}: {e} (linux-libc-dev)"))
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define __NR_")?;
            let (name, nr) = rest.split_once(' ')?;
            Some((name.to_string(), nr.trim().parse().ok()?))
        })
        .collect()
}

/// Arguments that make a conditional rule of the default profile match (the namespace flags,
/// TIOCSTI, AF_VSOCK, READ_IMPLIES_EXEC); zeros for the unconditional ones.
fn denied_args(name: &str) -> [u64; 6] {
    match name {
        "clone" => [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        "unshare" => [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        "ioctl" => [0, 0x5412, 0, 0, 0, 0],
        "socket" | "socketpair" => [40, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        "personality" => [0x0040_0000, 0, 0, 0, 0, 0],
        _ => [0; 6],
    }
}

/// The C driver: for each row, the call through the native `syscall` instruction, i386's
/// `int $0x80` and the x32 number (bit 30), each in a forked child, printing the raw result.
const ABI_DRIVER_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>
struct row { const char *name; long nr64, nr32; unsigned long a[6]; };
static const struct row rows[] = {
ROWS
};
static long i386_call(long nr, unsigned long *a) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret)
                     : "a"(nr), "b"(a[0]), "c"(a[1]), "d"(a[2]), "S"(a[3]), "D"(a[4])
                     : "memory");
    return ret;
}
static long native_call(long nr, const unsigned long *a) {
    long ret;
    register unsigned long r10 __asm__("r10") = a[3];
    register unsigned long r8 __asm__("r8") = a[4];
    register unsigned long r9 __asm__("r9") = a[5];
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(nr), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
static long in_child(int abi, const struct row *r) {
    int p[2];
    if (pipe(p)) return -9999;
    pid_t w = fork();
    if (w == 0) {
        pid_t me = getpid();
        unsigned long a[6];
        for (int i = 0; i < 6; i++) a[i] = r->a[i];
        long ret = abi == 0 ? native_call(r->nr64, a)
                 : abi == 1 ? i386_call(r->nr32, a)
                 : native_call(r->nr64 | 0x40000000L, a);
        if (getpid() != me) _exit(0); /* a clone that went through: the new process leaves */
        write(p[1], &ret, sizeof ret);
        _exit(0);
    }
    close(p[1]);
    long ret = -9998;
    if (read(p[0], &ret, sizeof ret) != sizeof ret) ret = -9997;
    close(p[0]);
    waitpid(w, 0, 0);
    return ret;
}
int main(void) {
    static const char *abis[] = {"native", "i386", "x32"};
    for (unsigned i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (int abi = 0; abi < 3; abi++) {
            if ((abi == 1 && rows[i].nr32 < 0) || (abi != 1 && rows[i].nr64 < 0)) continue;
            printf("%s %s %ld\n", rows[i].name, abis[abi], in_child(abi, &rows[i]));
        }
    return 0;
}
"#;

/// Every call the default profile denies (its ERRNO rules, with arguments that match the
/// conditional ones) is tried through each entry point the CPU offers: native `syscall` gets
/// the profile's errno (EPERM; clone3 ENOSYS), i386 `int $0x80` and x32 get ENOSYS, for every
/// call, and the compiled program returns exactly that on each (arch, number). Without the
/// filter this kernel does run i386 calls (getpid answers the pid), so the filter is what
/// stops them. This kernel has no x32 ABI (CONFIG_X86_X32_ABI off): that is said loudly, and
/// shown (x32 getpid is ENOSYS without the filter too), so for x32 the proof is the BPF
/// verdict, which denies although the profile's default action is to allow.
#[test]
fn denied_list_through_every_abi() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let profile: Value =
        serde_json::from_str(include_str!("../../../seccomp-profiles/default.json")).unwrap();
    let n64 = syscall_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
    let n32 = syscall_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_32.h");
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        if rule["action"] != "SCMP_ACT_ERRNO" {
            continue;
        }
        for name in rule["names"].as_array().unwrap() {
            want.insert(
                name.as_str().unwrap().to_string(),
                rule["errnoRet"].as_i64().unwrap(),
            );
        }
    }
    want.insert("getpid".into(), 0); // the control: allowed natively
    let mut rows = String::new();
    for name in want.keys() {
        let (a, b) = (n64.get(name), n32.get(name));
        if a.is_none() && b.is_none() {
            continue; // neither ABI has it (e.g. nfsservctl's number is gone)
        }
        let args = denied_args(name);
        rows.push_str(&format!(
            "{{\"{name}\", {}, {}, {{{}}}}},\n",
            a.copied().unwrap_or(-1),
            b.copied().unwrap_or(-1),
            args.iter()
                .map(|v| format!("{v}UL"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = util::compile_c(dir.path(), "abi", &ABI_DRIVER_C.replace("ROWS", &rows));
    let bin = std::fs::read(prog).unwrap();
    let run = |p: Profile| -> BTreeMap<(String, String), i64> {
        let o = with_profile(p)
            .run(&Command::new("./abi").file("abi", bin.clone(), 0o755))
            .unwrap();
        ok(&o)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                ((f[0].to_string(), f[1].to_string()), f[2].parse().unwrap())
            })
            .collect()
    };
    let got = run(Profile::Default);
    let enosys = -(libc::ENOSYS as i64);
    let mut checked = 0;
    for ((name, abi), ret) in &got {
        let errno = want[name];
        let expect = match (abi.as_str(), name.as_str()) {
            ("native", "getpid") => {
                assert!(*ret > 0, "native getpid: {ret}");
                continue;
            }
            ("native", _) => -errno,
            _ => enosys,
        };
        assert_eq!(*ret, expect, "{name} via {abi}");
        let (arch, nr) = match abi.as_str() {
            "native" => (bpf::AUDIT_ARCH_X86_64, n64[name]),
            "i386" => (bpf::AUDIT_ARCH_I386, n32[name]),
            _ => (
                bpf::AUDIT_ARCH_X86_64,
                n64[name] | bpf::X32_SYSCALL_BIT as i64,
            ),
        };
        assert_eq!(
            verdict(arch, nr, &denied_args(name)),
            Verdict::Errno(-expect as u16),
            "{name} via {abi}: the compiled program"
        );
        checked += 1;
    }
    assert!(
        checked > 150,
        "only {checked} (call, ABI) pairs checked: {got:?}"
    );
    eprintln!("denied calls checked through native, i386 and x32: {checked} (call, ABI) pairs");
    // Controls without the filter: i386 runs here, x32 does not exist.
    let bare = run(Profile::Unconfined);
    let key = |abi: &str| (String::from("getpid"), abi.to_string());
    assert!(
        bare[&key("i386")] > 0,
        "without the filter this kernel should run i386 getpid: {:?}",
        bare[&key("i386")]
    );
    if bare[&key("x32")] == enosys {
        eprintln!("NOTE: this kernel has no x32 ABI (CONFIG_X86_X32_ABI off): x32 calls fail without the filter too; the x32 denials are proven on the compiled BPF program");
    } else {
        assert!(bare[&key("x32")] > 0, "{bare:?}");
    }
}
