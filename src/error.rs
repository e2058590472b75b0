//! The library's error type: what could not be made, with the path, value or syscall involved.
//!
//! `Err` means the sandbox itself failed; anything the program did is an `Ok(Outcome)`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop rsandbox from running a program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid (named, with the reason).
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },

    /// The host lacks something rsandbox needs.
    #[error("host does not support {feature}: {message}")]
    Unsupported {
        feature: &'static str,
        message: String,
    },

    /// A host-side operation failed.
    #[error("{what} {}: {source}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())]
    Io {
        what: &'static str,
        path: Option<PathBuf>,
        #[source]
        source: io::Error,
    },

    /// Building the instance failed inside the child (a mount, pivot_root, ...).
    #[error("sandbox setup failed at {stage}{}: {source}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Setup {
        stage: Stage,
        detail: String,
        #[source]
        source: io::Error,
    },

    /// The program could not be started (not found, not executable, ...).
    #[error("cannot execute {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },

    /// A path given for a file copy was refused (absolute, `..`, a symlink, ...).
    #[error("refused path {path:?}: {reason}")]
    Path { path: String, reason: String },

    /// The instance was destroyed (or its reaper died) before this call.
    #[error("the instance is gone")]
    Gone,

    /// A GPU request that cannot be met: no GPU on this host, more than it has, an unknown
    /// index, or (`is_retryable`) not enough free now.
    #[error(transparent)]
    Gpu(#[from] GpuError),

    /// The run was cancelled through its `Cancel` handle (before or while it ran).
    #[error("the run was cancelled")]
    Cancelled,

    /// A stateful context's interpreter could not be started or broke its protocol.
    #[error(transparent)]
    Context(#[from] ContextError),
}

/// A context's interpreter that did not start, or spoke out of turn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The interpreter died or hung before it was ready.
    #[error("the context's interpreter did not start: {reason}")]
    Start { reason: String },
    /// It sent something that is not a frame of the protocol.
    #[error("the context's interpreter broke its protocol: {reason}")]
    Protocol { reason: String },
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<Option<PathBuf>>,
        source: io::Error,
    ) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The stage name used in `{"error": {"stage": ...}}`.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "policy",
            Error::Unsupported { .. } => "probe",
            Error::Io { .. } => "host",
            Error::Setup { stage, .. } => stage.as_str(),
            Error::Exec { .. } => "exec",
            Error::Path { .. } => "files",
            Error::Gone => "instance",
            Error::Gpu(_) => "gpu",
            Error::Cancelled => "cancelled",
            Error::Context(_) => "context",
        }
    }

    /// The CLI exit code for this error (DESIGN.md §4): 127 not found, 126 not executable,
    /// 125 the sandbox failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
                _ => 126,
            },
            _ => 125,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where building an instance or starting a program failed. The child side reports it as a
/// `u32` in its fixed-size error record (`Stage::from_raw` reads it back); the names are those of
/// `{"error": {"stage": ...}}` and of `Error::Setup`'s message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Stage {
    /// A number no stage has (a record from a newer or corrupted child).
    Unknown = 0,
    WaitGo = 1,
    Fds = 2,
    Hostname = 3,
    Loopback = 4,
    MountPrivate = 5,
    BindRoot = 6,
    Mount = 7,
    MountAttr = 8,
    WorkFd = 9,
    RootReadonly = 10,
    PivotRoot = 11,
    DetachOldRoot = 12,
    Dumpable = 13,
    Signals = 14,
    Landlock = 15,
    CgroupNs = 16,
    /// The egress proxy's listening sockets inside the instance (127.0.0.1:3128 and :1080).
    ProxySocket = 17,
    Fork = 20,
    Stdio = 21,
    Setsid = 22,
    Chdir = 23,
    Rlimit = 24,
    Setgroups = 25,
    Setgid = 26,
    Setuid = 27,
    Caps = 28,
    NoNewPrivs = 29,
    CloseFds = 30,
    Exec = 31,
    Seccomp = 32,
    /// Not a failure: the record carries the seccomp listener's descriptor (named "unknown"
    /// should one ever arrive without it).
    Listener = 33,
    Cgroup = 34,
    Affinity = 35,
    /// The program's pty could not be made its controlling terminal.
    Tty = 36,
    /// The reaper could not open the instance's `/dev/pts/ptmx` for a terminal run.
    Pty = 37,
    /// Parent side: the instance's reaper did not answer, or exited during setup.
    Reaper = 100,
}

