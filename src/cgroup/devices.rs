//! Device access on cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built in Rust from an
//! allow-list, loaded and attached with raw `bpf(2)`.
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

// `bpf(2)` takes a pointer to a `union bpf_attr` and has no wrapper in libc or in `sys`; the
// two calls are kept next to the attribute layouts they depend on. Each unsafe block says why
// it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One allowed character/block device: (kind, major, minor), minor None = any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: u32,
    /// `None`: every minor of `major`.
    pub minor: Option<u32>,
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

/// Character or block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

impl DeviceRule {
    /// Read and write of the character device `major:minor`, no mknod.
    pub fn char_rw(major: u32, minor: u32) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major,
            minor: Some(minor),
            read: true,
            write: true,
            mknod: false,
        }
    }

    /// The rule as a cgroup v1 `devices.allow` line (`c 195:0 rw`).
    pub fn v1_entry(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let minor = self.minor.map_or("*".to_string(), |m| m.to_string());
        let access: String = [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
        format!("{kind} {}:{minor} {access}", self.major)
    }
}

/// The minimal set: /dev/null (1:3), zero (1:5), full (1:7), random (1:8), urandom (1:9),
/// read+write, no mknod.
pub fn minimal() -> Vec<DeviceRule> {
    allow_list(&[])
}

/// An instance's allow list, the one both cgroup versions enforce (v1 `devices.allow`, v2 the
/// program of [`program`]): the minimal set plus `extra` (e.g. the GPU nodes it was granted).
pub fn allow_list(extra: &[DeviceRule]) -> Vec<DeviceRule> {
    let mut rules: Vec<DeviceRule> = [3, 5, 7, 8, 9]
        .into_iter()
        .map(|minor| DeviceRule::char_rw(1, minor))
        .collect();
    for r in extra {
        if !rules.contains(r) {
            rules.push(*r);
        }
    }
    rules
}

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

