//! The report of one run (JSON schema v1, DESIGN.md §5): why it ended, what it used, what it
//! printed, and what enforced each limit.

use base64::Engine;
use serde::{Deserialize, Serialize};

mod classify;
mod enforcement;

pub(crate) use classify::{classify, Facts};
pub use enforcement::{Enforcement, LandlockAbi, Mechanism};

/// The cause of termination, by precedence: timeout > cpu_time > memory > pids > seccomp >
/// signal > exit > ok (decided by `classify`). `OutputLimit` is never decided today: the
/// output cap drops bytes and lists `output` in `limits_hit`, it does not end the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Exit code 0.
    Ok,
    /// A non-zero exit code.
    Exit,
    /// Killed by a signal it was not sent by a limit.
    Signal,
    /// The wall-clock timeout.
    Timeout,
    CpuTime,
    Memory,
    Pids,
    OutputLimit,
    Seccomp,
}

/// A limit the run touched (`limits_hit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Limit {
    Wall,
    CpuTime,
    Memory,
    Pids,
    Output,
}

/// What an instance uses now (`Instance::usage`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// CPU time of every process so far (cgroup); of the live ones only without cgroups.
    pub cpu_ms: f64,
    pub memory_bytes: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    /// Processes and threads (cgroup) or processes (without).
    pub pids: Option<u64>,
    /// Where the figures come from: `cgroup2`, `cgroup1` or `procfs`.
    pub source: &'static str,
}

/// One stream's result.
#[derive(Default, Debug)]
pub struct Captured {
    pub data: Vec<u8>,
    /// Every byte the program wrote, kept or not.
    pub total: u64,
    pub truncated: bool,
}

/// A seccomp kill, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompViolation {
    pub syscall: String,
    pub nr: i64,
}

/// The report of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub version: u32,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<String>,
    pub limits_hit: Vec<Limit>,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub user_ms: f64,
    pub sys_ms: f64,
    pub peak_memory_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Captured stdout when it is valid UTF-8; `None` otherwise (see `stdout_b64`) or when the
    /// output was passed through rather than captured.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_b64: Option<String>,
    pub stderr_b64: Option<String>,
    /// Every byte written, kept or not.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub seccomp_violation: Option<SeccompViolation>,
    pub enforcement: Enforcement,
    pub queued_ms: Option<f64>,
    /// What the egress proxy did while the run ran (`None`: no proxy, i.e. network `none` or
    /// `loopback`).
    #[serde(default)]
    pub network: Option<NetworkStats>,
}

/// The egress proxy's figures over one run (every process of the instance, background ones
/// included, while the run ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// Connections the rules allowed (whether or not the destination then answered).
    pub allowed: u64,
    /// Requests the rules refused.
    pub denied: u64,
    /// Bytes sent out from the instance, and received into it, through the proxy.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl NetworkStats {
    /// The figures since `before`.
    pub fn since(self, before: NetworkStats) -> NetworkStats {
        NetworkStats {
            allowed: self.allowed.saturating_sub(before.allowed),
            denied: self.denied.saturating_sub(before.denied),
            bytes_up: self.bytes_up.saturating_sub(before.bytes_up),
            bytes_down: self.bytes_down.saturating_sub(before.bytes_down),
        }
    }
}

impl Outcome {
    /// The CLI exit code for this outcome (DESIGN.md §4): the program's own, 128+N for signal
    /// N, 124 for a timeout. A limit that ended the run by killing the whole instance (so that
    /// the program's own exit record never came) is 137: the program was SIGKILLed, the
    /// sandbox did not fail.
    pub fn exit_code_for_cli(&self) -> i32 {
        match self.status {
            Status::Timeout => 124,
            _ => match (self.exit_code, self.signal) {
                (Some(c), _) => c,
                (None, Some(s)) => 128 + s,
                _ if !matches!(self.status, Status::Ok | Status::Exit | Status::Signal) => {
                    128 + libc::SIGKILL
                }
                _ => 125,
            },
        }
    }

