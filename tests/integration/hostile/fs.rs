//! Filesystem escapes: read-only mounts, the mount API, chroot and `..`, propagation, fds, cwd.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rsandbox::seccomp::Profile;
use rsandbox::Command;
use serde_json::Value;

use super::{
    attack, attack_in, eperm_verdict, expect_all, file_hash, ok, open_tempdir, s, with_profile,
};
use crate::util;

fn write_mode(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tmpfs mounted on the host for the duration of a test (root only), unmounted on drop.
struct HostMount(PathBuf);

impl HostMount {
    fn tmpfs(at: &Path) -> HostMount {
        let dst = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"rsandbox-hostile".as_ptr(),
                dst.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1m,mode=0777".as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mounting a tmpfs at {}", at.display());
        HostMount(at.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let dst = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2(2) with a NUL-terminated string.
        unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The host's mount table (what must not change while instances live).
fn host_mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Writes of every kind to a `--ro` bind, to a mount beneath it (as root: a tmpfs the host
/// mounted there, which the recursive bind carries) and to the system dirs fail with EROFS,
/// also without the seccomp filter: the read-only mount flag is the reason, not DAC (files are
/// 0666/0777), Landlock (EROFS is decided before Landlock's hook) or seccomp. A reopen through
/// /proc/self/fd does not get around it. The host files are unchanged.
#[test]
fn read_only_binds_and_mounts_beneath_them_refuse_writes() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = open_tempdir();
    write_mode(&dir.path().join("f"), b"host data\n", 0o666);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::set_permissions(
        dir.path().join("sub"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let _sub = util::is_root().then(|| {
        let m = HostMount::tmpfs(&dir.path().join("sub"));
        write_mode(&dir.path().join("sub/g"), b"submount data\n", 0o666);
        m
    });
    if !util::is_root() {
        eprintln!("NOTE: unprivileged pass: no host submount beneath the bind (needs root)");
        write_mode(&dir.path().join("sub/g"), b"submount data\n", 0o666);
    }
    let before = (
        file_hash(&dir.path().join("f")),
        file_hash(&dir.path().join("sub/g")),
    );
    let body = r#"
import stat
targets = {'bind': '/mnt/ro', 'sub': '/mnt/ro/sub', 'usr': '/usr/lib'}
for k, d in targets.items():
    f = d + ('/f' if k == 'bind' else '/g' if k == 'sub' else '/os-release')
    out[k + '_open_w'] = err(lambda: open(f, 'r+b'))
    out[k + '_create'] = err(lambda: open(d + '/new', 'wb'))
    out[k + '_mkdir'] = err(lambda: os.mkdir(d + '/newdir'))
    out[k + '_unlink'] = err(lambda: os.unlink(f))
    out[k + '_rename'] = err(lambda: os.rename(f, d + '/moved'))
    out[k + '_chmod'] = err(lambda: os.chmod(f, 0o777))
    out[k + '_utime'] = err(lambda: os.utime(f, (0, 0)))
    out[k + '_truncate'] = err(lambda: os.truncate(f, 0))
    out[k + '_symlink'] = err(lambda: os.symlink('/x', d + '/link'))
    out[k + '_xattr'] = err(lambda: os.setxattr(f, 'user.x', b'1'))
    fd = os.open(f, os.O_RDONLY)
    out[k + '_reopen_w'] = err(lambda: open('/proc/self/fd/%d' % fd, 'r+b'))
out['dac_allows'] = os.stat('/mnt/ro/f').st_mode & 0o002 != 0
out['sub_seen'] = open('/mnt/ro/sub/g').read()
"#;
    let keys: Vec<String> = ["bind", "sub", "usr"]
        .iter()
        .flat_map(|k| {
            [
                "open_w", "create", "mkdir", "unlink", "rename", "chmod", "utime", "truncate",
                "symlink", "xattr", "reopen_w",
            ]
            .iter()
            .map(move |op| format!("{k}_{op}"))
        })
        .collect();
    for profile in [Profile::Default, Profile::Unconfined] {
        let sb = util::builder()
            .seccomp(profile.clone())
            .ro(dir.path(), Some(PathBuf::from("/mnt/ro")))
            .build()
            .unwrap();
        let r = attack(&sb, body);
        // Opening or truncating root's 0644 files in /usr is refused by DAC first (EACCES):
        // the kernel checks permission before the mount there (the binds' 0666 files show
        // the mount's EROFS for the same calls).
        let dac = ["usr_open_w", "usr_reopen_w", "usr_truncate"];
        let keys: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !dac.contains(k))
            .collect();
        expect_all(&r, &keys, "EROFS", "read-only mount");
        // Where the host's /usr is itself read-only (the v2 guest's 9p root), the superblock's
        // EROFS comes before any permission check.
        let (why, errno) = if util::host_read_only("/usr") {
            ("the host's own read-only /usr", "EROFS")
        } else {
            ("DAC on root's files", "EACCES")
        };
        expect_all(&r, &dac, errno, why);
        assert_eq!(r["dac_allows"], Value::Bool(true), "{r:?}");
        assert_eq!(s(&r, "sub_seen"), "submount data\n", "{profile:?}");
    }
    assert_eq!(
        before,
        (
            file_hash(&dir.path().join("f")),
            file_hash(&dir.path().join("sub/g"))
        ),
        "host files changed"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "something was created on the host"
    );
}

/// Remounting a read-only bind read-write, unmounting the binds, /proc or the work dir,
/// changing propagation, and the new mount API (fsopen, fspick, open_tree with a clone,
/// move_mount, mount_setattr clearing RDONLY) with real arguments all get the profile's EPERM.
/// Without the filter the kernel refuses them too (the program has no capability in its user
/// namespace), so the compiled program is checked for each call; afterwards /usr is still
/// read-only and the instance's mount table is unchanged.
#[test]
fn remount_umount_and_the_new_mount_api_are_refused() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let body = r#"
SYS = dict(mount=165, umount2=166, fsopen=430, fspick=433, open_tree=428, move_mount=429, mount_setattr=442)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SHARED, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 20, 1 << 18
AT_FDCWD, AT_RECURSIVE, OPEN_TREE_CLONE, MNT_DETACH = -100, 0x8000, 1, 2
before = open('/proc/self/mountinfo').read()
out['remount_rw'] = attempt(SYS['mount'], 0, b'/usr', 0, MS_REMOUNT | MS_BIND, 0)
out['remount_ro_off'] = attempt(SYS['mount'], 0, b'/', 0, MS_REMOUNT | MS_BIND, 0)
out['mount_tmpfs'] = attempt(SYS['mount'], b'tmpfs', b'/home/sandbox', b'tmpfs', 0, 0)
out['bind_proc'] = attempt(SYS['mount'], b'/proc', b'/home/sandbox', 0, MS_BIND | MS_REC, 0)
out['make_shared'] = attempt(SYS['mount'], 0, b'/', 0, MS_SHARED | MS_REC, 0)
out['umount_usr'] = attempt(SYS['umount2'], b'/usr', 0)
out['umount_proc'] = attempt(SYS['umount2'], b'/proc', MNT_DETACH)
out['umount_work'] = attempt(SYS['umount2'], b'/home/sandbox', MNT_DETACH)
out['fsopen'] = attempt(SYS['fsopen'], b'tmpfs', 0)
out['fspick'] = attempt(SYS['fspick'], AT_FDCWD, b'/usr', 0)
out['open_tree'] = attempt(SYS['open_tree'], AT_FDCWD, b'/usr', OPEN_TREE_CLONE | AT_RECURSIVE)
out['move_mount'] = attempt(SYS['move_mount'], AT_FDCWD, b'/usr', AT_FDCWD, b'/home/sandbox', 0)
attr = (ctypes.c_uint64 * 4)(0, 1, 0, 0)  # attr_set 0, attr_clr MOUNT_ATTR_RDONLY
out['setattr_rw'] = attempt(SYS['mount_setattr'], AT_FDCWD, b'/usr', AT_RECURSIVE, attr, 32)
out['usr_still_ro'] = err(lambda: open('/usr/x', 'w'))
out['mounts_same'] = 'yes' if open('/proc/self/mountinfo').read() == before else 'no'
"#;
    let calls = [
        "remount_rw",
        "remount_ro_off",
        "mount_tmpfs",
        "bind_proc",
        "make_shared",
        "umount_usr",
        "umount_proc",
        "umount_work",
        "fsopen",
        "fspick",
        "open_tree",
        "move_mount",
        "setattr_rw",
    ];
    let r = attack(&util::sandbox(), body);
    expect_all(&r, &calls, "EPERM", "seccomp default profile");
    assert_eq!(s(&r, "usr_still_ro"), "EROFS");
    assert_eq!(s(&r, "mounts_same"), "yes");
    for nr in [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_fsopen,
        libc::SYS_fspick,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_mount_setattr,
    ] {
        eperm_verdict(nr, &[]);
    }
    // Without the filter: still refused (no capability), still read-only, nothing changed.
    let bare = attack(&with_profile(Profile::Unconfined), body);
    for k in calls {
        assert_ne!(
            s(&bare, k),
            "ok",
            "{k} succeeded without the filter: {bare:#?}"
        );
    }
    assert_eq!(s(&bare, "usr_still_ro"), "EROFS");
    assert_eq!(s(&bare, "mounts_same"), "yes");
}

/// Parses mountinfo text into (mount id, major:minor, root, mount point, options, fstype).
fn mountinfo_rows(text: &str) -> Vec<[String; 6]> {
    text.lines()
        .map(|l| {
            let (a, b) = l.split_once(" - ").unwrap();
            let a: Vec<&str> = a.split(' ').collect();
            let b: Vec<&str> = b.split(' ').collect();
            [a[0], a[2], a[3], a[4], a[5], b[0]].map(str::to_string)
        })
        .collect()
}

/// The chroot escape (chroot into a subdirectory, walk `..` past it, chroot back to `.`) fails
/// at its first step with the profile's EPERM; a `..` walk from the work dir and from '/' ends
/// at the instance's root; /proc/self/root is '/'; pid 1's root and cwd are unreadable. In
/// /proc/self/mountinfo no mount shows the host's root filesystem at its top (the root of the
/// instance is the template directory), and every mount is nosuid.
#[test]
fn chroot_escape_and_dotdot_walks_find_no_host() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let body = r#"
os.mkdir('/tmp/jail')
out['chroot'] = err(lambda: os.chroot('/tmp/jail'))
out['chroot_dot'] = err(lambda: os.chroot('.'))
fd = os.open('/', os.O_RDONLY)
os.chdir('/home/sandbox')
for _ in range(64):
    os.chdir('..')
root = os.stat('/')
out['walk_ends_at_root'] = 'yes' if (os.stat('.').st_ino, os.stat('.').st_dev) == (root.st_ino, root.st_dev) else 'no'
out['walk_lists'] = ' '.join(sorted(os.listdir('.')))
out['fd_dotdot'] = 'yes' if os.stat('..', dir_fd=fd).st_ino == root.st_ino else 'no'
out['proc_root'] = os.readlink('/proc/self/root')
out['proc1_root'] = err(lambda: os.readlink('/proc/1/root'))
out['proc1_cwd'] = err(lambda: os.readlink('/proc/1/cwd'))
out['proc1_root_ls'] = err(lambda: os.listdir('/proc/1/root/'))
out['mountinfo'] = open('/proc/self/mountinfo').read()
"#;
    let r = attack(&util::sandbox(), body);
    assert_eq!(s(&r, "chroot"), "EPERM", "{r:#?}");
    assert_eq!(s(&r, "chroot_dot"), "EPERM", "{r:#?}");
    eperm_verdict(libc::SYS_chroot, &[]);
    assert_eq!(s(&r, "walk_ends_at_root"), "yes");
    assert_eq!(s(&r, "fd_dotdot"), "yes");
    assert!(
        s(&r, "walk_lists").contains("home") && !s(&r, "walk_lists").contains("work"),
        "{}",
        s(&r, "walk_lists")
    );
    assert_eq!(s(&r, "proc_root"), "/");
    for k in ["proc1_root", "proc1_cwd", "proc1_root_ls"] {
        assert_eq!(
            s(&r, k),
            "EACCES",
            "{k}: pid 1 (the reaper) is not dumpable"
        );
    }
    let host_root_dev = mountinfo_rows(&std::fs::read_to_string("/proc/self/mountinfo").unwrap())
        .into_iter()
        .find(|m| m[3] == "/")
        .map(|m| m[1].clone())
        .unwrap();
    let inside = mountinfo_rows(s(&r, "mountinfo"));
    for m in &inside {
        if m[1] == host_root_dev {
            assert_ne!(
                m[2], "/",
                "the host's root filesystem is mounted at its top inside: {m:?}"
            );
        }
        assert!(
            m[4].split(',').any(|o| o == "nosuid"),
            "a mount without nosuid: {m:?}"
        );
    }
    let root = inside.iter().find(|m| m[3] == "/").unwrap();
    assert!(
        root[2].contains("/root-v"),
        "the instance's / must be the template: {root:?}"
    );
}

/// Mount propagation goes neither way. Out: while an instance lives (and after its program
/// tried to mount), the host's mount table is exactly as before. In (root, who may mount on
/// the host): a tmpfs mounted by the host beneath a `--ro` bound directory after the instance
/// was made does not appear inside.
#[test]
fn mount_propagation_goes_neither_way() {
    // Exclusive: other tests mount on the host (as root) while they run.
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let dir = open_tempdir();
    std::fs::create_dir(dir.path().join("late")).unwrap();
    let sb = util::builder()
        .ro(dir.path(), Some(PathBuf::from("/mnt/prop")))
        .build()
        .unwrap();
    let before = host_mounts();
    let inst = sb.create().unwrap();
    let r = attack_in(
        &inst,
        "out['mount'] = attempt(165, b'tmpfs', b'/tmp', b'tmpfs', 0, 0)\n\
         out['shared'] = attempt(165, 0, b'/', 0, (1 << 20) | 16384, 0)",
    );
    expect_all(&r, &["mount", "shared"], "EPERM", "seccomp");
    let during = host_mounts();
    let appeared: Vec<&String> = during.difference(&before).collect();
    // Only a host-side change may differ (none expected): no line names the instance's mounts.
    assert!(
        appeared.is_empty(),
        "instance mounts propagated to the host: {appeared:#?}"
    );
    if util::is_root() {
        let _m = HostMount::tmpfs(&dir.path().join("late"));
        write_mode(&dir.path().join("late/host-file"), b"x", 0o644);
        let r = attack_in(
            &inst,
            "out['late'] = sorted(os.listdir('/mnt/prop/late'))\n\
             out['mounts'] = [l.split()[4] for l in open('/proc/self/mountinfo')]",
        );
        assert_eq!(r["late"], serde_json::json!([]), "host mount propagated in");
        assert!(
            !r["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == "/mnt/prop/late"),
            "{r:?}"
        );
    } else {
        eprintln!(
            "NOTE: unprivileged pass: the host cannot mount, so only propagation out is shown"
        );
    }
    inst.destroy().unwrap();
    assert_eq!(host_mounts(), before);
}

/// At start a program has exactly fds 0-2 (a C-level check: `ls` of /proc/self/fd lists only
/// its own directory fd besides them), each a pipe or /dev/null, never a host file or
/// directory; its cwd is the work dir and its root '/'. The reaper (pid 1), whose fds a
/// program cannot read, holds no directory or regular file either (checked from the host): no
/// fd exists anywhere in the instance to `openat(fd, "..")` out of the root.
#[test]
fn fds_and_cwd_reach_nothing_outside_the_root() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let inst = sb.create().unwrap();
    let o = inst
        .exec(&Command::new("/bin/sh").args([
            "-c",
            "exec /bin/ls -l /proc/self/cwd /proc/self/root /proc/self/fd/",
        ]))
        .unwrap();
    let out = ok(&o);
    let (links, fd_list) = out.split_once("/proc/self/fd/:").expect("ls output");
    let fds: Vec<(String, String)> = fd_list
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let arrow = f.iter().position(|w| *w == "->")?;
            Some((f[arrow - 1].to_string(), f[arrow + 1..].join(" ")))
        })
        .collect();
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0", "1", "2", "3"], "fds at start: {out}");
    for (n, target) in &fds[..3] {
        assert!(
            target.starts_with("pipe:[") || target == "/dev/null",
            "fd {n} -> {target}"
        );
    }
    assert!(fds[3].1.starts_with("/proc/"), "fd 3 is ls's own: {out}");
    assert!(links.contains("/proc/self/cwd -> /home/sandbox\n"), "{out}");
    assert!(links.contains("/proc/self/root -> /\n"), "{out}");
    let r = attack_in(
        &inst,
        r#"
out['proc1_fd'] = err(lambda: os.listdir('/proc/1/fd'))
out['dotdot_of_pipe'] = err(lambda: os.open('..', os.O_RDONLY, dir_fd=0))
out['fchdir_pipe'] = err(lambda: os.fchdir(0))
"#,
    );
    assert_eq!(s(&r, "proc1_fd"), "EACCES");
    assert_eq!(s(&r, "dotdot_of_pipe"), "ENOTDIR");
    assert_eq!(s(&r, "fchdir_pipe"), "ENOTDIR");
    let reaper = inst.reaper_pid().unwrap();
    let Ok(reaper_fds) = std::fs::read_dir(format!("/proc/{reaper}/fd")) else {
        assert!(!util::is_root());
        eprintln!("NOTE: unprivileged pass: the reaper is not dumpable, so even its own user cannot list its fds from the host (the root pass does)");
        inst.destroy().unwrap();
        return;
    };
    for e in reaper_fds.flatten() {
        let m = std::fs::metadata(e.path());
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        if let Ok(m) = m {
            assert!(
                !(m.is_dir() || (m.is_file() && target != Path::new("/dev/null"))),
                "the reaper holds fd {:?} -> {target:?}",
                e.file_name()
            );
        }
    }
    inst.destroy().unwrap();
}