// bpf(2) commands, program and attach types, flags.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

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

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// `dst_reg:4, src_reg:4` as C bitfields; use [`Insn::dst`] and [`Insn::src`].
    pub regs: u8,
    /// Signed offset: of a memory access, or of a jump relative to the next instruction.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

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
    pub const fn dst(&self) -> u8 {
        #[cfg(target_endian = "little")]
        let r = self.regs & 0x0f;
        #[cfg(target_endian = "big")]
        let r = self.regs >> 4;
        r
    }

    /// The source register.
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

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to `expected_attach_type` (72 bytes; the
/// kernel treats the fields it has and we do not pass as zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` as `BPF_PROG_ATTACH` reads it, up to `replace_bpf_fd` (20 bytes).
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const LICENSE: &[u8] = b"GPL\0";
const PROG_NAME: &[u8; 16] = b"rsandbox_dev\0\0\0\0";
/// Room for the verifier's log when a load fails (the kernel keeps the tail if it overflows).
const LOG_SIZE: usize = 256 * 1024;

/// `BPF_PROG_LOAD` of a cgroup device program; with `log`, verifier log level 1 into it.
fn prog_load(insns: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let insn_cnt =
        u32::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *PROG_NAME,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `attr` is a live, fully initialised ProgLoadAttr whose size we pass; the
    // pointers in it (instructions, NUL-terminated license, log buffer of `log_size` bytes,
    // borrowed mutably above) outlive the call, and the kernel writes only into the log.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: BPF_PROG_LOAD returned a new (close-on-exec) descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// `BPF_PROG_ATTACH` of `prog` to the cgroup directory `cgroup`, allowing others alongside.
fn prog_attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a live, fully initialised ProgAttachAttr of the size passed; it holds
    // no pointers, and both descriptors are valid for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    // Opcodes the interpreter also knows, though `program` does not emit them.
    const BPF_RSH: u8 = 0x70;
    const BPF_JA: u8 = 0x00;
    const BPF_JEQ: u8 = 0x10;
    const BPF_JSET: u8 = 0x40;

    const ACC_MKNOD: u32 = DEVCG_ACC_MKNOD as u32;
    const ACC_READ: u32 = DEVCG_ACC_READ as u32;
    const ACC_WRITE: u32 = DEVCG_ACC_WRITE as u32;

    /// A stand-in address for the context pointer in r1.
    const CTX_ADDR: u64 = 0x1000_0000;

    /// Runs `prog` the way the kernel would on `struct bpf_cgroup_dev_ctx`, for the
    /// instructions `program` emits, checking what the verifier would: known opcodes,
    /// registers written before they are read, context reads in bounds and aligned, jumps
    /// forward and inside the program, an exit with r0 set.
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut reg = [0u64; 11];
        let mut init = [false; 11];
        reg[1] = CTX_ADDR;
        init[1] = true;
        let mut pc = 0usize;
        loop {
            let Some(&insn) = prog.get(pc) else {
                panic!("pc {pc} ran off the end ({} insns)", prog.len())
            };
            let at = pc;
            let (dst, src) = (insn.dst() as usize, insn.src() as usize);
            assert!(dst <= 10 && src <= 10, "bad register at {pc}: {insn:?}");
            let read = |r: usize, init: &[bool; 11]| {
                assert!(init[r], "r{r} read before written at {at}: {insn:?}");
            };
            let class = insn.code & 0x07;
            pc += 1;
            match class {
                BPF_LDX => {
                    assert_eq!(
                        insn.code,
                        BPF_LDX | BPF_MEM | BPF_W,
                        "unsupported load at {}",
                        at
                    );
                    read(src, &init);
                    assert_eq!(reg[src], CTX_ADDR, "load from a non-context pointer");
                    let off = insn.off;
                    assert!(
                        off >= 0 && off % 4 == 0 && off <= 8,
                        "context read at bad offset {off}"
                    );
                    reg[dst] = u64::from(ctx[off as usize / 4]);
                    init[dst] = true;
                }
                BPF_ALU | BPF_ALU64 => {
                    let op = insn.code & 0xf0;
                    let operand = if insn.code & BPF_X != 0 {
                        read(src, &init);
                        reg[src]
                    } else if class == BPF_ALU64 {
                        insn.imm as i64 as u64
                    } else {
                        u64::from(insn.imm as u32)
                    };
                    if op != BPF_MOV {
                        read(dst, &init);
                    }
                    let v = match op {
                        BPF_MOV => operand,
                        BPF_AND => reg[dst] & operand,
                        BPF_OR => reg[dst] | operand,
                        BPF_XOR => reg[dst] ^ operand,
                        BPF_RSH => {
                            let width = if class == BPF_ALU64 { 64 } else { 32 };
                            assert!(operand < width, "shift by {operand}");
                            if class == BPF_ALU64 {
                                reg[dst] >> operand
                            } else {
                                u64::from((reg[dst] as u32) >> operand)
                            }
                        }
                        _ => panic!("unsupported ALU op at {}: {insn:?}", at),
                    };
                    reg[dst] = if class == BPF_ALU { v & 0xffff_ffff } else { v };
                    init[dst] = true;
                }
                BPF_JMP | BPF_JMP32 => {
                    let op = insn.code & 0xf0;
                    if op == BPF_EXIT {
                        assert_eq!(class, BPF_JMP, "exit must be in the JMP class");
                        read(0, &init);
                        return reg[0];
                    }
                    assert_eq!(insn.code & BPF_X, 0, "only BPF_K jumps are emitted");
                    let taken = if op == BPF_JA {
                        assert_eq!(class, BPF_JMP, "ja must be in the JMP class");
                        true
                    } else {
                        read(dst, &init);
                        let (a, b) = if class == BPF_JMP32 {
                            (reg[dst] & 0xffff_ffff, u64::from(insn.imm as u32))
                        } else {
                            (reg[dst], insn.imm as i64 as u64)
                        };
                        match op {
                            BPF_JEQ => a == b,
                            BPF_JNE => a != b,
                            BPF_JSET => a & b != 0,
                            _ => panic!("unsupported jump at {}: {insn:?}", at),
                        }
                    };
                    assert!(insn.off >= 0, "backward jump at {}", at);
                    if taken {
                        pc += insn.off as usize;
                    }
                    assert!(pc < prog.len(), "jump out of the program");
                }
                _ => panic!("unsupported instruction class at {}: {insn:?}", at),
            }
        }
    }

    fn allowed(prog: &[Insn], kind: DeviceKind, access: u32, major: u32, minor: u32) -> bool {
        let ty = match kind {
            DeviceKind::Char => DEVCG_DEV_CHAR as u32,
            DeviceKind::Block => DEVCG_DEV_BLOCK as u32,
        };
        match run(prog, (access << 16) | ty, major, minor) {
            0 => false,
            1 => true,
            other => panic!("program returned {other}"),
        }
    }

    #[test]
    fn insn_is_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::size_of::<ProgAttachAttr>(), 20);
        let i = Insn::ldx_w(2, 1, 4);
        assert_eq!(Insn::and32_imm(5, 0xfff8_ffff).imm, 0xfff8_ffff_u32 as i32);
        assert_eq!((i.dst(), i.src()), (2, 1));
        // r2 = *(u32 *)(r1 + 4): 61 12 04 00 00 00 00 00 on a little-endian machine.
        #[cfg(target_endian = "little")]
        {
            // SAFETY: Insn is repr(C), 8 bytes, with no padding; reading it as bytes is sound.
            let bytes: [u8; 8] = unsafe { std::mem::transmute(i) };
            assert_eq!(bytes, [0x61, 0x12, 0x04, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn minimal_program_allows_exactly_the_minimal_set() {
        let p = program(&minimal());
        use DeviceKind::{Block, Char};
        for minor in [3, 5, 7, 8, 9] {
            assert!(
                allowed(&p, Char, ACC_READ | ACC_WRITE, 1, minor),
                "char 1:{minor} rw"
            );
            assert!(allowed(&p, Char, ACC_READ, 1, minor), "char 1:{minor} r");
            assert!(allowed(&p, Char, ACC_WRITE, 1, minor), "char 1:{minor} w");
            assert!(
                !allowed(&p, Char, ACC_MKNOD, 1, minor),
                "char 1:{minor} mknod"
            );
            assert!(
                !allowed(&p, Char, ACC_MKNOD | ACC_READ | ACC_WRITE, 1, minor),
                "char 1:{minor} rwm"
            );
            assert!(!allowed(&p, Block, ACC_READ, 1, minor), "block 1:{minor}");
        }
        // An access bit the kernel may define later is not among the allowed ones.
        assert!(!allowed(&p, Char, ACC_READ | 8, 1, 3));
        for minor in [0, 1, 2, 4, 6, 10, 11] {
            assert!(!allowed(&p, Char, ACC_READ, 1, minor), "char 1:{minor}");
        }
        assert!(!allowed(&p, Char, ACC_READ | ACC_WRITE, 1, 4), "/dev/port");
        assert!(!allowed(&p, Char, ACC_READ | ACC_WRITE, 195, 0), "nvidia0");
        assert!(
            !allowed(&p, Char, ACC_READ | ACC_WRITE, 195, 255),
            "nvidiactl"
        );
        assert!(!allowed(&p, Block, ACC_READ, 8, 0), "sda");
        assert!(!allowed(&p, Block, ACC_READ | ACC_WRITE, 8, 0), "sda rw");
        assert!(!allowed(&p, Char, ACC_READ, 0x1_0001, 3), "high major bits");
    }

    #[test]
    fn minor_none_allows_any_minor_of_the_major() {
        let rule = DeviceRule {
            kind: DeviceKind::Char,
            major: 195,
            minor: None,
            read: true,
            write: true,
            mknod: false,
        };
        let mut rules = minimal();
        rules.push(rule);
        let p = program(&rules);
        for minor in [0, 1, 254, 255, 0xfffff, u32::MAX] {
            assert!(
                allowed(&p, DeviceKind::Char, ACC_READ | ACC_WRITE, 195, minor),
                "195:{minor}"
            );
            assert!(
                !allowed(&p, DeviceKind::Char, ACC_MKNOD, 195, minor),
                "mknod 195:{minor}"
            );
            assert!(
                !allowed(&p, DeviceKind::Block, ACC_READ, 195, minor),
                "block 195:{minor}"
            );
        }
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 194, 0));
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 196, 0));
        // The minimal set still applies, and only it for major 1.
        assert!(allowed(&p, DeviceKind::Char, ACC_READ, 1, 3));
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 1, 4));
    }

    #[test]
    fn gpu_allow_list_allows_exactly_the_granted_nodes() {
        use DeviceKind::{Block, Char};
        // nvidia2, nvidiactl and nvidia-uvm (a dynamic major) granted; the rest of 195 not.
        let granted = [
            DeviceRule::char_rw(195, 2),
            DeviceRule::char_rw(195, 255),
            DeviceRule::char_rw(511, 0),
        ];
        let rules = allow_list(&granted);
        assert_eq!(rules.len(), 8);
        assert_eq!(rules[..5], minimal()[..]);
        assert_eq!(allow_list(&[DeviceRule::char_rw(1, 3)]), minimal());
        let p = program(&rules);
        for (major, minor) in [(195, 2), (195, 255), (511, 0), (1, 3), (1, 9)] {
            assert!(allowed(&p, Char, ACC_READ | ACC_WRITE, major, minor));
            assert!(!allowed(&p, Char, ACC_MKNOD, major, minor));
            assert!(!allowed(&p, Block, ACC_READ, major, minor));
        }
        for (major, minor) in [(195, 0), (195, 1), (195, 3), (195, 254), (511, 1), (1, 4)] {
            assert!(
                !allowed(&p, Char, ACC_READ, major, minor),
                "{major}:{minor}"
            );
        }
        assert_eq!(granted[0].v1_entry(), "c 195:2 rw");
        let any_block = DeviceRule {
            kind: Block,
            major: 8,
            minor: None,
            read: true,
            write: false,
            mknod: true,
        };
        assert_eq!(any_block.v1_entry(), "b 8:* rm");
    }

    #[test]
    fn access_bits_are_checked_per_rule() {
        let m = |read, write, mknod| DeviceRule {
            kind: DeviceKind::Block,
            major: 7,
            minor: Some(0),
            read,
            write,
            mknod,
        };
        let ro = program(&[m(true, false, false)]);
        assert!(allowed(&ro, DeviceKind::Block, ACC_READ, 7, 0));
        assert!(!allowed(&ro, DeviceKind::Block, ACC_WRITE, 7, 0));
        assert!(!allowed(&ro, DeviceKind::Block, ACC_READ | ACC_WRITE, 7, 0));
        let mk = program(&[m(false, false, true)]);
        assert!(allowed(&mk, DeviceKind::Block, ACC_MKNOD, 7, 0));
        assert!(!allowed(&mk, DeviceKind::Block, ACC_READ, 7, 0));
        let all = program(&[m(true, true, true)]);
        assert!(allowed(
            &all,
            DeviceKind::Block,
            ACC_MKNOD | ACC_READ | ACC_WRITE,
            7,
            0
        ));
        assert!(!allowed(&all, DeviceKind::Char, ACC_READ, 7, 0));
        // Two rules for one device: an access needs one rule that allows all of it.
        let split = program(&[m(true, false, false), m(false, true, false)]);
        assert!(allowed(&split, DeviceKind::Block, ACC_READ, 7, 0));
        assert!(allowed(&split, DeviceKind::Block, ACC_WRITE, 7, 0));
        assert!(!allowed(
            &split,
            DeviceKind::Block,
            ACC_READ | ACC_WRITE,
            7,
            0
        ));
    }

    #[test]
    fn no_rules_deny_everything() {
        let p = program(&[]);
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 1, 3));
        assert!(!allowed(&p, DeviceKind::Block, ACC_MKNOD, 0, 0));
    }

    #[test]
    fn values_above_i32_max_compare_as_u32() {
        let rule = DeviceRule {
            kind: DeviceKind::Char,
            major: 0xffff_fff0,
            minor: Some(0x8000_0001),
            read: true,
            write: false,
            mknod: false,
        };
        let p = program(&[rule]);
        assert!(allowed(
            &p,
            DeviceKind::Char,
            ACC_READ,
            0xffff_fff0,
            0x8000_0001
        ));
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 0xffff_fff0, 1));
        assert!(!allowed(
            &p,
            DeviceKind::Char,
            ACC_READ,
            0x7fff_fff0,
            0x8000_0001
        ));
    }

    #[test]
    fn many_rules_keep_jumps_short_and_forward() {
        // One conditional jump per rule, two instructions ahead.
        let rules: Vec<DeviceRule> = (0..20_000u32)
            .map(|i| DeviceRule {
                kind: if i % 2 == 0 {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                },
                major: 10 + i / 7,
                minor: if i % 3 == 0 { None } else { Some(i) },
                read: true,
                write: i % 5 != 0,
                mknod: false,
            })
            .collect();
        let p = program(&rules);
        assert!(
            p.len() > 100_000,
            "long enough that a global jump would overflow i16"
        );
        let jumps: Vec<&Insn> = p.iter().filter(|i| i.code & 0x07 == BPF_JMP32).collect();
        assert_eq!(jumps.len(), rules.len());
        assert!(jumps.iter().all(|i| i.off == 2));
        for &i in &[0u32, 1, 2, 3, 9_999, 19_997, 19_998, 19_999] {
            let r = rules[i as usize];
            let minor = r.minor.unwrap_or(12345);
            assert!(allowed(&p, r.kind, ACC_READ, r.major, minor), "rule {i}");
        }
        let last = rules[19_999];
        assert!(!allowed(
            &p,
            last.kind,
            ACC_MKNOD,
            last.major,
            last.minor.unwrap()
        ));
        assert!(!allowed(&p, DeviceKind::Char, ACC_READ, 1, 3));
    }

    #[test]
    fn kernel_verifies_large_programs() {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: cgroup::devices large-program load test needs root");
            return;
        }
        let rules: Vec<DeviceRule> = (0..10_000u32)
            .map(|i| DeviceRule {
                kind: if i % 2 == 0 {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                },
                major: i / 3,
                minor: if i % 4 == 0 { None } else { Some(i) },
                read: i % 3 != 0,
                write: i % 5 != 0,
                mknod: i % 7 == 0,
            })
            .collect();
        let t = std::time::Instant::now();
        match load(&rules) {
            Ok(_) => {
                eprintln!(
                    "loaded {} rules ({} insns) in {:?}",
                    rules.len(),
                    program(&rules).len(),
                    t.elapsed()
                )
            }
            Err(e)
                if matches!(
                    e.get_ref()
                        .and_then(|r| r.downcast_ref::<BpfError>())
                        .map(|b| b.errno),
                    Some(libc::EPERM | libc::ENOSYS)
                ) =>
            {
                skip(
                    "bpf-devices",
                    &format!("cannot load a cgroup device program: {e}"),
                )
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn kernel_rejection_carries_the_verifier_log() {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: cgroup::devices verifier-log test needs root");
            return;
        }
        // Exit without setting r0: the verifier must refuse, and say why.
        let e = load_insns(&[Insn::exit()], 0)
            .expect_err("verifier accepted a program that never sets r0");
        let b = e
            .get_ref()
            .and_then(|r| r.downcast_ref::<BpfError>())
            .expect("a BpfError inside");
        if matches!(b.errno, libc::EPERM | libc::ENOSYS) {
            return skip(
                "bpf-devices",
                &format!("cannot load a cgroup device program: {e}"),
            );
        }
        assert_eq!(b.errno, libc::EACCES, "{e}");
        let log = b.log.as_deref().unwrap_or_default();
        assert!(log.contains("R0 !read_ok"), "verifier log: {log:?}");
        assert!(e.to_string().contains("R0 !read_ok"), "{e}");
        eprintln!("rejection as reported: {e}");
    }

    // ---- The kernel test ----------------------------------------------------------------

    /// A loud SKIP line, or a failure where `RSANDBOX_TEST_EXPECT` lists the feature (§8).
    fn skip(feature: &str, why: &str) {
        let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
        if expected.split(',').any(|f| f.trim() == feature) {
            panic!("feature {feature:?} is missing ({why}) but RSANDBOX_TEST_EXPECT lists it");
        }
        eprintln!("SKIP: cgroup::devices kernel test not run: {why}");
    }

    /// The cgroup2 mount: (mount point, root of the mount within the hierarchy).
    fn cgroup2_mount() -> Option<(PathBuf, String)> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            if post.split(' ').next()? != "cgroup2" {
                return None;
            }
            let f: Vec<&str> = pre.split(' ').collect();
            Some((PathBuf::from(unescape(f.get(4)?)), unescape(f.get(3)?)))
        })
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space).
    fn unescape(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            {
                out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// This process's cgroup v2 path (`0::/...`).
    fn own_v2_path() -> Option<String> {
        let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_owned)
    }

    /// The test's cgroup and the one child in it: on drop, the child is killed and reaped,
    /// anything left in the cgroup (only that child's own descendants) is killed through
    /// `cgroup.kill`, and the directory is removed.
    struct TestCgroup {
        dir: PathBuf,
        child: Option<Child>,
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
            for _ in 0..200 {
                match std::fs::remove_dir(&self.dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                    Err(e) => {
                        eprintln!(
                            "warning: could not remove test cgroup {}: {e}",
                            self.dir.display()
                        );
                        return;
                    }
                    Ok(()) => return,
                }
            }
            eprintln!(
                "warning: test cgroup {} still busy; left behind",
                self.dir.display()
            );
        }
    }

    /// A char 1:4 node to open: `/dev/port` where the host has one, else one made with
    /// mknod(2) in a fresh directory under the temp dir (which must not be `nodev`).
    fn port_node(tmp: &Path) -> io::Result<PathBuf> {
        let dev = Path::new("/dev/port");
        if let Ok(m) = std::fs::metadata(dev) {
            if m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 4) {
                return Ok(dev.to_path_buf());
            }
        }
        let node = tmp.join("port");
        let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that lives across the call.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 4)) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(node)
    }

    #[test]
    fn kernel_denies_what_the_program_denies() {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: cgroup::devices kernel test needs root");
            return;
        }
        let Some((mnt, mnt_root)) = cgroup2_mount() else {
            return skip("cgroup2", "no cgroup2 filesystem in /proc/self/mountinfo");
        };
        let Some(own) = own_v2_path() else {
            return skip("cgroup2", "no 0:: line in /proc/self/cgroup");
        };
        // The mount shows the hierarchy from `mnt_root` down; our path must lie beneath it.
        let rel = if mnt_root == "/" {
            own.trim_start_matches('/').to_owned()
        } else if let Some(r) = own.strip_prefix(&mnt_root) {
            r.trim_start_matches('/').to_owned()
        } else {
            let why = format!("own cgroup {own} is outside the cgroup2 mount's root {mnt_root}");
            return skip("cgroup2", &why);
        };
        let parent = mnt.join(rel);
        let name = format!(
            "rsandbox-devtest-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let dir = parent.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            return skip(
                "cgroup2",
                &format!("cannot create a cgroup under {}: {e}", parent.display()),
            );
        }
        let mut cg = TestCgroup {
            dir: dir.clone(),
            child: None,
        };

        let cgroup_dir = std::fs::File::open(&dir).expect("open the test cgroup directory");
        let prog = match attach(cgroup_dir.as_fd(), &minimal()) {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.get_ref()
                        .and_then(|r| r.downcast_ref::<BpfError>())
                        .map(|b| b.errno),
                    Some(libc::EPERM | libc::ENOSYS)
                ) =>
            {
                // Lockdown, no CAP_BPF, or no bpf(2): the feature is missing, not broken.
                return skip(
                    "bpf-devices",
                    &format!("cannot load or attach a cgroup device program: {e}"),
                );
            }
            Err(e) => panic!("attach failed: {e}"),
        };
        // The attachment outlives the fd.
        drop(prog);
        drop(cgroup_dir);

        let tmp = tempfile::tempdir().expect("temp dir");
        let port = match port_node(tmp.path()) {
            Ok(p) => p,
            Err(e) => {
                return skip(
                    "bpf-devices",
                    &format!("no /dev/port and mknod of a 1:4 node failed: {e}"),
                )
            }
        };
        // Control: outside the cgroup, opening the node must not fail with EPERM (it may fail
        // with ENXIO or ENODEV where the kernel has no /dev/port driver); otherwise EPERM in
        // the cgroup would prove nothing.
        match std::fs::File::open(&port) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                let why = format!(
                    "{} cannot be opened here (nodev mount?): {e}",
                    port.display()
                );
                return skip("bpf-devices", &why);
            }
            Err(e) => {
                assert_ne!(
                    e.raw_os_error(),
                    Some(libc::EPERM),
                    "control open of {} already gets EPERM",
                    port.display()
                )
            }
        }

        let script = r#"read x
