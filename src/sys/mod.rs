//! The system-call boundary: every call rsandbox makes into the kernel without a safe std API.
//!
//! `raw` holds the async-signal-safe calls, which the child side of `spawn` may make between
//! `clone` and `execve`; `host` the parent-only helpers, which may allocate or touch state a
//! post-fork child must leave alone; `bpf` the loading and attaching of the v2 device filter. `crate::sys::X` names a raw call; `crate::sys::host::X` a
//! parent-only one, so the call site shows which kind it uses.

pub(crate) mod bpf;
pub(crate) mod host;
pub(crate) mod raw;

pub(crate) use raw::*;
