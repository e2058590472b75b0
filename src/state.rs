//! The state directory: one record per live instance, held with `flock` by its supervisor, and
//! the janitor that cleans up after supervisors that died (DESIGN.md §4).
//!
//! A record's file name is its slot; as root the slot also picks the instance's host uid, so
//! the lock is what keeps two live instances from sharing an identity. A record whose lock is
//! free belongs to a dead supervisor: the janitor kills what it names (checked by start time,
//! so a reused pid is never touched), removes its cgroups and deletes it.

use std::fs;
use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ns::user::SLOTS;
use crate::paths;
use crate::sys;

/// What a record says about its instance.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct RecordInfo {
    pub version: u32,
    pub supervisor_pid: i32,
    pub reaper_pid: i32,
    /// `/proc/PID/stat` start time of the reaper, to tell it from a reused pid.
    pub reaper_start: u64,
    pub host_uid: u32,
    /// Cgroup directories to remove (deepest first).
    pub cgroups: Vec<PathBuf>,
}

/// A claimed slot: the locked record file of one live instance. Dropping it releases the lock
/// (a later janitor then removes the file); `remove` deletes it at once.
#[derive(Debug)]
pub struct Record {
    file: fs::File,
    path: PathBuf,
    pub slot: u32,
}

fn open_locked(path: &Path) -> std::io::Result<Option<fs::File>> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    match sys::flock(f.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e),
    }
    // A janitor may have unlinked the file between our open and our lock: then ours is a
    // ghost, and the slot is free to try again.
    let same =
        fs::symlink_metadata(path).map(|m| m.ino() == f.metadata().map(|n| n.ino()).unwrap_or(0));
    if !same.unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(f))
}

/// Cleans up after one dead instance as its record describes it.
fn clean(info: &RecordInfo) {
    if info.reaper_pid > 0
        && sys::host::process_start_time(info.reaper_pid) == Some(info.reaper_start)
    {
        let _ = sys::kill(info.reaper_pid, libc::SIGKILL);
    }
    for cg in &info.cgroups {
        // Only our own naming, never anything else a corrupted record might name.
        let under_mount = crate::probe::host()
            .cgroup_mounts
            .iter()
            .any(|m| cg.starts_with(&m.path));
        if cg
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("rsandbox-"))
            && under_mount
        {
            crate::cgroup::remove_tree(cg);
        }
    }
}

fn read_info(f: &mut fs::File) -> Option<RecordInfo> {
    let mut s = String::new();
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    f.read_to_string(&mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// Opens (creating) the state directory.
pub fn open_dir() -> Result<PathBuf> {
    let dir = paths::state_dir();
    if let Some(parent) = dir.parent() {
        paths::private_dir(parent, 0o755)?;
    }
    paths::private_dir(&dir, 0o755)?;
    Ok(dir)
}

/// The janitor: removes every record whose lock is free, and what it names. Returns how many.
pub fn sweep(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let path = e.path();
        if path
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        if let Ok(Some(mut f)) = open_locked(&path) {
            if let Some(info) = read_info(&mut f) {
                clean(&info);
            }
            let _ = fs::remove_file(&path);
            n += 1;
        }
    }
    n
}

/// Claims a free slot, starting the search at a spread-out point.
pub fn claim(dir: &Path) -> Result<Record> {
    let start = (std::process::id().wrapping_mul(2654435761) ^ nanos()) % SLOTS;
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        let path = dir.join(slot.to_string());
        match open_locked(&path) {
            Ok(Some(mut file)) => {
                // A leftover of a dead supervisor: clean it before reuse.
                if file.metadata().map(|m| m.len() > 0).unwrap_or(false) {
                    if let Some(info) = read_info(&mut file) {
                        clean(&info);
                    }
                }
                return Ok(Record { file, path, slot });
            }
            Ok(None) => continue,
            Err(e) => {
                return Err(Error::io(
                    "claiming a state record in",
                    dir.to_path_buf(),
                    e,
                ))
            }
        }
    }
    Err(Error::io(
        "claiming a state record in",
        dir.to_path_buf(),
        std::io::Error::other("all slots are in use"),
    ))
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

impl Record {
    /// Replaces the record's contents.
    pub fn write(&mut self, info: &RecordInfo) -> Result<()> {
        let data = serde_json::to_vec(info).expect("serializable");
        // Written over the old contents, then trimmed: never truncated to zero, which on ext4
        // (`auto_da_alloc`) makes the close start writeback (destroying an instance took 0.4 ms
        // longer here, where the state directory is not on a tmpfs).
        let r = self
            .file
            .write_all_at(&data, 0)
            .and_then(|_| self.file.set_len(data.len() as u64));
        r.map_err(|e| Error::io("writing the state record", self.path.clone(), e))
    }

    /// Deletes the record (its instance is fully gone).
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}
