//! Compiling a profile, in the parent: its rules into a libseccomp filter, exported as BPF.
//!
//! [`load`] picks the profile (built-in or a file), [`compile_json`] builds the filter from it,
//! and the exported program gets the hand-written prefixes libseccomp cannot express
//! ([`allow_exact`]) and, when the profile kills, the violation listener's rewrite.

use std::io::{Read, Seek};

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext, ScmpSyscall};

use super::oci::{self, Spec};
use super::{bad, bpf, notify, Profile};
use crate::error::{Error, Result};

/// The profiles shipped with rsandbox.
pub(crate) const BUILTIN: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../seccomp-profiles/default.json"),
    ),
    ("strict", include_str!("../../seccomp-profiles/strict.json")),
];

/// A compiled filter, ready for the child.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The profile's name, as the report gives it ([`Profile::name`]).
    pub name: String,
    pub program: Vec<libc::sock_filter>,
    /// Syscall names the profile mentions that this libseccomp/architecture does not know.
    pub unknown: Vec<String>,
    /// Whether any rule (or the default) kills: such runs get a violation listener.
    pub kills: bool,
}

/// Compiles the chosen profile; `None` for `Unconfined`.
pub fn load(profile: &Profile) -> Result<Option<Compiled>> {
    match profile {
        Profile::Unconfined => Ok(None),
        Profile::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::invalid("seccomp", format!("{}: {e}", p.display())))?;
            compile_json(&text, &p.display().to_string(), &profile.name()).map(Some)
        }
        builtin => {
            let name = builtin.name();
            let json = BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, j)| *j)
                .expect("builtin profile");
            let mut c = compile_json(json, &format!("seccomp-profiles/{name}.json"), &name)?;
            if *builtin == Profile::Default && cfg!(target_arch = "x86_64") {
                // personality(0xffffffff) only reads the persona; the flag rules would match it.
                let mut p = allow_exact(libc::SYS_personality, 0xffff_ffff).to_vec();
                p.extend_from_slice(&c.program);
                c.program = p;
            }
            Ok(Some(c))
        }
    }
}

/// Compiles a profile's JSON text. `origin` names it in errors, `name` in the report.
pub(crate) fn compile_json(json: &str, origin: &str, name: &str) -> Result<Compiled> {
    compile(&oci::parse(json, origin)?, origin, name)
}

/// Compiles a parsed profile.
fn compile(spec: &Spec, origin: &str, name: &str) -> Result<Compiled> {
    let lib = |e: libseccomp::error::SeccompError| bad(origin, e.to_string());
    let default = oci::action(&spec.default_action, None, spec.default_errno_ret, origin)?;
    let mut kills = is_kill(default);
    let mut ctx = ScmpFilterContext::new(default).map_err(lib)?;
    // Every ABI the profile does not list is refused with ENOSYS (i386 `int 0x80`, x32).
    ctx.set_act_badarch(ScmpAction::Errno(libc::ENOSYS))
        .map_err(lib)?;
    ctx.set_ctl_nnp(false).map_err(lib)?;
    // A binary tree over the syscall numbers instead of a linear chain: the kernel emulates the
    // filter for every syscall number when it is loaded (the action cache), so a chain makes
    // each program start pay for its length, and each syscall it does not cache walks fewer
    // comparisons.
    ctx.set_ctl_optimize(2).map_err(lib)?;
    add_arches(&mut ctx, spec, origin)?;
    let mut unknown = Vec::new();
    for (i, rule) in spec.syscalls.iter().enumerate() {
        let where_ = format!("{origin}: syscalls[{i}]");
        if !rule.applies() {
            continue;
        }
        let act = oci::action(
            &rule.action,
            rule.errno_ret,
            spec.default_errno_ret,
            &where_,
        )?;
        if act == default {
            continue;
        }
        kills |= is_kill(act);
        let cmps = rule
            .args
            .iter()
            .map(|a| oci::compare(a, &where_))
            .collect::<Result<Vec<_>>>()?;
        // runc's rule: comparisons on distinct arguments are ANDed in one rule; several on the
        // same argument become one rule each (ORed).
        let mut seen = std::collections::HashSet::new();
        let distinct = rule.args.iter().all(|a| seen.insert(a.index));
        for n in rule.names.iter().chain(rule.name.iter()) {
            let sc = match ScmpSyscall::from_name(n) {
                Ok(sc) => sc,
                Err(_) => {
                    unknown.push(n.clone());
                    continue;
                }
            };
            if cmps.is_empty() {
                ctx.add_rule(act, sc)
                    .map_err(|e| bad(&where_, format!("{n}: {e}")))?;
            } else if distinct {
                ctx.add_rule_conditional(act, sc, &cmps)
                    .map_err(|e| bad(&where_, format!("{n}: {e}")))?;
            } else {
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(|e| bad(&where_, format!("{n}: {e}")))?;
                }
            }
        }
    }
    let mut program = export(&ctx, origin)?;
    if kills && cfg!(target_arch = "x86_64") {
        program = notify::with_violation_listener(&program);
    }
    Ok(Compiled {
        name: name.to_string(),
        program,
        unknown,
        kills,
    })
}

