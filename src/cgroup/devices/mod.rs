//! Device access control for instances: the allow list both cgroup versions enforce, as v1
//! `devices.allow` lines ([`rules`]) or as the v2 BPF device program ([`ebpf`]).

mod ebpf;
mod rules;

pub use ebpf::{attach, program, BpfError, Insn};
pub use rules::{allow_list, minimal, DeviceKind, DeviceRule};
