//! Why a request was refused before anything ran: each variant names the field and the reason,
//! and its text is the message the client gets (422 on the native APIs, FastAPI's `detail` on
//! the compatible ones).

use super::lang::LangError;

/// A request that does not fit the API or the daemon's maxima.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// Seconds that are not a positive number.
    #[error("{field}: {value} must be a positive number of seconds")]
    NotPositive { field: &'static str, value: f64 },
    /// Seconds above the daemon's maximum.
    #[error("{field}: {value} is above this daemon's maximum of {max} s")]
    AboveMaxSecs {
        field: &'static str,
        value: f64,
        max: f64,
    },
    /// A count (MiB, pids) above the daemon's maximum.
    #[error("{field}: {value} is above this daemon's maximum of {max}")]
    AboveMax {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{field}: {value} is below the minimum of {min}")]
    BelowMin {
        field: &'static str,
        value: u64,
        min: u64,
    },
    #[error("limits.cpus: {value} is outside 0.01..={max} (this daemon's maximum)")]
    Cpus { value: f64, max: f64 },
    /// A value that is not valid there (not one of those offered, not a number...), quoted.
    #[error("{field}: {value:?} {reason}")]
    Value {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A field whose value breaks a fixed rule.
    #[error("{field}: {reason}")]
    Field {
        field: &'static str,
        reason: &'static str,
    },
    /// Fields that do not go together, in a sentence.
    #[error("{0}")]
    Conflict(&'static str),
    /// An allowlist pattern that is not one.
    #[error("limits.allowed_hosts: {source}")]
    Pattern { source: crate::egress::RuleError },
    /// Egress beyond `--max-network`.
    #[error("limits.network: {value:?} is above this daemon's maximum ({max}; see --max-network)")]
    NetworkAboveMax {
        value: &'static str,
        max: &'static str,
    },
    #[error("env: {name:?}: names must be non-empty without '=' or NUL, values without NUL")]
    Env { name: String },
    /// A file path (in `files`, `fetch`, `fetch_files`) the work dir refuses.
    #[error("{field}: {source}")]
    Path {
        field: &'static str,
        source: crate::Error,
    },
    #[error("files: {path:?}: give exactly one of content and content_b64")]
    FileContent { path: String },
    #[error("files: {path:?}: content_b64 is not base64: {source}")]
    FileBase64 {
        path: String,
        source: base64::DecodeError,
    },
    /// SandboxFusion's `files` (path -> base64) with content that is not base64.
    #[error("files: {path:?} is not base64: {source}")]
    CompatFileBase64 {
        path: String,
        source: base64::DecodeError,
    },
    #[error("files: {path:?}: mode {mode:o} is not a file mode")]
    FileMode { path: String, mode: u32 },
    #[error("fetch: at most {max} files")]
    TooManyFetch { max: usize },
    #[error("stdin_b64 is not base64: {source}")]
    StdinBase64 { source: base64::DecodeError },
    #[error(transparent)]
    Language(#[from] LangError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages reach clients and their tests: a few pinned byte for byte.
    #[test]
    fn messages_keep_their_text() {
        let cases: [(RequestError, &str); 6] = [
            (
                RequestError::NotPositive {
                    field: "limits.timeout",
                    value: -1.0,
                },
                "limits.timeout: -1 must be a positive number of seconds",
            ),
            (
                RequestError::AboveMaxSecs {
                    field: "lifetime",
                    value: 90.5,
                    max: 60.0,
                },
                "lifetime: 90.5 is above this daemon's maximum of 60 s",
            ),
            (
                RequestError::AboveMax {
                    field: "limits.memory_mb",
                    value: 2048,
                    max: 1024,
                },
                "limits.memory_mb: 2048 is above this daemon's maximum of 1024",
            ),
            (
                RequestError::Value {
                    field: "limits.network",
                    value: "host".into(),
                    reason: "is not none or loopback",
                },
                "limits.network: \"host\" is not none or loopback",
            ),
            (
                RequestError::FileMode {
                    path: "a".into(),
                    mode: 0o10000,
                },
                "files: \"a\": mode 10000 is not a file mode",
            ),
            (
                RequestError::Env { name: "A=B".into() },
                "env: \"A=B\": names must be non-empty without '=' or NUL, values without NUL",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
