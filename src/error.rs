//! The library's error type: what could not be made, with the path, value or syscall involved.
//!
//! `Err` means the sandbox itself failed; anything the program did is an `Ok(Outcome)`.

use std::io;
use std::path::PathBuf;

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
    Gpu(#[from] crate::gpu::GpuError),

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