head -c1 /dev/zero >/dev/null && echo zero-ok
printf 'port: '; cat "$1" 2>&1 | head -c 200; echo
printf 'mknod: '; mknod "$2/null" c 1 3 2>&1 | head -c 200; echo
echo done"#;
        let child = Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .arg(&port)
            .arg(tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /bin/sh");
        let pid = child.id();
        cg.child = Some(child);
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .expect("move the child into the test cgroup");
        let now_in = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let want = format!(
            "0::{}",
            Path::new(&own).join(dir.file_name().unwrap()).display()
        );
        assert!(
            now_in.lines().any(|l| l == want),
            "child not in the test cgroup: {now_in:?}, want {want}"
        );

        let child = cg.child.as_mut().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        cg.child = None;
        eprintln!("child output:\n{out}");
        assert!(status.success(), "sh failed: {status}; output {out:?}");
        assert!(
            out.lines().any(|l| l == "zero-ok"),
            "/dev/zero should work: {out:?}"
        );
        let port_line = out
            .lines()
            .find(|l| l.starts_with("port: "))
            .unwrap_or_default();
        assert!(
            port_line.contains("Operation not permitted"),
            "char 1:4 should get EPERM: {out:?}"
        );
        let mknod_line = out
            .lines()
            .find(|l| l.starts_with("mknod: "))
            .unwrap_or_default();
        assert!(
            mknod_line.contains("Operation not permitted"),
            "mknod of 1:3 should get EPERM: {out:?}"
        );
        assert!(
            out.lines().any(|l| l == "done"),
            "script did not finish: {out:?}"
        );
        drop(cg);
        assert!(
            !dir.exists(),
            "test cgroup {} was not removed",
            dir.display()
        );
    }
}
