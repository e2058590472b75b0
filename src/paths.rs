//! Where rsandbox keeps its files on the host: the state directory, the per-user runtime
//! directory, and the ownership check every directory it creates there must pass.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The state directory (one record per live instance): `/run/rsandbox/instances` as root,
/// `$XDG_RUNTIME_DIR/rsandbox/instances` (or `/tmp/rsandbox-UID/...`) otherwise.
pub fn state_dir() -> PathBuf {
    if sys::ids().0 == 0 {
        PathBuf::from("/run/rsandbox/instances")
    } else {
        user_runtime_dir().join("rsandbox/instances")
    }
}

/// `$XDG_RUNTIME_DIR` when it is ours, else `/tmp/rsandbox-UID` (created 0700, owner checked).
pub fn user_runtime_dir() -> PathBuf {
    let (uid, _) = sys::ids();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        let d = PathBuf::from(d);
        if fs::metadata(&d)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
            .unwrap_or(false)
        {
            return d;
        }
    }
    PathBuf::from(format!("/tmp/rsandbox-{uid}"))
}

/// Creates `dir` (and parents) with `mode` if missing, and checks that it is a real directory
/// owned by us: a directory planted by another user in /tmp is refused.
pub fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        return Err(Error::io("creating", dir.to_path_buf(), e));
    }
    let m = fs::symlink_metadata(dir).map_err(|e| Error::io("inspecting", dir.to_path_buf(), e))?;
    let (uid, _) = sys::ids();
    if !m.is_dir() || m.uid() != uid || (m.mode() & 0o022 != 0 && uid != 0) {
        return Err(Error::Io {
            what: "refusing to use",
            path: Some(dir.to_path_buf()),
            source: std::io::Error::other("not a directory owned by this user with mode 0700/0755"),
        });
    }
    Ok(())
}
