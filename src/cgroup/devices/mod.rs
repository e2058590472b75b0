//! Device access control for instances: the allow list both cgroup versions enforce, as v1
//! `devices.allow` lines (`rules.rs`) or as the v2 BPF device program ([`program`], [`attach`]).

mod ebpf;
mod rules;

pub use ebpf::attach;
pub use rules::{allow_list, minimal, DeviceRule};