    /// A line for a person saying which limit other than the wall timeout (whose note names
    /// its seconds) ended the run, if one did: the CLI prints it on stderr when it passes the
    /// program's output through.
    pub fn limit_note(&self) -> Option<&'static str> {
        Some(match self.status {
            Status::CpuTime => "the CPU-time limit (--cpu-time) ended the run",
            Status::Memory => "the memory limit (--mem) ended the run: out of memory",
            Status::Pids => "the process limit (--pids) was reached and the program failed",
            Status::OutputLimit => "the output limit (--output-limit) ended the run",
            Status::Seccomp => "a system call the seccomp profile forbids ended the run (see seccomp_violation with --json)",
            Status::Ok | Status::Exit | Status::Signal | Status::Timeout => return None,
        })
    }

    /// The captured stdout as bytes (decoding `stdout_b64` when needed).
    pub fn stdout_bytes(&self) -> Vec<u8> {
        bytes_of(&self.stdout, &self.stdout_b64)
    }

    /// The captured stderr as bytes (decoding `stderr_b64` when needed).
    pub fn stderr_bytes(&self) -> Vec<u8> {
        bytes_of(&self.stderr, &self.stderr_b64)
    }
}

fn bytes_of(text: &Option<String>, b64: &Option<String>) -> Vec<u8> {
    match (text, b64) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Text when the bytes are UTF-8, base64 otherwise. A multi-byte character cut by the output
/// cap is dropped from the end of truncated output rather than turning it all into base64.
pub(crate) fn encode_output(c: &Captured, captured: bool) -> (Option<String>, Option<String>) {
    if !captured {
        return (None, None);
    }
    match std::str::from_utf8(&c.data) {
        Ok(s) => (Some(s.to_string()), None),
        Err(e) if c.truncated && e.error_len().is_none() => (
            Some(String::from_utf8_lossy(&c.data[..e.valid_up_to()]).into_owned()),
            None,
        ),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&c.data)),
        ),
    }
}

/// The conventional name of signal `sig` (`SIGKILL`), if it has one.
pub fn signal_name(sig: i32) -> Option<String> {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(data: &[u8], truncated: bool) -> Captured {
        Captured {
            data: data.to_vec(),
            total: data.len() as u64,
            truncated,
        }
    }

    #[test]
    fn output_is_text_when_utf8_and_base64_otherwise() {
        assert_eq!(
            encode_output(&cap("héllo".as_bytes(), false), true),
            (Some("héllo".into()), None)
        );
        let (t, b) = encode_output(&cap(b"\xff\xfe", false), true);
        assert_eq!((t, b.as_deref()), (None, Some("//4=")));
        // A character cut by the cap is dropped from truncated output, not base64'd.
        let cut = &"aé".as_bytes()[..2];
        assert_eq!(
            encode_output(&cap(cut, true), true),
            (Some("a".into()), None)
        );
        // ...but an incomplete character in complete output is data, kept exactly.
        assert_eq!(encode_output(&cap(cut, false), true).0, None);
        assert_eq!(encode_output(&cap(b"x", false), false), (None, None));
    }

    /// The schema does not change: a stored report reads and writes back byte for byte.
    #[test]
    fn stored_report_round_trips_byte_identical() {
        let text = include_str!("../../tests/data/report-ok.json").trim_end();
        let o: Outcome = serde_json::from_str(text).unwrap();
        assert_eq!(o.enforcement.devices, Mechanism::MountOnly);
        assert_eq!(o.enforcement.landlock, LandlockAbi::None);
        assert_eq!(serde_json::to_string(&o).unwrap(), text);
        // A report written before `network` existed still reads (as no proxy).
        let old = text.replace(",\"network\":null", "");
        assert_ne!(old, text);
        assert_eq!(serde_json::from_str::<Outcome>(&old).unwrap().network, None);
        let mut with = o.clone();
        with.network = Some(NetworkStats {
            allowed: 1,
            denied: 2,
            bytes_up: 3,
            bytes_down: 4,
        });
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(
            v["network"],
            serde_json::json!({"allowed": 1, "denied": 2, "bytes_up": 3, "bytes_down": 4})
        );
    }

    #[test]
    fn cli_exit_codes_follow_the_design() {
        let mut o: Outcome =
            serde_json::from_str(include_str!("../../tests/data/report-ok.json")).unwrap();
        assert_eq!(o.exit_code_for_cli(), 0);
        o.exit_code = Some(7);
        assert_eq!(o.exit_code_for_cli(), 7);
        (o.exit_code, o.signal) = (None, Some(9));
        assert_eq!(o.exit_code_for_cli(), 137);
        o.status = Status::Timeout;
        assert_eq!(o.exit_code_for_cli(), 124);
        (o.status, o.signal) = (Status::CpuTime, None);
        assert_eq!(o.exit_code_for_cli(), 137);
        o.status = Status::Signal;
        assert_eq!(o.exit_code_for_cli(), 125);
        assert_eq!(signal_name(9).as_deref(), Some("SIGKILL"));
    }
}
