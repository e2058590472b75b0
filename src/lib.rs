//! rsandbox: run untrusted code on Linux in fresh namespaces, without containers.
//!
//! ```no_run
//! use rsandbox::{Command, Sandbox, Status};
//! use std::time::Duration;
//!
//! let sandbox = Sandbox::builder().timeout(Duration::from_secs(5)).build()?;
//! let out = sandbox.run(&Command::python("print(6 * 7)"))?;
//! assert_eq!(out.status, Status::Ok);
//! assert_eq!(out.stdout.as_deref(), Some("42\n"));
//!
//! // A session: one instance, many runs, files in and out.
//! let inst = sandbox.create()?;
//! inst.put_file("data.txt", b"hello", 0o644)?;
//! let out = inst.exec(&Command::new("/bin/sh").args(["-c", "wc -c < data.txt > n.txt"]))?;
//! assert_eq!(out.exit_code, Some(0));
//! assert_eq!(inst.get_file("n.txt", 1024)?, b"5\n");
//! inst.destroy()?;
//! # Ok::<(), rsandbox::Error>(())
//! ```
//!
//! Layout: `sandbox` (builder, policy, one-shot runs), `instance` (a live instance), `outcome`
//! (the report), `gpu` (GPU nodes, driver files, the `GpuPool` allocator), `probe` (host
//! features), `ns` (id maps, mount plan, root template), `spawn` (the only code that forks; its
//! child half never allocates), `state` (records and janitor), `egress` (the allowlist proxy
//! of networks `allowlist` and `all`), `sys` (raw syscalls). Unsafe code
//! lives only in `sys` and `spawn`.
//!
//! Requirements: Linux 5.12+ (clone3, openat2, mount_setattr), user namespaces enabled.
//!
//! Security model: every instance gets fresh user, mount, pid, net, ipc, uts and cgroup
//! namespaces; the program runs as uid 1000 mapped to an unprivileged host id, with no
//! capabilities, `no_new_privs`, its own session, only fds 0-2, in a root of read-only system
//! binds and tmpfs mounts. See the README for what each layer stops.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod cancel;
mod cgroup;
mod command;
mod context;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod defaults;
pub mod egress;
mod error;
pub mod gpu;
mod instance;
mod interp;
mod landlock;
#[cfg(test)]
mod layers;
mod ns;
mod outcome;
pub(crate) mod paths;
mod policy;
mod pool;
pub use pool::PoolStats;
pub mod probe;
mod sandbox;
pub mod seccomp;
pub(crate) mod spawn;
pub use spawn::fork_server;
mod state;
pub(crate) mod sys;
mod terminal;

pub use cancel::Cancel;
pub use cgroup::{setup as cgroup_setup, CgroupError, LeafError, Setup as CgroupSetup};
pub use context::{
    CellError, CellOptions, CellStatus, Context, ContextOptions, DisplayData, Event, Execution,
};
pub use error::{ContextError, Error, GpuError, Result, Stage};
pub use gpu::{GpuLease, GpuPool, GpuRequest};

/// Whether the calling code runs in a sandbox child between `clone` and `execve`, where
/// allocation is forbidden. For allocator hooks in tests and debug builds (see
/// `tests/integration/main.rs`); always false in the supervisor.
#[doc(hidden)]
pub fn in_sandbox_child() -> bool {
    spawn::child::IN_CHILD.load(std::sync::atomic::Ordering::Relaxed)
}

/// A global allocator that aborts with a message when called in a sandbox child (where the
/// allocator's lock may be held by a thread that does not exist there). Install it in test
/// and debug binaries: `#[global_allocator] static A: rsandbox::CheckedAlloc = rsandbox::CheckedAlloc;`
#[doc(hidden)]
pub struct CheckedAlloc;

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator; the check only reads an atomic and, on failure,
// writes a fixed message with write(2) and aborts, neither of which allocates.
unsafe impl std::alloc::GlobalAlloc for CheckedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        check_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        check_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

fn check_alloc() {
    if in_sandbox_child() {
        let msg = b"rsandbox: allocation in a sandbox child (bug)\n";
        #[allow(unsafe_code)]
        // SAFETY: write(2) of a static buffer, then abort(3); both async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
    }
}
pub use command::{Command, OutputStream, Stdin};
pub use instance::{DirEntry, FileKind, Instance, GET_FILE_MAX, LIST_MAX};
pub use outcome::{
    Enforcement, LandlockAbi, Limit, Mechanism, NetworkStats, Outcome, SeccompViolation, Status,
    Usage,
};
pub use policy::{Bind, Net};
pub use sandbox::{Sandbox, SandboxBuilder};
pub use terminal::Terminal;

/// Internals the integration tests inspect (state records, host probes, compiled filters).
/// Not part of the API: no stability promise.
#[doc(hidden)]
pub mod testing {
    pub use crate::paths::state_dir;

    /// Where instances' cgroups go on this host.
    pub mod cgroup {
        pub use crate::cgroup::{setup, Setup};
    }

    /// Id ranges and the root template's directories.
    pub mod ns {
        pub mod user {
            pub use crate::ns::user::{SLOTS, UID_BASE};
        }
        pub mod template {
            pub use crate::ns::template::{DEV_NODES, SYSTEM_DIRS};
        }
    }

    /// State records as the janitor reads them.
    pub mod state {
        pub use crate::state::RecordInfo;
    }

    /// The seccomp compiler, and the BPF interpreter that evaluates its programs.
    pub mod seccomp {
        pub use crate::seccomp::compile::{load, Compiled};
        pub mod bpf {
            pub use crate::seccomp::bpf::*;
        }
    }
}
