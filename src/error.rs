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
        stage: &'static str,
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
            Error::Setup { stage, .. } => stage,
            Error::Exec { .. } => "exec",
            Error::Path { .. } => "files",
            Error::Gone => "instance",
            Error::Gpu(_) => "gpu",

            Error::Cancelled => "cancelled",
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
