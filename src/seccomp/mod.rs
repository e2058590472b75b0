//! seccomp profiles in the OCI/Docker JSON format, compiled to a BPF program in the parent.
//!
//! Profiles are data (`seccomp-profiles/*.json`, embedded at build time, or a user's file).
//! libseccomp does the compiling (syscall names per architecture, argument comparisons, the
//! architecture checks that make every ABI not listed take the bad-arch action); the program is
//! exported as raw `sock_filter`s that the child loads with the `seccomp` syscall, last before
//! `execve` (DESIGN.md §3 step 7). Nothing is allocated in the child.
//!
//! - `oci`: the JSON format and what its fields mean (actions, comparisons, architectures,
//!   which rules apply to this host);
//! - `compile`: a profile to libseccomp to BPF, and `load`, which picks the profile;
//! - `notify`: the violation listener (kills reported to the supervisor, syscalls named);
//! - `bpf`: the seccomp BPF constants and the interpreter tests evaluate programs with.

pub(crate) mod bpf;
pub(crate) mod compile;
mod notify;
mod oci;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::error::Error;

pub(crate) use compile::{load, Compiled};
pub(crate) use notify::{syscall_name, HANDOFF_FD};

/// Which profile a sandbox uses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Profile {
    /// `seccomp-profiles/default.json`: allow what ordinary programs need, deny the dangerous.
    #[default]
    Default,
    /// `seccomp-profiles/strict.json`: a default-deny allowlist.
    Strict,
    /// An OCI/Docker profile from a file.
    File(PathBuf),
    /// No filter at all (the report says `"seccomp": "none"`).
    Unconfined,
}

/// A profile name that names nothing (from [`Profile`]'s `FromStr`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The name is empty (neither a built-in profile nor a file).
    #[error("empty seccomp profile name")]
    Empty,
}

/// `default`, `strict`, `none` (or `unconfined`); anything else is a profile file's path.
impl std::str::FromStr for Profile {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Profile, ProfileError> {
        Ok(match s {
            "default" => Profile::Default,
            "strict" => Profile::Strict,
            "none" | "unconfined" => Profile::Unconfined,
            "" => return Err(ProfileError::Empty),
            path => Profile::File(PathBuf::from(path)),
        })
    }
}

impl Profile {
    /// The name the report uses: `default`, `strict`, `none`, or the file's stem.
    pub fn name(&self) -> String {
        match self {
            Profile::Default => "default".into(),
            Profile::Strict => "strict".into(),
            Profile::Unconfined => "none".into(),
            Profile::File(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into()),
        }
    }
}

/// A profile that cannot be used: `origin` (the file, or where in it) and what is wrong.
fn bad(origin: &str, msg: impl Into<String>) -> Error {
    Error::invalid("seccomp", format!("{origin}: {}", msg.into()))
}
