//! Reading and writing cgroup interface files, and emptying and removing cgroup directories:
//! the file operations both versions share.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::error::{Error, Result};

pub(super) fn read(p: &Path) -> std::io::Result<String> {
    crate::sys::host::read_small(p)
}

pub(super) fn write(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).map_err(|e| Error::io("writing", p.to_path_buf(), e))
}

/// Writes a file the kernel may not have (no swap accounting, no cpu controller): absent is
/// fine, any other failure is not. One `open` instead of a `stat` and an `open`.
pub(super) fn write_if_present(p: &Path, v: &str) -> Result<()> {
    match fs::write(p, v) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|e| Error::io("writing", p.to_path_buf(), e)),
    }
}

/// The number after `key` in a flat-keyed file (`memory.events`, `cpu.stat`...).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

/// The value of `key` in the flat-keyed file `dir/file`.
pub(super) fn read_keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(&dir.join(file)).ok().and_then(|t| keyed(&t, key))
}

/// The single number in `dir/file` (`memory.current`, `pids.current`...).
pub(super) fn read_number(dir: &Path, file: &str) -> Option<u64> {
    read(&dir.join(file))
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn open_dir(p: &Path) -> Result<OwnedFd> {
    fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("opening", p.to_path_buf(), e))
}

/// Opens an existing file for writing (`cgroup.procs`, `devices.allow`).
pub(super) fn open_write(p: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(|e| Error::io("opening", p.to_path_buf(), e))
}

/// Removes the `run-N` directories of earlier runs that have emptied (rmdir fails with EBUSY
/// on one that still has processes: it is kept).
pub(super) fn sweep_runs(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("run-")
                && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
            {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

/// Kills everything in `dir` with `kill` (given the directory and its `cgroup.procs`) until
/// the directory is empty, for up to 200 rounds 2 ms apart.
pub(super) fn kill_and_wait(dir: &Path, kill: fn(&Path, &str)) {
    for _ in 0..200 {
        let procs = read(&dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return;
        }
        kill(dir, &procs);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// rmdir with a few retries (tasks leave a cgroup asynchronously as they exit).
fn remove(dir: &Path) {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            _ => return,
        }
    }
}

/// Removes `dir` and its run cgroups, killing what is left in them first with `kill`.
pub(super) fn remove_tree(dir: &Path, kill: fn(&Path, &str)) {
    // The common case: the processes are gone and no run cgroup is left.
    if fs::remove_dir(dir).is_ok() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_wait(&e.path(), kill);
                remove(&e.path());
            }
        }
    }
    kill_and_wait(dir, kill);
    remove(dir);
}

/// Creates `dir`; one left by a supervisor that died with this slot (its record was just
/// cleaned) is removed with `kill` first and made again.
pub(super) fn create_fresh(dir: &Path, kill: fn(&Path, &str)) -> Result<()> {
    let mut r = fs::create_dir(dir);
    if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
        remove_tree(dir, kill);
        r = fs::create_dir(dir);
    }
    r.map_err(|e| Error::io("creating the cgroup", dir.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_finds_the_value_after_its_key() {
        let t = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(keyed(t, "usage_usec"), Some(1500));
        assert_eq!(keyed(t, "system_usec"), Some(500));
        assert_eq!(keyed(t, "usage"), None);
        assert_eq!(keyed("max x\n", "max"), None);
    }

    #[test]
    fn sweep_keeps_what_is_not_an_empty_run_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for sub in ["run-0", "run-1", "other"] {
            fs::create_dir(d.join(sub)).unwrap();
        }
        fs::write(d.join("run-1/cgroup.procs"), "").unwrap();
        fs::write(d.join("run-2"), "a file").unwrap();
        sweep_runs(d);
        assert!(!d.join("run-0").exists());
        assert!(d.join("run-1").is_dir(), "not empty: kept");
        assert!(d.join("other").is_dir());
        assert!(d.join("run-2").is_file());
    }
}