fn is_kill(action: ScmpAction) -> bool {
    matches!(action, ScmpAction::KillProcess | ScmpAction::KillThread)
}

/// Adds the architectures the profile filters: `architectures`, plus the native entry of
/// `archMap` with its sub-architectures, plus the native one always. Every other ABI gets the
/// bad-arch action.
fn add_arches(ctx: &mut ScmpFilterContext, spec: &Spec, origin: &str) -> Result<()> {
    let lib = |e: libseccomp::error::SeccompError| bad(origin, e.to_string());
    let native = ScmpArch::native();
    let mut arches: Vec<ScmpArch> = Vec::new();
    for a in &spec.architectures {
        arches.push(oci::arch(a, origin)?);
    }
    for m in &spec.arch_map {
        let main = oci::arch(&m.architecture, origin)?;
        if main == native {
            arches.push(main);
            for s in &m.sub_architectures {
                arches.push(oci::arch(s, origin)?);
            }
        }
    }
    if !arches.contains(&native) {
        arches.push(native);
    }
    for a in &arches {
        if *a != native && !ctx.is_arch_present(*a).map_err(lib)? {
            ctx.add_arch(*a).map_err(lib)?;
        }
    }
    Ok(())
}

/// Exports the BPF through a memfd (Debian 12's libseccomp 2.5.4 has no export_bpf_mem).
fn export(ctx: &ScmpFilterContext, origin: &str) -> Result<Vec<libc::sock_filter>> {
    let mut f = crate::sys::host::memfd("rsandbox-seccomp")
        .map_err(|e| Error::io("creating a memfd for", None, e))?;
    ctx.export_bpf(&f)
        .map_err(|e| bad(origin, format!("exporting BPF: {e}")))?;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io("reading the compiled filter", None, e))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading the compiled filter", None, e))?;
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    // The kernel refuses programs longer than BPF_MAXINSNS (4096).
    if bytes.is_empty() || bytes.len() % INSN != 0 || bytes.len() / INSN > 4096 {
        return Err(bad(
            origin,
            format!(
                "compiled filter has an invalid size of {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// A 9-instruction prefix that allows native syscall `nr` when its first argument is exactly
/// `arg0` (all 64 bits) and otherwise falls through to the program after it. For the few
/// "allow exactly this value" cases libseccomp cannot express next to "deny when this bit is set"
/// (the `personality` query, the listener's handoff `sendmsg`).
pub(super) fn allow_exact(nr: i64, arg0: u64) -> [libc::sock_filter; 9] {
    use bpf::*;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_ABS: u16 = 0x20;
    const JEQ: u16 = 0x15;
    const RET: u16 = 0x06;
    const _: () = assert!(cfg!(target_arch = "x86_64") && cfg!(target_endian = "little"));
    [
        ins(LD_ABS, 0, 0, 4),              // arch
        ins(JEQ, 0, 7, AUDIT_ARCH_X86_64), // not native: the profile decides
        ins(LD_ABS, 0, 0, 0),              // nr (an x32 number has bit 30 set: no match)
        ins(JEQ, 0, 5, nr as u32),
        ins(LD_ABS, 0, 0, 16), // args[0], low half
        ins(JEQ, 0, 3, arg0 as u32),
        ins(LD_ABS, 0, 0, 20), // args[0], high half
        ins(JEQ, 0, 1, (arg0 >> 32) as u32),
        ins(RET, 0, 0, SECCOMP_RET_ALLOW),
    ]
}
