//! The seccomp BPF constants, and a classic-BPF interpreter so tests can prove what a compiled
//! filter decides for (architecture, syscall number, arguments) without relying on the kernel
//! lacking a feature (many kernels have no x32, module loading or kexec at all).

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// x32 syscalls are x86_64 syscalls with this bit set in the number.
pub const X32_SYSCALL_BIT: i32 = 0x4000_0000;

pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const SECCOMP_RET_KILL_THREAD: u32 = 0x0000_0000;
pub const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
pub const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
pub const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;

/// `struct seccomp_data` as the filter sees it.
#[derive(Clone, Copy, Debug)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

impl Data {
    pub fn new(arch: u32, nr: i32, args: [u64; 6]) -> Data {
        Data {
            nr,
            arch,
            ip: 0,
            args,
        }
    }

    fn word(&self, off: u32) -> Option<u32> {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        bytes[8..16].copy_from_slice(&self.ip.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            bytes[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_ne_bytes());
        }
        let o = off as usize;
        (o % 4 == 0 && o + 4 <= 64).then(|| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap()))
    }
}

/// What a filter decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Errno(u16),
    KillProcess,
    KillThread,
    Trap,
    Notify,
    Trace,
    Log,
}

fn verdict(ret: u32) -> Verdict {
    match ret & SECCOMP_RET_ACTION_FULL {
        SECCOMP_RET_ALLOW => Verdict::Allow,
        SECCOMP_RET_ERRNO => Verdict::Errno((ret & 0xffff) as u16),
        SECCOMP_RET_KILL_PROCESS => Verdict::KillProcess,
        SECCOMP_RET_KILL_THREAD => Verdict::KillThread,
        SECCOMP_RET_TRAP => Verdict::Trap,
        SECCOMP_RET_USER_NOTIF => Verdict::Notify,
        SECCOMP_RET_TRACE => Verdict::Trace,
        SECCOMP_RET_LOG => Verdict::Log,
        _ => Verdict::KillProcess,
    }
}

/// Why [`run`] could not give a verdict: the program is one the kernel would reject, or uses an
/// instruction this interpreter does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// A jump (or the last instruction) led past the end of the program.
    #[error("fell off the end at {pc}")]
    FellOffEnd { pc: usize },
    /// A load from outside `struct seccomp_data`, or not 4-byte aligned.
    #[error("bad load offset {offset}")]
    BadLoadOffset { offset: u32 },
    #[error("unsupported ld {code:#x}")]
    UnsupportedLd { code: u16 },
    #[error("unsupported ldx {code:#x}")]
    UnsupportedLdx { code: u16 },
    #[error("division by zero")]
    DivisionByZero,
    #[error("unsupported alu {op:#x}")]
    UnsupportedAlu { op: u16 },
    #[error("unsupported jump {op:#x}")]
    UnsupportedJump { op: u16 },
    /// The step limit ran out (a guard: jumps only go forward, so a program returns or falls off
    /// its end first).
    #[error("program did not return")]
    NoReturn,
}

/// Runs `prog` on `data` like the kernel would; `Err` for a program the kernel would reject.
pub fn run(prog: &[libc::sock_filter], data: &Data) -> Result<Verdict, BpfError> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    for _ in 0..=prog.len() {
        let Some(ins) = prog.get(pc) else {
            return Err(BpfError::FellOffEnd { pc });
        };
        let k = ins.k;
        let class = ins.code & 0x07;
        pc += 1;
        match class {
            0x00 /* LD */ => match ins.code {
                0x20 /* W|ABS */ => a = data.word(k).ok_or(BpfError::BadLoadOffset { offset: k })?,
                0x00 /* IMM */ => a = k,
                0x60 /* MEM */ => a = mem[(k & 15) as usize],
                0x80 /* LEN */ => a = 64,
                code => return Err(BpfError::UnsupportedLd { code }),
            },
            0x01 /* LDX */ => match ins.code {
                0x01 => x = k,
                0x61 => x = mem[(k & 15) as usize],
                0x81 => x = 64,
                code => return Err(BpfError::UnsupportedLdx { code }),
            },
            0x02 /* ST */ => mem[(k & 15) as usize] = a,
            0x03 /* STX */ => mem[(k & 15) as usize] = x,
            0x04 /* ALU */ => {
                let src = if ins.code & 0x08 != 0 { x } else { k };
                a = match ins.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).ok_or(BpfError::DivisionByZero)?,
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.wrapping_shl(src),
                    0x70 => a.wrapping_shr(src),
                    0x80 => a.wrapping_neg(),
                    0xa0 => a ^ src,
                    op => return Err(BpfError::UnsupportedAlu { op }),
                }
            }
            0x05 /* JMP */ => {
                let src = if ins.code & 0x08 != 0 { x } else { k };
                let op = ins.code & 0xf0;
                if op == 0x00 {
                    pc += k as usize;
                } else {
                    let taken = match op {
                        0x10 => a == src,
                        0x20 => a > src,
                        0x30 => a >= src,
                        0x40 => a & src != 0,
                        op => return Err(BpfError::UnsupportedJump { op }),
                    };
                    pc += if taken { ins.jt as usize } else { ins.jf as usize };
                }
            }
            0x06 /* RET */ => return Ok(verdict(if ins.code & 0x18 == 0x10 { a } else { k })),
            0x07 /* MISC */ => {
                if ins.code & 0xf8 == 0x00 {
                    x = a; // TAX
                } else {
                    a = x; // TXA
                }
            }
            _ => unreachable!(),
        }
    }
    Err(BpfError::NoReturn)
}