impl Stage {
    const ALL: [Stage; 37] = [
        Stage::Unknown,
        Stage::WaitGo,
        Stage::Fds,
        Stage::Hostname,
        Stage::Loopback,
        Stage::MountPrivate,
        Stage::BindRoot,
        Stage::Mount,
        Stage::MountAttr,
        Stage::WorkFd,
        Stage::RootReadonly,
        Stage::PivotRoot,
        Stage::DetachOldRoot,
        Stage::Dumpable,
        Stage::Signals,
        Stage::Landlock,
        Stage::CgroupNs,
        Stage::ProxySocket,
        Stage::Fork,
        Stage::Stdio,
        Stage::Setsid,
        Stage::Chdir,
        Stage::Rlimit,
        Stage::Setgroups,
        Stage::Setgid,
        Stage::Setuid,
        Stage::Caps,
        Stage::NoNewPrivs,
        Stage::CloseFds,
        Stage::Exec,
        Stage::Seccomp,
        Stage::Listener,
        Stage::Cgroup,
        Stage::Affinity,
        Stage::Tty,
        Stage::Pty,
        Stage::Reaper,
    ];

    /// The stage a child's record names; `Unknown` for a number no stage has.
    pub(crate) fn from_raw(raw: u32) -> Stage {
        Stage::ALL
            .into_iter()
            .find(|s| *s as u32 == raw)
            .unwrap_or(Stage::Unknown)
    }

    /// The name used in messages and in `{"error": {"stage": ...}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::WaitGo => "wait-for-supervisor",
            Stage::Fds => "fds",
            Stage::Hostname => "hostname",
            Stage::Loopback => "loopback",
            Stage::MountPrivate => "mount-private",
            Stage::BindRoot => "bind-root",
            Stage::Mount => "mount",
            Stage::MountAttr => "mount-setattr",
            Stage::WorkFd => "work-dir",
            Stage::RootReadonly => "root-readonly",
            Stage::PivotRoot => "pivot-root",
            Stage::DetachOldRoot => "detach-old-root",
            Stage::Dumpable => "dumpable",
            Stage::Signals => "signals",
            Stage::Landlock => "landlock",
            Stage::CgroupNs => "cgroup-namespace",
            Stage::ProxySocket => "proxy-socket",
            Stage::Fork => "fork",
            Stage::Stdio => "stdio",
            Stage::Setsid => "setsid",
            Stage::Chdir => "chdir",
            Stage::Rlimit => "rlimit",
            Stage::Setgroups => "setgroups",
            Stage::Setgid => "setgid",
            Stage::Setuid => "setuid",
            Stage::Caps => "capabilities",
            Stage::NoNewPrivs => "no-new-privs",
            Stage::CloseFds => "close-fds",
            Stage::Exec => "exec",
            Stage::Seccomp => "seccomp",
            Stage::Cgroup => "cgroup",
            Stage::Affinity => "cpu-affinity",
            Stage::Tty => "controlling-terminal",
            Stage::Pty => "open-pty",
            Stage::Reaper => "reaper",
            Stage::Listener | Stage::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A GPU request that cannot be met.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// The device directory has no `nvidiaN` node.
    #[error("no GPU on this host: {} has no nvidiaN device, so {requested} cannot be granted", dev_dir.display())]
    NoGpu { dev_dir: PathBuf, requested: String },
    /// More GPUs asked for than exist.
    #[error("{requested} GPUs asked for, but this host has only {} (GPU {})", available.len(), list_gpus(available))]
    TooMany {
        requested: usize,
        available: Vec<u32>,
    },
    /// An index with no `/dev/nvidiaN`.
    #[error("no GPU {index} on this host (it has GPU {})", list_gpus(available))]
    UnknownIndex { index: u32, available: Vec<u32> },
    /// An index listed twice.
    #[error("GPU {index} is listed twice")]
    Duplicate { index: u32 },
    /// Not enough free GPUs now (or within the wait): they exist, other instances hold them.
    #[error("{}", not_free(requested, free, busy, *queued_ahead, waited))]
    NotFree {
        requested: String,
        /// GPUs this request could have had.
        free: Vec<u32>,
        /// GPUs held in a way that excludes this request.
        busy: Vec<u32>,
        /// Earlier requests still waiting (FIFO: they go first).
        queued_ahead: usize,
        waited: Duration,
    },
}

