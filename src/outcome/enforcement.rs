//! The report's `enforcement` object: which mechanism holds each limit, as enums serialised
//! to the schema's strings (`cgroup2`, `rlimit`, `abi7`...).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What enforced each kind of limit. Each value reads (and compares) as its report string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub memory: Mechanism,
    pub cpu: Mechanism,
    pub pids: Mechanism,
    pub devices: Mechanism,
    pub wall: Mechanism,
    pub landlock: LandlockAbi,
    /// The seccomp profile's name (`default`, `strict`, a file's stem) or `none`.
    pub seccomp: String,
}

impl Enforcement {
    /// What holds the limits when no cgroup can be used: pids by RLIMIT_NPROC (counted per
    /// user namespace), memory by the supervisor's watchdog, CPU time by RLIMIT_CPU plus the
    /// watchdog (the CPU quota only as affinity), devices by the mount plan alone.
    pub(crate) fn without_cgroups(&mut self) {
        self.memory = Mechanism::Watchdog;
        self.cpu = Mechanism::None;
        self.pids = Mechanism::Rlimit;
        self.devices = Mechanism::MountOnly;
    }
}

/// A mechanism that enforces a limit (the values of the report's `enforcement` object, except
/// `landlock` and `seccomp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mechanism {
    /// A cgroup v2 controller.
    #[serde(rename = "cgroup2")]
    Cgroup2,
    /// A cgroup v1 controller.
    #[serde(rename = "cgroup1")]
    Cgroup1,
    /// A resource limit (`setrlimit`) of each program.
    #[serde(rename = "rlimit")]
    Rlimit,
    /// The supervisor polling `/proc` and killing the run.
    #[serde(rename = "watchdog")]
    Watchdog,
    /// The cgroup v2 device eBPF program.
    #[serde(rename = "bpf")]
    Bpf,
    /// Only the device nodes bound into `/dev` (no device controller).
    #[serde(rename = "mount-only")]
    MountOnly,
    /// The supervisor's own timer (the wall-clock timeout).
    #[serde(rename = "supervisor")]
    Supervisor,
    /// Nothing.
    #[serde(rename = "none")]
    None,
}

impl Mechanism {
    /// The report's string for this mechanism.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Cgroup2 => "cgroup2",
            Mechanism::Cgroup1 => "cgroup1",
            Mechanism::Rlimit => "rlimit",
            Mechanism::Watchdog => "watchdog",
            Mechanism::Bpf => "bpf",
            Mechanism::MountOnly => "mount-only",
            Mechanism::Supervisor => "supervisor",
            Mechanism::None => "none",
        }
    }
}

/// The Landlock ABI an instance's ruleset uses (`abiN` in the report), or `none`. The
/// variants stop at the highest ABI rsandbox knows (`landlock::MAX_ABI`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LandlockAbi {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "abi1")]
    Abi1,
    #[serde(rename = "abi2")]
    Abi2,
    #[serde(rename = "abi3")]
    Abi3,
    #[serde(rename = "abi4")]
    Abi4,
    #[serde(rename = "abi5")]
    Abi5,
    #[serde(rename = "abi6")]
    Abi6,
    #[serde(rename = "abi7")]
    Abi7,
}

impl LandlockAbi {
    const ALL: [LandlockAbi; 8] = [
        LandlockAbi::None,
        LandlockAbi::Abi1,
        LandlockAbi::Abi2,
        LandlockAbi::Abi3,
        LandlockAbi::Abi4,
        LandlockAbi::Abi5,
        LandlockAbi::Abi6,
        LandlockAbi::Abi7,
    ];

    /// The ABI of a Landlock plan (0: none); one above the highest known counts as that one
    /// (the plan never asks for more than `landlock::MAX_ABI`).
    pub fn from_abi(abi: u32) -> LandlockAbi {
        Self::ALL[(abi as usize).min(Self::ALL.len() - 1)]
    }

    /// The ABI number (0: none).
    pub fn abi(self) -> u32 {
        self as u32
    }

    /// The report's string: `abiN` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            LandlockAbi::None => "none",
            LandlockAbi::Abi1 => "abi1",
            LandlockAbi::Abi2 => "abi2",
            LandlockAbi::Abi3 => "abi3",
            LandlockAbi::Abi4 => "abi4",
            LandlockAbi::Abi5 => "abi5",
            LandlockAbi::Abi6 => "abi6",
            LandlockAbi::Abi7 => "abi7",
        }
    }
}

/// Display, `Deref<Target = str>` and comparisons with strings, so that a value reads as its
/// report string wherever the report's text is what a caller checks.
macro_rules! reads_as_str {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }
    };
}
reads_as_str!(Mechanism);
reads_as_str!(LandlockAbi);

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are the report schema's (DESIGN.md §5): serde, `as_str` and Display agree.
    #[test]
    fn mechanisms_serialise_to_the_schema_strings() {
        let pinned = [
            (Mechanism::Cgroup2, "cgroup2"),
            (Mechanism::Cgroup1, "cgroup1"),
            (Mechanism::Rlimit, "rlimit"),
            (Mechanism::Watchdog, "watchdog"),
            (Mechanism::Bpf, "bpf"),
            (Mechanism::MountOnly, "mount-only"),
            (Mechanism::Supervisor, "supervisor"),
            (Mechanism::None, "none"),
        ];
        for (m, s) in pinned {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Mechanism>(&format!("\"{s}\"")).unwrap(),
                m
            );
            assert_eq!(m.as_str(), s);
            assert_eq!(m.to_string(), s);
            assert_eq!(m, s);
        }
    }

    #[test]
    fn landlock_abis_serialise_as_abi_n_or_none() {
        for n in 0..=7u32 {
            let abi = LandlockAbi::from_abi(n);
            let s = if n == 0 {
                "none".to_string()
            } else {
                format!("abi{n}")
            };
            assert_eq!(abi.abi(), n);
            assert_eq!(serde_json::to_string(&abi).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<LandlockAbi>(&format!("\"{s}\"")).unwrap(),
                abi
            );
            assert_eq!(abi.as_str(), s);
            assert_eq!(abi.to_string(), s);
        }
        assert_eq!(LandlockAbi::from_abi(99), LandlockAbi::Abi7);
        assert_eq!(LandlockAbi::Abi4.strip_prefix("abi"), Some("4"));
    }

    #[test]
    fn enforcement_serialises_with_the_schema_names() {
        let e = Enforcement {
            memory: Mechanism::Cgroup1,
            cpu: Mechanism::Cgroup1,
            pids: Mechanism::Cgroup1,
            devices: Mechanism::Cgroup1,
            wall: Mechanism::Supervisor,
            landlock: LandlockAbi::Abi7,
            seccomp: "default".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"memory":"cgroup1","cpu":"cgroup1","pids":"cgroup1","devices":"cgroup1","wall":"supervisor","landlock":"abi7","seccomp":"default"}"#
        );
    }
}
