//! The instance's root, in the reaper: the mount plan executed in order, then `pivot_root` into
//! it and the old root detached. Under the rule in `mod.rs`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

use crate::error::Stage;
use crate::ns::mount::{Entry, MountKind, MountPlan};
use crate::sys;

/// Mounts the plan and pivots into it; returns an fd of the work dir.
pub(super) fn setup_root(plan: &MountPlan) -> RawFd {
    let root = plan.root.as_c_str();
    check!(
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
        Stage::MountPrivate
    );
    check!(
        sys::mount(Some(root), root, None, libc::MS_BIND, None),
        Stage::BindRoot
    );
    let mut work_fd = -1;
    for (i, op) in plan.ops.iter().enumerate() {
        match &op.kind {
            MountKind::Bind { src, recursive } => {
                let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                check!(
                    sys::mount(Some(src), &op.dst, None, flags, None),
                    Stage::Mount,
                    i
                );
                if op.attrs != 0 {
                    check!(
                        sys::mount_setattr(&op.dst, *recursive, op.attrs),
                        Stage::MountAttr,
                        i
                    );
                }
            }
            MountKind::Fs {
                fstype,
                flags,
                data,
            } => {
                let data = if data.is_empty() {
                    None
                } else {
                    Some(data.as_c_str())
                };
                check!(
                    sys::mount(Some(fstype), &op.dst, Some(fstype), *flags, data),
                    Stage::Mount,
                    i
                );
            }
            MountKind::MkdirP => {
                let skip = root.to_bytes().len();
                check!(as_sandbox(|| mkdir_p(&op.dst, skip)), Stage::Mount, i)
            }
            MountKind::Populate { entries } => {
                check!(as_sandbox(|| populate(entries)), Stage::Mount, i)
            }
            MountKind::SetAttr => check!(
                sys::mount_setattr(&op.dst, false, op.attrs),
                Stage::MountAttr,
                i
            ),
        }
        if op.is_work {
            work_fd = check!(
                sys::open(&op.dst, libc::O_PATH | libc::O_DIRECTORY, 0),
                Stage::WorkFd,
                i
            );
        }
    }
    check!(
        sys::mount_setattr(root, false, crate::ns::mount::RO_ATTRS),
        Stage::RootReadonly
    );
    check!(sys::chdir(root), Stage::PivotRoot);
    check!(sys::pivot_root(c".", c"."), Stage::PivotRoot);
    check!(sys::umount2(c".", libc::MNT_DETACH), Stage::DetachOldRoot);
    check!(sys::chdir(c"/"), Stage::DetachOldRoot);
    work_fd
}

/// Runs `work` as the sandbox user, in a vfork-like child: our own uid is unmapped, a tmpfs of
/// this namespace refuses inodes owned by unmapped ids, and an unmapped fsuid could not be set
/// back afterwards (later binds need our own credentials to reach their sources).
fn as_sandbox(work: impl Fn() -> io::Result<()>) -> io::Result<()> {
    // SAFETY: a fork-like clone (no CLONE_VM); the child only runs `work` (raw syscalls on the
    // plan's paths) and _exit.
    let pid = unsafe { sys::clone_classic(libc::CLONE_VFORK) }?;
    if pid == 0 {
        sys::set_fs_ids(crate::ns::user::SANDBOX_ID, crate::ns::user::SANDBOX_ID);
        let code = match work() {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO).min(255),
        };
        sys::exit(code);
    }
    let (_, status, _) = sys::wait4(pid, 0)?;
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e)),
        None => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Creates each entry (a `Populate` op's) in order; raw syscalls on the plan's paths.
fn populate(entries: &[(CString, Entry)]) -> io::Result<()> {
    for (path, entry) in entries {
        match entry {
            Entry::Dir => sys::mkdir(path, 0o755)?,
            Entry::File => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
                sys::close(sys::open(path, flags, 0o644)?);
            }
            Entry::Symlink(target) => sys::symlink(target, path)?,
        }
    }
    Ok(())
}

/// `mkdir -p` of `path`'s components after the first `skip` bytes (the template root). The
/// path is copied into a stack buffer; nothing is allocated.
fn mkdir_p(path: &CStr, skip: usize) -> io::Result<()> {
    let bytes = path.to_bytes();
    let mut buf = [0u8; 4096];
    if bytes.len() >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    let mut i = skip + 1;
    while i <= bytes.len() {
        if i == bytes.len() || buf[i] == b'/' {
            let saved = buf[i];
            buf[i] = 0;
            let dir = CStr::from_bytes_until_nul(&buf[..=i])
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            match sys::mkdir(dir, 0o755) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
            buf[i] = saved;
        }
        i += 1;
    }
    Ok(())
}
