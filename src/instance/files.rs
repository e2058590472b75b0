//! The work-dir file operations of an instance (`put_file`, `get_file`, `list_dir`,
//! `remove_file`): every path checked, every component opened with `openat2` beneath the work
//! dir, no symlink ever followed.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use super::Instance;
use crate::defaults;
use crate::error::{Error, Result};
use crate::sys;

/// One entry of [`Instance::list_dir`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DirEntry {
    pub name: String,
    /// Bytes (of the link itself for a symlink).
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    #[serde(rename = "type")]
    pub kind: FileKind,
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The reason of an `Error::Path` for a file or directory that does not exist.
pub const NO_SUCH_FILE: &str = "no such file or directory";

/// Entries [`Instance::list_dir`] returns at most.
pub const LIST_MAX: usize = 65_536;

/// Resolve flags for every path the supervisor opens in the work dir: no symlink is followed,
/// nothing escapes the work dir.
const RESOLVE: u64 = sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS | sys::RESOLVE_BENEATH;

/// Splits a work-dir path into checked components: relative (or absolute under the work dir),
/// no `.`/`..`, no NUL, not empty.
pub(crate) fn components(path: &str) -> Result<Vec<CString>> {
    let refuse = |reason: &str| {
        Err(Error::Path {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    let rel = match path.strip_prefix(defaults::WORK_DIR) {
        Some(r) if r.is_empty() || r.starts_with('/') => r.trim_start_matches('/'),
        _ if path.starts_with('/') => return refuse("absolute paths must be under /home/sandbox"),
        _ => path,
    };
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in rel.split('/') {
        match c {
            "" => continue,
            "." | ".." => return refuse("'.' and '..' are not allowed"),
            c => out.push(CString::new(c).unwrap()),
        }
    }
    if out.is_empty() {
        return refuse("names no file");
    }
    Ok(out)
}

/// Default maximum for `get_file`: the default work dir size.
pub const GET_FILE_MAX: u64 = defaults::WORK_SIZE;

impl Instance {
    /// Writes a file into the work dir (path relative to it), creating parent directories.
    /// Never follows a symlink: a planted link makes this fail instead of writing elsewhere.
    pub fn put_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, true)?;
        let name = comps.last().unwrap();
        let fd = sys::openat2(
            dir.as_fd(),
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0o600,
            RESOLVE,
        )
        .map_err(|e| self.path_err(&comps, e))?;
        let f = std::fs::File::from(fd);
        let meta = f.metadata().map_err(|e| self.path_err(&comps, e))?;
        if !meta.is_file() {
            return Err(Error::Path {
                path: path.to_string(),
                reason: "not a regular file".into(),
            });
        }
        sys::fchmod(f.as_fd(), mode & 0o7777 & !0o6000).map_err(|e| self.path_err(&comps, e))?;
        sys::write_all(f.as_raw_fd(), data).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) => Error::Path {
                path: path.to_string(),
                reason: "the work dir is full (--work-size)".into(),
            },
            _ => self.path_err(&comps, e),
        })
    }

    /// Reads a regular file from the work dir, at most `max` bytes (more is an error).
    pub fn get_file(&self, path: &str, max: u64) -> Result<Vec<u8>> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, false)?;
        let fd = sys::openat2(
            dir.as_fd(),
            comps.last().unwrap(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
            RESOLVE,
        )
        .map_err(|e| self.path_err(&comps, e))?;
        let f = std::fs::File::from(fd);
        let meta = f.metadata().map_err(|e| self.path_err(&comps, e))?;
        if !meta.is_file() {
            return Err(Error::Path {
                path: path.to_string(),
                reason: "not a regular file".into(),
            });
        }
        if meta.len() > max {
            return Err(Error::Path {
                path: path.to_string(),
                reason: format!("{} bytes is over the limit of {max}", meta.len()),
            });
        }
        let mut out = Vec::with_capacity(meta.len() as usize);
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.path_err(&comps, e))?;
        if out.len() as u64 > max {
            return Err(Error::Path {
                path: path.to_string(),
                reason: format!("grew over the limit of {max} bytes"),
            });
        }
        Ok(out)
    }

    /// Lists a directory of the work dir (`""` or `"."`: the work dir itself), sorted by name.
    /// Never follows a symlink: a link is listed as one, and a link on the way is refused.
    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let root = path.trim_matches('/').is_empty()
            || path == "."
            || path.trim_end_matches('/') == defaults::WORK_DIR;
        let comps = if root { Vec::new() } else { components(path)? };
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.open_dir(&comps, comps.len(), false)?;
        let err = |e| self.path_err(&comps, e);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sys::getdents64(dir.as_fd(), &mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name (NUL-ended).
            let mut off = 0;
            while off + 19 < n {
                let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                let name = &buf[off + 19..off + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                off += reclen.max(1);
                if name == b"." || name == b".." {
                    continue;
                }
                if out.len() >= LIST_MAX {
                    return Err(Error::Path {
                        path: path.to_string(),
                        reason: format!("more than {LIST_MAX} entries"),
                    });
                }
                if let Some(entry) = describe(dir.as_fd(), name) {
                    out.push(entry);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a file, a symlink (never what it points to) or an empty directory of the work
    /// dir.
    pub fn remove_file(&self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let _as_sandbox = self.act_as_sandbox()?;
        let dir = self.walk(&comps, false)?;
        let name = comps.last().unwrap();
        match sys::unlinkat(dir.as_fd(), name, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                sys::unlinkat(dir.as_fd(), name, libc::AT_REMOVEDIR).map_err(|e| {
                    match e.raw_os_error() {
                        Some(libc::ENOTEMPTY) => Error::Path {
                            path: path.to_string(),
                            reason: "the directory is not empty".into(),
                        },
                        _ => self.path_err(&comps, e),
                    }
                })
            }
            r => r.map_err(|e| self.path_err(&comps, e)),
        }
    }

    /// Opens (creating when `create`) each directory of `comps[..comps.len()-1]` beneath the
    /// work dir, never following a symlink. Returns the innermost directory.
    fn walk(&self, comps: &[CString], create: bool) -> Result<OwnedFd> {
        self.open_dir(comps, comps.len() - 1, create)
    }

    /// Opens the directory `comps[..n]` (the work dir itself when `n` is 0), creating missing
    /// ones when `create`, never following a symlink.
    fn open_dir(&self, comps: &[CString], n: usize, create: bool) -> Result<OwnedFd> {
        let work = self.reaper()?.work.as_fd();
        let mut dir: Option<OwnedFd> = None;
        for c in &comps[..n] {
            let base: BorrowedFd<'_> = dir.as_ref().map_or(work, |d| d.as_fd());
            let open = || {
                sys::openat2(
                    base,
                    c,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                    RESOLVE,
                )
            };
            let next = match open() {
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdirat(base, c, 0o755) {
                        Ok(()) => open().map_err(|e| self.path_err(comps, e))?,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            open().map_err(|e| self.path_err(comps, e))?
                        }
                        Err(e) => return Err(self.path_err(comps, e)),
                    }
                }
                r => r.map_err(|e| self.path_err(comps, e))?,
            };
            dir = Some(next);
        }
        match dir {
            Some(d) => Ok(d),
            None => sys::openat2(work, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE)
                .map_err(|e| self.path_err(comps, e)),
        }
    }

    fn path_err(&self, comps: &[CString], e: std::io::Error) -> Error {
        let path = comps
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let reason = match e.raw_os_error() {
            Some(libc::ELOOP) => {
                "a symlink is in the way (symlinks are never followed)".to_string()
            }
            Some(libc::EXDEV) => "it leads outside the work dir".to_string(),
            Some(libc::ENOENT) => NO_SUCH_FILE.to_string(),
            // A directory component opened with O_NOFOLLOW | O_DIRECTORY that is a symlink.
            Some(libc::ENOTDIR) => {
                "a path component is not a directory (or is a symlink, which is never followed)"
                    .to_string()
            }
            _ => e.to_string(),
        };
        Error::Path { path, reason }
    }

    /// File access in the work dir is done as the sandbox user's host ids: the work dir's
    /// tmpfs belongs to the instance's user namespace, which refuses inodes owned by ids it
    /// does not map (EOVERFLOW), and the supervisor should have no more rights there than the
    /// program has. Per-thread; a no-op when unprivileged (our ids are the mapped ones).
    pub(super) fn act_as_sandbox(&self) -> Result<Option<sys::host::FsIdGuard>> {
        if !self.ids.privileged {
            return Ok(None);
        }
        sys::host::act_as(self.ids.host_uid, self.ids.host_gid)
            .map(Some)
            .ok_or_else(|| {
                Error::io(
                    "acting as the sandbox user",
                    None,
                    std::io::Error::from_raw_os_error(libc::EPERM),
                )
            })
    }
}

