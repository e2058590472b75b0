//! The one table of defaults, shared by the CLI, the library, the daemon and its compatible
//! APIs (DESIGN.md §4).

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
/// Ptys an instance's own devpts may hold at once (`--max-ptys`).
pub const MAX_PTYS: u32 = 64;
/// The largest `--max-ptys`: the host's non-initial devpts instances share
/// `kernel.pty.max - kernel.pty.reserve` ptys (3072 by default).
pub const MAX_PTYS_LIMIT: u32 = 1024;
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

/// Daemon maxima (DESIGN.md §4): a request above one is a 422 on `/v1` and clamped on the
/// compatible APIs. `rsandbox serve --max-*` changes them; the CPU maximum is the host's cores.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Memory maximum per run.
pub const MAX_MEMORY: u64 = 4 << 30;
/// Processes and threads maximum per run.
pub const MAX_PIDS: u64 = 4096;
/// Largest request body the daemon reads.
pub const MAX_BODY: usize = 64 << 20;
/// Fetched files returned by one run, all together.
pub const MAX_FETCH: u64 = 32 << 20;
/// Requests waiting for a slot, per slot, before the daemon answers 503.
pub const QUEUE_PER_SLOT: usize = 64;
/// How long SIGTERM waits for in-flight runs before cancelling them.
pub const GRACE: Duration = Duration::from_secs(30);
