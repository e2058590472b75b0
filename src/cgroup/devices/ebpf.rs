//! The cgroup v2 device program: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built in Rust from an
//! allow list, loaded and attached with raw `bpf(2)`.
//!
//! cgroup v2 has no `devices.allow` file: the kernel asks a device program attached to the
//! cgroup (and one attached to each ancestor) on every open and mknod of a device node, and
//! denies with `EPERM` unless all of them return 1. [`program`] emits straight-line code (one
//! branch-free block per rule ending in one short forward jump: no loops, offsets that fit for
//! any number of rules, and verifier work linear in the rules, up to its limit of a million
//! instructions); [`attach`] loads it and attaches it with `BPF_F_ALLOW_MULTI`, so programs
//! that others attached to ancestors keep applying.
//!
//! Parent side only: this allocates and returns rich errors; it never runs in a sandbox child.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::rules::{DeviceKind, DeviceRule};
pub use crate::sys::bpf::Insn;
use crate::sys::bpf::{prog_attach, prog_load, LOG_SIZE};

// ---- Kernel ABI (include/uapi/linux/bpf.h) ----------------------------------------------

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`: the low 16 bits of `access_type`.
const DEVCG_DEV_BLOCK: i32 = 1;
const DEVCG_DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_*`: the high 16 bits of `access_type`.
const DEVCG_ACC_MKNOD: i32 = 1;
const DEVCG_ACC_READ: i32 = 2;
const DEVCG_ACC_WRITE: i32 = 4;

/// Offsets in `struct bpf_cgroup_dev_ctx { __u32 access_type; __u32 major; __u32 minor; }`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

// Instruction classes, sizes, modes, operations and sources.
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_OR: u8 = 0x40;
const BPF_AND: u8 = 0x50;
const BPF_XOR: u8 = 0xa0;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// Registers the program uses. r1 holds the context pointer on entry; r0 is the result.
const R0: u8 = 0;
const R1: u8 = 1;
/// `access_type`, `major` and `minor`, loaded once.
const R_ACCESS_TYPE: u8 = 2;
const R_MAJOR: u8 = 3;
const R_MINOR: u8 = 4;
/// A rule's mismatch: nonzero when the access does not match it.
const R_DIFF: u8 = 5;
/// Scratch.
const R_TMP: u8 = 6;

/// The verifier's limit on instructions for a privileged loader (`BPF_COMPLEXITY_LIMIT_INSNS`);
/// at 9 to 12 instructions per rule that is about 83,000 rules.
const MAX_INSNS: usize = 1_000_000;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        // C bitfields fill from the least significant bit on little-endian targets and from
        // the most significant one on big-endian targets.
        #[cfg(target_endian = "little")]
        let regs = (src << 4) | (dst & 0x0f);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | (src & 0x0f);
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    /// The destination register.
    #[cfg(test)]
    pub const fn dst(&self) -> u8 {
        #[cfg(target_endian = "little")]
        let r = self.regs & 0x0f;
        #[cfg(target_endian = "big")]
        let r = self.regs >> 4;
        r
    }

    /// The source register.
    #[cfg(test)]
    pub const fn src(&self) -> u8 {
        #[cfg(target_endian = "little")]
        let r = self.regs >> 4;
        #[cfg(target_endian = "big")]
        let r = self.regs & 0x0f;
        r
    }

    /// `dst = *(u32 *)(src + off)`, zero-extended.
    const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    /// `wdst = wsrc` (upper half cleared).
    const fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// `dst = imm` (sign-extended).
    const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
    }
    /// `wdst ^= imm` (the imm's 32 bits as they are: u32 values compare exactly).
    const fn xor32_imm(dst: u8, imm: u32) -> Insn {
        Insn::new(BPF_ALU | BPF_XOR | BPF_K, dst, 0, 0, imm as i32)
    }
    /// `wdst &= imm`.
    const fn and32_imm(dst: u8, imm: u32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm as i32)
    }
    /// `wdst |= wsrc`.
    const fn or32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_OR | BPF_X, dst, src, 0, 0)
    }
    /// `if wdst != imm goto +off` (JMP32, Linux 5.1: compares the low 32 bits).
    const fn jne32_imm(dst: u8, imm: u32, off: i16) -> Insn {
        Insn::new(BPF_JMP32 | BPF_JNE | BPF_K, dst, 0, off, imm as i32)
    }
    const fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }
}

/// The access bits a rule allows, as in `BPF_DEVCG_ACC_*`.
fn allowed_bits(rule: &DeviceRule) -> i32 {
    (if rule.mknod { DEVCG_ACC_MKNOD } else { 0 })
        | (if rule.read { DEVCG_ACC_READ } else { 0 })
        | (if rule.write { DEVCG_ACC_WRITE } else { 0 })
}

