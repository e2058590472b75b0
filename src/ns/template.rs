//! The persistent root template: a skeleton of empty mount points and small synthesized files
//! that every instance's root is built on (DESIGN.md §4).
//!
//! Created once under a lock and kept: mount points are never removed (removing a directory
//! that was a mount point costs an RCU grace period), and mount points for `--ro`/`--rw` INSIDE
//! paths are added on first use. The host's `/etc` is never exposed: the few files programs
//! need are copied or synthesized (no `/etc/shadow`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Bumped whenever the template's contents change, so old templates are not reused.
const VERSION: u32 = 3;
/// Written beside a finished template (`root-v1.ready`), outside what instances see.
const MARKER: &str = "ready";

/// Top-level system directories taken from the source root: symlinks are replicated (merged
/// /usr), directories become read-only binds.
pub const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Device nodes bound from the host's /dev.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom"];
/// Directories every instance's /dev has besides the nodes (mount points).
pub const DEV_DIRS: &[&str] = &["shm", "pts"];
/// Symlinks every instance's /dev has: (name, target).
pub const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    // The instance's own devpts (mounted with `newinstance` at /dev/pts) has its ptmx there.
    ("ptmx", "pts/ptmx"),
];

/// Small files copied from the source root's /etc (when present): loader cache, certificates,
/// time zone, service names, matplotlib's defaults (Debian keeps them only in /etc, and
/// matplotlib refuses to import without them). Nothing secret.
const ETC_COPIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "localtime",
    "os-release",
    "debian_version",
    "protocols",
    "services",
    "mime.types",
    "ssl/certs/ca-certificates.crt",
    "matplotlibrc",
];

/// Where rsandbox keeps its persistent files: `/var/lib/rsandbox` as root,
/// `$XDG_RUNTIME_DIR/rsandbox` (or `/tmp/rsandbox-UID`) otherwise.
pub fn base_dir() -> PathBuf {
    let (uid, _) = sys::ids();
    if uid == 0 {
        PathBuf::from("/var/lib/rsandbox")
    } else {
        crate::paths::user_runtime_dir().join("rsandbox")
    }
}

/// A ready template.
#[derive(Debug, Clone)]
pub struct Template {
    pub root: PathBuf,
    lock: PathBuf,
}

fn name_for(source: &Path) -> String {
    if source == Path::new("/") {
        return format!("root-v{VERSION}");
    }
    // FNV-1a of the rootfs path: one template per rootfs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in source.as_os_str().as_encoded_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("root-v{VERSION}-{h:016x}")
}

struct Locked(#[allow(dead_code)] fs::File);

impl Locked {
    fn take(path: &Path) -> Result<Locked> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("opening lock", path.to_path_buf(), e))?;
        use std::os::fd::AsFd;
        sys::flock(f.as_fd(), libc::LOCK_EX)
            .map_err(|e| Error::io("locking", path.to_path_buf(), e))?;
        Ok(Locked(f))
    }
}

/// Returns the template for `source`, building it first if needed.
pub fn ensure(source: &Path) -> Result<Template> {
    let base = base_dir();
    crate::paths::private_dir(&base, 0o755)?;
    let root = base.join(name_for(source));
    let lock = base.join("template.lock");
    let t = Template {
        root: root.clone(),
        lock: lock.clone(),
    };
    if root.with_extension(MARKER).exists() {
        return Ok(t);
    }
    let _guard = Locked::take(&lock)?;
    if root.with_extension(MARKER).exists() {
        return Ok(t);
    }
    // Builds interrupted by a crash (we hold the lock, so none is running now).
    if let Ok(rd) = fs::read_dir(&base) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".build-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let _ = fs::remove_dir_all(&root); // a half-installed template without its marker
    let tmp = base.join(format!(".build-{}", std::process::id()));
    let res = build(&tmp, source)
        .map_err(|e| Error::io("building the root template in", tmp.clone(), e))
        .and_then(|_| {
            fs::rename(&tmp, &root)
                .map_err(|e| Error::io("installing the root template at", root.clone(), e))
        });
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    write_file(
        &root.with_extension(MARKER),
        format!("{VERSION}\n").as_bytes(),
    )
    .map_err(|e| Error::io("marking the root template ready", root.clone(), e))?;
    Ok(t)
}

fn mkdir(p: &Path, mode: u32) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn write_file(p: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o644)
        .open(p)?;
    f.write_all(contents)
}

/// Copies a file or replicates a symlink from `src` to `dst` (missing sources are skipped).
fn copy_entry(src: &Path, dst: &Path) -> std::io::Result<()> {
    let Ok(m) = fs::symlink_metadata(src) else {
        return Ok(());
    };
    if let Some(parent) = dst.parent() {
        mkdir(parent, 0o755)?;
    }
    if m.file_type().is_symlink() {
        symlink(fs::read_link(src)?, dst)
    } else if m.is_file() {
        fs::copy(src, dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(0o644))
    } else {
        Ok(())
    }
}