/// The entry `name` of `dir` as `list_dir` reports it; `None` when it was removed meanwhile.
fn describe(dir: BorrowedFd<'_>, name: &[u8]) -> Option<DirEntry> {
    let c = CString::new(name).unwrap_or_default();
    // O_PATH | O_NOFOLLOW opens a symlink itself; fstat then describes the link.
    let fd = sys::openat2(dir, &c, libc::O_PATH | libc::O_NOFOLLOW, 0, RESOLVE).ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    let t = meta.file_type();
    Some(DirEntry {
        name: String::from_utf8_lossy(name).into_owned(),
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
        kind: if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_dir() {
            FileKind::Dir
        } else if t.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        },
    })
}

#[cfg(test)]
mod tests {
    use super::components;

    fn names(p: &str) -> Vec<String> {
        components(p)
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn work_dir_paths_are_split_and_checked() {
        assert_eq!(names("a/b/c.txt"), ["a", "b", "c.txt"]);
        assert_eq!(names("/home/sandbox/x"), ["x"]);
        assert_eq!(names("a//b/"), ["a", "b"]);
        for bad in [
            "",
            "/",
            "..",
            "a/../b",
            "./a",
            "/etc/passwd",
            "/home/sandboxx/a",
            "/home/sandbox",
            "a\0b",
        ] {
            assert!(components(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