/// eBPF instructions (`struct bpf_insn`) of a program that returns 1 (allow) exactly for
/// accesses matching a rule and 0 otherwise.
///
/// Shape: load `access_type`, `major` and `minor` into w2..w4; then per rule one block that
/// computes, without branching, a value that is zero exactly when the access matches, and
/// one conditional jump:
/// ```text
///     w5 = w2; w5 ^= type; w5 &= 0xffff | deny << 16  ; type differs, or a denied access bit
///     w6 = w3; w6 ^= major; w5 |= w6                  ; major differs
///     w6 = w4; w6 ^= minor; w5 |= w6                  ; minor differs (only if the rule has one)
///     if w5 != 0 goto +2                              ; to the next rule
///     r0 = 1; exit
/// ```
/// and finally `r0 = 0; exit`. No loops, no backward jumps, every jump 2 ahead: the offsets
/// fit for any number of rules. One branch per rule keeps the verifier's work linear: a
/// compare-and-branch per field would leave three unexplored branches pending per rule, and
/// the fields it learned on the way (type == 2, ...) would make the next rule's compares
/// decided and stop state pruning; past a few thousand rules the verifier gives up
/// (`BPF program is too large`, or more than 8192 pending jumps).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = Vec::with_capacity(5 + rules.len() * 12);
    p.extend([
        Insn::ldx_w(R_ACCESS_TYPE, R1, CTX_ACCESS_TYPE),
        Insn::ldx_w(R_MAJOR, R1, CTX_MAJOR),
        Insn::ldx_w(R_MINOR, R1, CTX_MINOR),
    ]);
    for rule in rules {
        let kind = match rule.kind {
            DeviceKind::Block => DEVCG_DEV_BLOCK,
            DeviceKind::Char => DEVCG_DEV_CHAR,
        } as u32;
        // Access bits outside the allowed ones (including bits the kernel may define later)
        // make the rule not match; the low 16 bits must equal the type exactly.
        let deny = (0xffff & !allowed_bits(rule)) as u32;
        p.extend([
            Insn::mov32_reg(R_DIFF, R_ACCESS_TYPE),
            Insn::xor32_imm(R_DIFF, kind),
            Insn::and32_imm(R_DIFF, 0xffff | (deny << 16)),
            Insn::mov32_reg(R_TMP, R_MAJOR),
            Insn::xor32_imm(R_TMP, rule.major),
            Insn::or32_reg(R_DIFF, R_TMP),
        ]);
        if let Some(minor) = rule.minor {
            p.extend([
                Insn::mov32_reg(R_TMP, R_MINOR),
                Insn::xor32_imm(R_TMP, minor),
                Insn::or32_reg(R_DIFF, R_TMP),
            ]);
        }
        p.extend([
            Insn::jne32_imm(R_DIFF, 0, 2),
            Insn::mov64_imm(R0, 1),
            Insn::exit(),
        ]);
    }
    p.extend([Insn::mov64_imm(R0, 0), Insn::exit()]);
    p
}

/// Loads the program for `rules` (`BPF_PROG_LOAD`, `BPF_PROG_TYPE_CGROUP_DEVICE`, license "GPL")
/// and attaches it to the cgroup v2 directory `cgroup_dir_fd` (`BPF_PROG_ATTACH`,
/// `BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`). Returns the program fd; the attachment persists
/// while the cgroup exists even if the fd is closed.
///
/// The first load runs without a log (the verifier is faster that way); only if it fails is
/// the program loaded again with a log, whose text goes into the error. Errors keep the
/// `io::ErrorKind` of the failing call: `PermissionDenied` without CAP_BPF/CAP_SYS_ADMIN,
/// `Unsupported` where the kernel has no `bpf(2)`.
pub fn attach(cgroup_dir_fd: BorrowedFd<'_>, rules: &[DeviceRule]) -> io::Result<OwnedFd> {
    let prog = load(rules)?;
    if let Err(e) = prog_attach(cgroup_dir_fd, prog.as_fd()) {
        return Err(BpfError {
            call: "BPF_PROG_ATTACH",
            errno: e.raw_os_error().unwrap_or(0),
            detail: "BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, to the cgroup directory".to_owned(),
            log: None,
        }
        .into());
    }
    Ok(prog)
}

/// Builds and loads (does not attach) the program for `rules`; on failure, loads it again
/// with a verifier log for the error.
fn load(rules: &[DeviceRule]) -> io::Result<OwnedFd> {
    load_insns(&program(rules), rules.len())
}

/// `load` of a program already built (from `rules` rules, for the error message).
fn load_insns(insns: &[Insn], rules: usize) -> io::Result<OwnedFd> {
    let detail = || {
        format!(
            "cgroup device program, {rules} rules, {} instructions",
            insns.len()
        )
    };
    if insns.len() > MAX_INSNS {
        return Err(BpfError {
            call: "BPF_PROG_LOAD",
            errno: libc::E2BIG,
            detail: format!(
                "{}, over the verifier's limit of {MAX_INSNS}; not tried",
                detail()
            ),
            log: None,
        }
        .into());
    }
    let first = match prog_load(insns, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let second = prog_load(insns, Some(&mut log));
    // Loaded on the second try: the first failure was transient (EAGAIN, ENOMEM).
    let second = match second {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]).trim_end().to_owned();
    Err(BpfError {
        call: "BPF_PROG_LOAD",
        // The first call's errno is the reason; the second may add ENOSPC for a long log.
        errno: first.raw_os_error().or(second.raw_os_error()).unwrap_or(0),
        detail: detail(),
        log: Some(log),
    }
    .into())
}

/// What [`attach`] returns inside its `io::Error` (reach it with `get_ref` and
/// `downcast_ref`): the failing call, its errno and, for a failed load, the verifier's log.
/// The `io::Error`'s kind is the errno's.
#[derive(Debug)]
pub struct BpfError {
    /// `BPF_PROG_LOAD` or `BPF_PROG_ATTACH`.
    pub call: &'static str,
    pub errno: i32,
    /// What was being loaded or attached.
    pub detail: String,
    /// The verifier's log (level 1) of a failed load; may be empty, e.g. for EPERM.
    pub log: Option<String>,
}

impl std::fmt::Display for BpfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.call,
            self.detail,
            io::Error::from_raw_os_error(self.errno)
        )?;
        match self.log.as_deref() {
            Some("") => write!(f, "; verifier log empty"),
            Some(log) => write!(f, "; verifier log:\n{log}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for BpfError {}

impl From<BpfError> for io::Error {
    fn from(e: BpfError) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;
