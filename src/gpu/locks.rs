//! Cross-process exclusion for GPU leases: one `flock`ed file per GPU in a lock directory.
//!
//! A [`super::GpuPool`] knows only its own process's leases. For the host's `/dev` a lease also
//! holds `gpu-N.lock` in `gpus/` beside the state directory for each of its GPUs, locked shared
//! or exclusive like the lease, so pools of other processes (`rsandbox run`, a daemon) over the
//! same GPUs skip them. The locks belong to open file descriptions: they go when the lease drops its files, or
//! when the process dies.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock directory for the host's GPUs, created (mode 0755, owner checked) if missing:
/// `gpus/` beside the state directory.
pub(super) fn host_lock_dir() -> io::Result<PathBuf> {
    let dir = crate::paths::state_dir()
        .parent()
        .map(|p| p.join("gpus"))
        .unwrap_or_else(|| PathBuf::from("/run/rsandbox/gpus"));
    crate::paths::private_dir(&dir, 0o755).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(dir)
}

/// Locks GPU `i` in `dir` without waiting: shared for a shared lease, else exclusive. `Err` when
/// another process holds it in a conflicting way (`EWOULDBLOCK`) or the file cannot be opened.
pub(super) fn lock_gpu(dir: &Path, i: u32, share: bool) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(format!("gpu-{i}.lock")))?;
    let op = if share { libc::LOCK_SH } else { libc::LOCK_EX };
    crate::sys::flock(f.as_fd(), op | libc::LOCK_NB)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::gpu::{GpuPool, GpuRequest};

    #[test]
    fn locks_exclude_pools_of_other_processes() {
        // Two pools over one lock directory stand for two processes: flock locks belong to
        // open file descriptions, so they conflict within one process just the same.
        let dir = tempfile::tempdir().unwrap();
        let p1 = GpuPool::with_lock_dir([0, 1], dir.path());
        let p2 = GpuPool::with_lock_dir([0, 1], dir.path());
        let a = p1.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!(a.indices(), [0]);
        // p2 knows nothing of `a` in-process, yet skips GPU 0.
        let b = p2.try_allocate(&GpuRequest::count(1)).unwrap();
        assert_eq!(b.indices(), [1]);
        let e = p2.try_allocate(&GpuRequest::count(1)).unwrap_err();
        assert!(e.to_string().contains("free none, in use 0, 1"), "{e}");
        // Shared locks coexist across pools; an exclusive one waits for them.
        drop((a, b));
        let s1 = p1
            .try_allocate(&GpuRequest::devices(&[0]).share(true))
            .unwrap();
        let s2 = p2
            .try_allocate(&GpuRequest::devices(&[0]).share(true))
            .unwrap();
        assert!(p2.try_allocate(&GpuRequest::devices(&[0])).is_err());
        drop(s1);
        let p = p2.clone();
        let waiter = std::thread::spawn(move || {
            p.allocate(&GpuRequest::devices(&[0]), Duration::from_secs(20))
                .map(|l| l.indices().to_vec())
        });
        std::thread::sleep(Duration::from_millis(120));
        drop(s2); // released in p2's own process view too: the poll or the wake-up sees it
        assert_eq!(waiter.join().unwrap().unwrap(), [0]);
    }
}
