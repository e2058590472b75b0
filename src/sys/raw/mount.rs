//! Mounts, the root switch, namespaces, the hostname and loopback, and Landlock's syscalls.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::os::raw::c_char;
use std::ptr;

use super::{close, cvt, cvt_long};

/// `mount(2)`.
pub fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are null or NUL-terminated strings that outlive the call.
    cvt(unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) }).map(drop)
}

/// `mount_setattr(2)` attribute bits.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
/// `AT_RECURSIVE`: `mount_setattr` on the whole subtree.
const AT_RECURSIVE: u32 = 0x8000;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` on `path`, recursively when `recursive` (rustix has no wrapper).
pub fn mount_setattr(path: &CStr, recursive: bool, attr_set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a NUL-terminated path and a live, correctly sized mount_attr.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated paths that outlive the call.
    cvt_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// `unshare(2)`.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

/// `sethostname(2)`.
pub fn sethostname(name: &[u8]) -> io::Result<()> {
    // SAFETY: a live byte slice of the given length.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Sets `lo` up with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls (no netlink, no allocation).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) touches no memory of ours.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as c_char;
    }
    let r = (|| {
        // SAFETY: SIOCGIFFLAGS fills the live ifreq on our stack.
        cvt(unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) })?;
        // SAFETY: the kernel just wrote ifru_flags, the union member SIOCGIFFLAGS fills.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as i16 };
        // SAFETY: SIOCSIFFLAGS reads the live ifreq on our stack.
        cvt(unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) })
    })();
    close(s);
    r.map(drop)
}

/// `struct landlock_ruleset_attr` (ABI 6 layout; older kernels are given a prefix of it).
#[repr(C)]
pub struct LandlockRulesetAttr {
    pub handled_access_fs: u64,
    pub handled_access_net: u64,
    pub scoped: u64,
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// `landlock_create_ruleset(2)` with the first `size` bytes of `attr` (the struct grew over
/// ABIs: a kernel is given only the fields it knows). The caller owns the returned descriptor.
pub fn landlock_create_ruleset(attr: &LandlockRulesetAttr, size: usize) -> io::Result<RawFd> {
    let size = size.min(std::mem::size_of::<LandlockRulesetAttr>());
    // SAFETY: attr is live and at least `size` bytes long.
    let r = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            attr as *const LandlockRulesetAttr,
            size,
            0,
        )
    })?;
    Ok(r as RawFd)
}

/// `landlock_add_rule(2)` of a `LANDLOCK_RULE_PATH_BENEATH` rule: `access` beneath `parent`.
pub fn landlock_add_path_rule(ruleset: RawFd, parent: RawFd, access: u64) -> io::Result<()> {
    const LANDLOCK_RULE_PATH_BENEATH: i32 = 1;
    let pb = PathBeneath {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: a live, correctly laid out path_beneath attribute.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &pb as *const PathBeneath,
            0,
        )
    })
    .map(drop)
}

/// `landlock_restrict_self(2)`: this thread (and what it forks) joins the ruleset's domain.
pub fn landlock_restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: no memory is involved.
    cvt_long(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) }).map(drop)
}

/// Landlock's ABI version, or 0 when the kernel has none.
pub fn landlock_abi() -> u32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION (1) with a null attr and size 0 only queries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 {
        0
    } else {
        r as u32
    }
}
