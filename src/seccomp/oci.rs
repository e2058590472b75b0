//! The OCI/Docker seccomp JSON format: its types, and what its fields mean on this host.
//!
//! Parsing only; `compile` turns a parsed [`Spec`] into a program. Actions, comparisons and
//! architectures are read into libseccomp's values here; `includes`/`excludes` and `minKernel`
//! decide here whether a rule applies to this host at all.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp};
use serde::Deserialize;

use super::bad;
use crate::error::Result;

/// Docker writes `null` for empty lists; treat it as empty.
fn null_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// OCI / Docker seccomp JSON.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(super) struct Spec {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub architectures: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "null_default")]
    pub syscalls: Vec<Rule>,
    /// OCI `flags` (e.g. SECCOMP_FILTER_FLAG_LOG); accepted and ignored (parsed, so a value
    /// that is not a list of strings is still refused).
    #[serde(default, deserialize_with = "null_default")]
    #[allow(dead_code)]
    pub flags: Vec<String>,
}

/// Docker's `archMap`: an architecture and the ABIs filtered along with it.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMap {
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sub_architectures: Vec<String>,
}

/// One entry of `syscalls`: an action for some syscalls, maybe only for some arguments.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rule {
    #[serde(default, deserialize_with = "null_default")]
    pub names: Vec<String>,
    /// Docker's older single-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Arg>,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub includes: Filter,
    #[serde(default, deserialize_with = "null_default")]
    pub excludes: Filter,
    /// Never read; parsed, so a comment that is not a string is refused.
    #[serde(default, deserialize_with = "null_default")]
    #[allow(dead_code)]
    pub comment: String,
}

/// Docker's `includes` / `excludes`: the capabilities, architectures and kernel a rule is for.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filter {
    #[serde(default, deserialize_with = "null_default")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// An argument comparison (`args[]`).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// Parses a profile's JSON text. `origin` names it in errors.
pub(super) fn parse(json: &str, origin: &str) -> Result<Spec> {
    serde_json::from_str(json).map_err(|e| bad(origin, format!("not a seccomp profile: {e}")))
}

/// Names the native architecture answers to in `includes.arches` / `excludes.arches`
/// (Docker uses Go's names; OCI uses libseccomp's).
fn native_arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["amd64", "x86_64", "SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64", "SCMP_ARCH_AARCH64"]
    } else {
        &[]
    }
}

fn kernel_at_least(min: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> {
        s.split(['.', '-'])
            .take(2)
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let running = parse(&crate::probe::host().kernel);
    let want = parse(min);
    running >= want
}

impl Rule {
    /// Whether the rule applies here, by its `includes` and `excludes`.
    pub(super) fn applies(&self) -> bool {
        // rsandbox's programs hold no capabilities: rules that need one never apply, rules
        // excluded for one always do.
        if !self.includes.caps.is_empty() {
            return false;
        }
        let native = native_arch_names();
        let names_native = |arches: &[String]| arches.iter().any(|a| native.contains(&a.as_str()));
        if !self.includes.arches.is_empty() && !names_native(&self.includes.arches) {
            return false;
        }
        if names_native(&self.excludes.arches) {
            return false;
        }
        match &self.includes.min_kernel {
            Some(k) => kernel_at_least(k),
            None => true,
        }
    }
}

/// The action `name` (`SCMP_ACT_*`); `errno` (else the profile's default, else EPERM) is the
/// value `SCMP_ACT_ERRNO` returns and `SCMP_ACT_TRACE` passes to the tracer.
pub(super) fn action(
    name: &str,
    errno: Option<u32>,
    default_errno: Option<u32>,
    origin: &str,
) -> Result<ScmpAction> {
    let errno = errno.or(default_errno).unwrap_or(libc::EPERM as u32) as i32;
    match name {
        "SCMP_ACT_ERRNO" => Ok(ScmpAction::Errno(errno)),
        "SCMP_ACT_NOTIFY" => Err(bad(
            origin,
            "SCMP_ACT_NOTIFY is reserved for rsandbox's own use",
        )),
        "SCMP_ACT_TRACE" => Ok(ScmpAction::Trace(errno as u16)),
        other => ScmpAction::from_str(other, None)
            .map_err(|_| bad(origin, format!("unknown action {other:?}"))),
    }
}

/// The comparison `a` (`SCMP_CMP_*` on argument 0-5).
pub(super) fn compare(a: &Arg, origin: &str) -> Result<ScmpArgCompare> {
    if a.index > 5 {
        return Err(bad(
            origin,
            format!("argument index {} is out of range 0-5", a.index),
        ));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // Docker: `value` is the mask, `valueTwo` the value to compare with.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                a.index,
                ScmpCompareOp::MaskedEqual(a.value),
                a.value_two,
            ))
        }
        other => return Err(bad(origin, format!("unknown comparison {other:?}"))),
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// The architecture `name` (`SCMP_ARCH_*`).
pub(super) fn arch(name: &str, origin: &str) -> Result<ScmpArch> {
    name.parse::<ScmpArch>()
        .map_err(|_| bad(origin, format!("unknown architecture {name:?}")))
}
