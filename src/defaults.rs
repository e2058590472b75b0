//! The one table of defaults, shared by the CLI, the library and (later) the daemon (DESIGN.md §4).

use std::time::Duration;

/// Wall-clock timeout of a run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the tmpfs at `/tmp`.
pub const TMP_SIZE: u64 = 256 << 20;
/// Size of the tmpfs at `/dev/shm`.
pub const SHM_SIZE: u64 = 64 << 20;
/// Size of the work dir tmpfs (`/home/sandbox`).
pub const WORK_SIZE: u64 = 256 << 20;
/// Output kept per stream.
pub const OUTPUT_LIMIT: u64 = 1 << 20;
/// CPUs (quota) per instance.
pub const CPUS: f64 = 1.0;
/// Memory per instance (no swap).
pub const MEMORY: u64 = 512 << 20;
/// Processes and threads per instance.
pub const PIDS: u64 = 256;
/// RLIMIT_NOFILE of programs.
pub const NOFILE: u64 = 1024;
/// RLIMIT_CORE of programs.
pub const CORE: u64 = 0;
/// The program's PATH.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The work dir inside the instance; also HOME and the working directory.
pub const WORK_DIR: &str = "/home/sandbox";
/// The instance's hostname.
pub const HOSTNAME: &str = "sandbox";

/// The clean environment every program starts with; `--env` adds to or overrides it.
pub fn environment() -> Vec<(String, String)> {
    [
        ("PATH", PATH),
        ("HOME", WORK_DIR),
        ("LANG", "C.UTF-8"),
        ("TMPDIR", "/tmp"),
        ("PYTHONUNBUFFERED", "1"),
        ("USER", "sandbox"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
