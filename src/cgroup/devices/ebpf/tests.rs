//! Unit tests of the device program, run by an interpreter that checks what the verifier would.

use super::*;
use crate::cgroup::devices::{allow_list, minimal};

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
    let i = Insn::ldx_w(2, 1, 4);
    assert_eq!(Insn::and32_imm(5, 0xfff8_ffff).imm, 0xfff8_ffff_u32 as i32);
    assert_eq!((i.dst(), i.src()), (2, 1));
    // r2 = *(u32 *)(r1 + 4): 61 12 04 00 00 00 00 00 on a little-endian machine.
    #[cfg(target_endian = "little")]
    {
        let [o0, o1] = i.off.to_le_bytes();
        let [i0, i1, i2, i3] = i.imm.to_le_bytes();
        let bytes = [i.code, i.regs, o0, o1, i0, i1, i2, i3];
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
    // The instance's own devpts: ptmx (5:2) and its ptys (136:N); not /dev/tty (5:0), the
    // console (5:1), virtual consoles (4:N) or a pty's master side (128:N).
    assert!(allowed(&p, Char, ACC_READ | ACC_WRITE, 5, 2), "ptmx");
    assert!(!allowed(&p, Char, ACC_MKNOD, 5, 2), "mknod ptmx");
    for minor in [0, 1, 63, 255, 1023] {
        assert!(
            allowed(&p, Char, ACC_READ | ACC_WRITE, 136, minor),
            "pts/{minor}"
        );
        assert!(
            !allowed(&p, Char, ACC_MKNOD, 136, minor),
            "mknod pts/{minor}"
        );
    }
    for (major, minor) in [(5, 0), (5, 1), (5, 3), (4, 0), (4, 1), (128, 0)] {
        assert!(
            !allowed(&p, Char, ACC_READ | ACC_WRITE, major, minor),
            "{major}:{minor}"
        );
    }
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
    assert_eq!(rules.len(), 10);
    assert_eq!(rules[..7], minimal()[..]);
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
