//! The mount plan: every mount of an instance's root, prepared in the parent as plain data.
//!
//! The reaper executes it between `clone` and `pivot_root` with raw syscalls only, so nothing
//! here may need allocation once built. Destinations are host paths under the template root
//! (the reaper mounts before pivoting); `inside` is kept for error messages.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// What the reaper does for one entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MountKind {
    /// Bind `src` (recursively when `recursive`), then apply `attrs` with `mount_setattr`.
    Bind { src: CString, recursive: bool },
    /// A new filesystem: `mount(fstype, dst, fstype, flags, data)`.
    Fs {
        fstype: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    /// `mkdir -p dst` as the sandbox user, for a mount point inside a tmpfs of this instance
    /// (e.g. a virtualenv under /tmp), where the template's mount points are hidden.
    MkdirP,
    /// Creates `entries` (absolute host paths) as the sandbox user, in order, in a tmpfs this
    /// plan mounted: the skeleton of a GPU instance's own `/dev`.
    Populate { entries: Vec<(CString, Entry)> },
    /// `mount_setattr(dst, attrs)` on the mount at `dst` alone (e.g. a populated tmpfs made
    /// read-only; the mounts below it keep their own attributes).
    SetAttr,
}

/// One entry a `Populate` op creates.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Entry {
    /// A directory, mode 0755 (a mount point, e.g. `/dev/shm`).
    Dir,
    /// An empty file, mode 0644 (a mount point for a device node).
    File,
    /// A symbolic link to this target.
    Symlink(CString),
}

/// One mount of the plan.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MountOp {
    pub kind: MountKind,
    /// Absolute host path of the mount point inside the template.
    pub dst: CString,
    /// `MOUNT_ATTR_*` set after mounting (recursively for recursive binds).
    pub attrs: u64,
    /// The path as the program sees it (for messages).
    pub inside: String,
    /// This is the work dir: the reaper opens it and hands the fd to the supervisor.
    pub is_work: bool,
}

/// The whole plan for one sandbox; built once per `Sandbox` and shared by all its instances.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct MountPlan {
    /// The template directory that becomes `/`.
    pub root: CString,
    pub ops: Vec<MountOp>,
}

/// Read-only, no setuid, no device nodes: what every system and `--ro` bind gets.
pub const RO_ATTRS: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
/// Writable binds and tmpfs mounts.
pub const RW_ATTRS: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
/// Device node binds: devices must work, nothing may be executed or setuid.
pub const DEV_ATTRS: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
/// A GPU instance's own `/dev` tmpfs once populated (its node binds keep `DEV_ATTRS`).
pub const DEV_DIR_ATTRS: u64 = RO_ATTRS | MOUNT_ATTR_NOEXEC;

/// Builds a plan rooted at `root` (the template directory).
pub struct PlanBuilder {
    root: PathBuf,
    ops: Vec<MountOp>,
}

fn cstring(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    // Paths reaching here were validated (no NUL) by the policy.
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

impl PlanBuilder {
    pub fn new(root: &Path) -> PlanBuilder {
        PlanBuilder {
            root: root.to_path_buf(),
            ops: Vec::new(),
        }
    }

    fn dst(&self, inside: &Path) -> CString {
        cstring(&self.root.join(inside.strip_prefix("/").unwrap_or(inside)))
    }

    /// Bind host `src` at `inside` with `attrs`.
    pub fn bind(&mut self, src: &Path, inside: &Path, recursive: bool, attrs: u64) {
        self.ops.push(MountOp {
            kind: MountKind::Bind {
                src: cstring(src),
                recursive,
            },
            dst: self.dst(inside),
            attrs,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    /// Mount a tmpfs of `size_bytes` at `inside` with the given mode (and owner, inside ids).
    pub fn tmpfs(
        &mut self,
        inside: &Path,
        size_bytes: u64,
        mode: u32,
        owner: Option<u32>,
        is_work: bool,
    ) {
        let mut data = format!("size={size_bytes},mode={mode:o}");
        if let Some(id) = owner {
            data.push_str(&format!(",uid={id},gid={id}"));
        }
        self.ops.push(MountOp {
            kind: MountKind::Fs {
                fstype: CString::new("tmpfs").unwrap(),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: CString::new(data).unwrap(),
            },
            dst: self.dst(inside),
            attrs: 0,
            inside: inside.display().to_string(),
            is_work,
        });
    }

    /// Creates `inside` (and its parents) in a filesystem mounted earlier in the plan.
    pub fn mkdir_p(&mut self, inside: &Path) {
        self.ops.push(MountOp {
            kind: MountKind::MkdirP,
            dst: self.dst(inside),
            attrs: 0,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    /// Creates `entries` (names relative to `inside`) in a tmpfs mounted earlier at `inside`.
    pub fn populate(&mut self, inside: &Path, entries: Vec<(&str, Entry)>) {
        let entries = entries
            .into_iter()
            .map(|(name, e)| (self.dst(&inside.join(name)), e))
            .collect();
        self.ops.push(MountOp {
            kind: MountKind::Populate { entries },
            dst: self.dst(inside),
            attrs: 0,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    /// Sets `attrs` on the mount at `inside` (not on the mounts below it).
    pub fn setattr(&mut self, inside: &Path, attrs: u64) {
        self.ops.push(MountOp {
            kind: MountKind::SetAttr,
            dst: self.dst(inside),
            attrs,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    /// A private devpts instance (`newinstance`): ptys owned by `owner` (an inside id), mode
    /// 0620, its `ptmx` node 0666, at most `max` of them at once. No pty of the host or of
    /// another instance is in it.
    pub fn devpts(&mut self, inside: &Path, owner: u32, max: u32) {
        let data = format!("newinstance,ptmxmode=0666,mode=0620,uid={owner},gid={owner},max={max}");
        self.ops.push(MountOp {
            kind: MountKind::Fs {
                fstype: CString::new("devpts").unwrap(),
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                data: CString::new(data).unwrap(),
            },
            dst: self.dst(inside),
            attrs: 0,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    /// A fresh procfs for the instance's pid namespace.
    pub fn proc(&mut self, inside: &Path) {
        self.ops.push(MountOp {
            kind: MountKind::Fs {
                fstype: CString::new("proc").unwrap(),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: CString::default(),
            },
            dst: self.dst(inside),
            attrs: 0,
            inside: inside.display().to_string(),
            is_work: false,
        });
    }

    pub fn finish(self) -> MountPlan {
        MountPlan {
            root: cstring(&self.root),
            ops: self.ops,
        }
    }
}
