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
//! (the report), `probe` (host features), `ns` (id maps, mount plan, root template), `spawn`
//! (the only code that forks; its child half never allocates), `state` (records and janitor),
//! `sys` (raw syscalls). Unsafe code lives only in `sys` and `spawn`.
//!
//! Requirements: Linux 5.12+ (clone3, openat2, mount_setattr), user namespaces enabled.
//!
//! Security model: every instance gets fresh user, mount, pid, net, ipc, uts and cgroup
//! namespaces; the program runs as uid 1000 mapped to an unprivileged host id, with no
//! capabilities, `no_new_privs`, its own session, only fds 0-2, in a root of read-only system
//! binds and tmpfs mounts. See the README for what each layer stops.
#![deny(unsafe_code)]

pub mod defaults;
mod error;
mod instance;
mod interp;
pub mod ns;
mod outcome;
pub mod probe;
mod sandbox;
pub(crate) mod spawn;
pub mod state;
pub(crate) mod sys;

pub use error::{Error, Result};
pub use instance::{Instance, GET_FILE_MAX};
pub use outcome::{Enforcement, Limit, Outcome, SeccompViolation, Status};
pub use sandbox::{Bind, Command, Net, Sandbox, SandboxBuilder, Stdin};