fn build(t: &Path, source: &Path) -> std::io::Result<()> {
    mkdir(t, 0o755)?;
    for d in SYSTEM_DIRS {
        let src = source.join(d);
        match fs::symlink_metadata(&src) {
            Ok(m) if m.file_type().is_symlink() => symlink(fs::read_link(&src)?, t.join(d))?,
            Ok(m) if m.is_dir() => mkdir(&t.join(d), 0o755)?,
            _ => {}
        }
    }
    for d in DEV_DIRS {
        mkdir(&t.join("dev").join(d), 0o755)?;
    }
    for d in ["proc", "tmp", "home/sandbox", "etc/ssl/certs", "run", "var"] {
        mkdir(&t.join(d), 0o755)?;
    }
    fs::set_permissions(t.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    symlink("../tmp", t.join("var/tmp"))?;
    for n in DEV_NODES {
        write_file(&t.join("dev").join(n), b"")?;
    }
    for (name, target) in DEV_LINKS {
        symlink(target, t.join("dev").join(name))?;
    }
    let etc = t.join("etc");
    write_file(
        &etc.join("passwd"),
        b"root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n\
          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    write_file(
        &etc.join("group"),
        b"root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
    )?;
    write_file(
        &etc.join("hosts"),
        b"127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write_file(&etc.join("hostname"), b"sandbox\n")?;
    write_file(&etc.join("resolv.conf"), b"")?;
    write_file(
        &etc.join("nsswitch.conf"),
        b"passwd: files\ngroup: files\nhosts: files\n",
    )?;
    for f in ETC_COPIES {
        copy_entry(&source.join("etc").join(f), &etc.join(f))?;
    }
    // /etc/alternatives holds the symlinks /usr/bin/{awk,editor,...} point through.
    if let Ok(rd) = fs::read_dir(source.join("etc/alternatives")) {
        mkdir(&etc.join("alternatives"), 0o755)?;
        for e in rd.flatten() {
            copy_entry(&e.path(), &etc.join("alternatives").join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Why an INSIDE path cannot be a mount point, if it cannot.
pub fn check_inside(inside: &Path) -> std::result::Result<(), String> {
    if !inside.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let mut depth = 0;
    for c in inside.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(_) => depth += 1,
            _ => return Err("must not contain '.' or '..'".into()),
        }
    }
    if depth == 0 {
        return Err("cannot be /".into());
    }
    let first = inside
        .components()
        .nth(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    let reserved = ["proc", "dev", "tmp", "etc", "run", "var"];
    if SYSTEM_DIRS.contains(&first.as_str()) || reserved.contains(&first.as_str()) {
        return Err(format!(
            "/{first} is managed by rsandbox (system binds, /proc, /dev, /tmp, /etc)"
        ));
    }
    if inside.starts_with(crate::defaults::WORK_DIR) {
        return Err(format!(
            "{} is the work dir; copy files in with --file",
            crate::defaults::WORK_DIR
        ));
    }
    Ok(())
}

impl Template {
    /// Makes sure `inside` exists in the template as a directory (or an empty file, for a
    /// file bind), creating it under the template lock. Kept afterwards.
    pub fn ensure_mount_point(&self, inside: &Path, is_dir: bool) -> Result<()> {
        let rel = inside.strip_prefix("/").unwrap_or(inside);
        let target = self.root.join(rel);
        // Every existing component must be a real directory, never a symlink.
        let mut cur = self.root.clone();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::invalid(
                        "mount point",
                        format!(
                            "{} passes through a symlink in the template",
                            inside.display()
                        ),
                    ))
                }
                Ok(m) if i + 1 < comps.len() && !m.is_dir() => {
                    return Err(Error::invalid(
                        "mount point",
                        format!("{} is under a file", inside.display()),
                    ))
                }
                Ok(m) if i + 1 == comps.len() && m.is_dir() != is_dir => {
                    return Err(Error::invalid(
                        "mount point",
                        format!(
                            "{} is already a mount point of the other kind (file vs directory)",
                            inside.display()
                        ),
                    ))
                }
                _ => {}
            }
        }
        if fs::symlink_metadata(&target).is_ok() {
            return Ok(());
        }
        let _guard = Locked::take(&self.lock)?;
        let res = if is_dir {
            mkdir(&target, 0o755)
        } else {
            target
                .parent()
                .map_or(Ok(()), |p| mkdir(p, 0o755))
                .and_then(|_| match write_file(&target, b"") {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    r => r,
                })
        };
        res.map_err(|e| Error::io("creating the mount point", target, e))
    }
}

#[cfg(test)]
mod tests {
    use super::check_inside;
    use std::path::Path;

    #[test]
    fn inside_paths_must_not_shadow_managed_directories() {
        for ok in [
            "/data",
            "/opt/models",
            "/root/.pyenv/versions/3.11.7",
            "/mnt/x",
        ] {
            assert!(check_inside(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "relative",
            "/",
            "/proc",
            "/proc/sys",
            "/usr/lib/x",
            "/dev/sda",
            "/etc",
            "/tmp/x",
            "/home/sandbox/x",
            "/a/../b",
        ] {
            assert!(
                check_inside(Path::new(bad)).is_err(),
                "{bad} must be refused"
            );
        }
    }
}