impl GpuError {
    /// Whether the same request may succeed later (`NotFree`); the others never can on this
    /// host (a daemon answers them with a 4xx rather than queueing them).
    pub fn is_retryable(&self) -> bool {
        matches!(self, GpuError::NotFree { .. })
    }
}

/// GPU indices for messages: `0, 2` or `none`.
pub(crate) fn list_gpus(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn not_free(
    requested: &str,
    free: &[u32],
    busy: &[u32],
    queued_ahead: usize,
    waited: &Duration,
) -> String {
    let mut s = format!(
        "not enough free GPUs for {requested}: free {}, in use {}",
        list_gpus(free),
        list_gpus(busy)
    );
    if queued_ahead > 0 {
        s.push_str(&format!(", {queued_ahead} request(s) queued ahead"));
    }
    if waited.is_zero() {
        s.push_str(" (not waiting)");
    } else {
        s.push_str(&format!(" (waited {:.1} s)", waited.as_secs_f64()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stage names reach users in `{"error": {"stage": ...}}` and in messages: pinned, with
    /// the numbers the child's record carries.
    #[test]
    fn stage_names_and_numbers_are_pinned() {
        let want: &[(u32, &str)] = &[
            (0, "unknown"),
            (1, "wait-for-supervisor"),
            (2, "fds"),
            (3, "hostname"),
            (4, "loopback"),
            (5, "mount-private"),
            (6, "bind-root"),
            (7, "mount"),
            (8, "mount-setattr"),
            (9, "work-dir"),
            (10, "root-readonly"),
            (11, "pivot-root"),
            (12, "detach-old-root"),
            (13, "dumpable"),
            (14, "signals"),
            (15, "landlock"),
            (16, "cgroup-namespace"),
            (17, "proxy-socket"),
            (20, "fork"),
            (21, "stdio"),
            (22, "setsid"),
            (23, "chdir"),
            (24, "rlimit"),
            (25, "setgroups"),
            (26, "setgid"),
            (27, "setuid"),
            (28, "capabilities"),
            (29, "no-new-privs"),
            (30, "close-fds"),
            (31, "exec"),
            (32, "seccomp"),
            (33, "unknown"),
            (34, "cgroup"),
            (35, "cpu-affinity"),
            (36, "controlling-terminal"),
            (37, "open-pty"),
            (100, "reaper"),
        ];
        assert_eq!(want.len(), Stage::ALL.len());
        for &(raw, name) in want {
            let s = Stage::from_raw(raw);
            assert_eq!(s as u32, raw, "{name}");
            assert_eq!(s.as_str(), name);
            assert_eq!(s.to_string(), name);
            assert_eq!(serde_json::to_value(s).unwrap(), name);
        }
        for raw in [18, 19, 38, 99, 101, u32::MAX] {
            assert_eq!(Stage::from_raw(raw), Stage::Unknown);
        }
        let e = Error::Setup {
            stage: Stage::PivotRoot,
            detail: String::new(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(e.stage(), "pivot-root");
        assert!(e
            .to_string()
            .starts_with("sandbox setup failed at pivot-root: "));
    }
}
