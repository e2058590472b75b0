//! Hostile programs: real attacks, each run inside rsandbox with default settings, asserting
//! that it failed for the reason rsandbox gives (the errno of the layer that stops it: EPERM
//! from seccomp, EROFS from a read-only mount, EACCES from Landlock or an absent capability,
//! ENOSYS for a foreign ABI) and that the host is unchanged afterwards (DESIGN.md §8). Where
//! two layers answer alike, the compiled BPF program or a run without the filter shows which
//! one it was. The README's "Security model" maps each defended (and undefended) attack to the
//! cases here; cases that other modules already prove are referenced there, not repeated.
//!
//! Groups, by name prefix: `fs_`, `proc_`, `fds_`, `privilege_`, `syscalls_`, `terminal_`,
//! `net_`, `processes_`, `resources_`, `leaks_`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rsandbox::seccomp::Profile;
use rsandbox::testing::seccomp::bpf::{self, Verdict};
use rsandbox::{Command, Instance, Net, Outcome, Sandbox, Status};
use serde_json::Value;

use crate::util::{self, Fingerprint};

/// Python helpers every attack script starts with: `name(errno)`, `err(f)` (the errno name of
/// an OSError raised by `f`, or 'ok'), `raw(nr, *args)` (one syscall through libc: 'ok' or the
/// errno name) and `attempt(nr, *args)` (the same in a forked child, so a call that should
/// have been stopped cannot change the script's own process; a clone child leaves at once).
/// Results go into `out`, printed as JSON on the last line by `done()`.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def name(e):
    return errno.errorcode.get(e, str(e))
def err(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return name(e.errno)
def arg(a):
    if not isinstance(a, int):
        return a
    return ctypes.c_ulong(a & 0xffffffffffffffff)
def raw(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    return 'ok' if r >= 0 else name(ctypes.get_errno())
def attempt(nr, *args):
    r, w = os.pipe()
    me = os.fork()
    if me == 0:
        pid = os.getpid()
        res = raw(nr, *args)
        if os.getpid() != pid:
            os._exit(0)
        os.write(w, res.encode())
        os._exit(0)
    os.close(w)
    res = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(me, 0)
    return res
def done():
    print(json.dumps(out))
"#;

/// Asserts a run ended with exit 0, showing its report otherwise; returns its stdout.
fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// Runs an attack script (the prelude, `body`, then `done()`) and returns its `out`.
fn attack(sb: &Sandbox, body: &str) -> BTreeMap<String, Value> {
    parse(&util::py(sb, &script(body)))
}

/// The same in a live instance.
fn attack_in(inst: &Instance, body: &str) -> BTreeMap<String, Value> {
    parse(&inst.exec(&Command::python(script(body))).expect("exec"))
}

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}\ndone()\n")
}

fn parse(o: &Outcome) -> BTreeMap<String, Value> {
    let out = ok(o);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON result ({e}): {out:?}\n{o:#?}"))
}

/// `r[key]` as a string (errno names and 'ok' are strings).
fn s<'a>(r: &'a BTreeMap<String, Value>, key: &str) -> &'a str {
    r.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {r:?}"))
}

/// Asserts each listed key of `r` holds `want`.
fn expect_all(r: &BTreeMap<String, Value>, keys: &[&str], want: &str, why: &str) {
    for k in keys {
        assert_eq!(s(r, k), want, "{k}: expected {want} ({why}); all: {r:#?}");
    }
}

/// A sandbox with the test defaults and the given seccomp profile.
fn with_profile(p: Profile) -> Sandbox {
    util::builder().seccomp(p).build().unwrap()
}

/// The default profile's compiled verdict on (arch, nr, args): shows the filter is the reason
/// where the kernel alone would answer the same.
fn verdict(arch: u32, nr: i64, args: &[u64]) -> Verdict {
    static DEFAULT: OnceLock<rsandbox::testing::seccomp::Compiled> = OnceLock::new();
    let c = DEFAULT.get_or_init(|| {
        rsandbox::testing::seccomp::load(&Profile::Default)
            .unwrap()
            .unwrap()
    });
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    bpf::run(&c.program, &bpf::Data::new(arch, nr as i32, a)).unwrap()
}

fn eperm_verdict(nr: i64, args: &[u64]) {
    assert_eq!(
        verdict(bpf::AUDIT_ARCH_X86_64, nr, args),
        Verdict::Errno(libc::EPERM as u16),
        "syscall {nr} {args:?}: the default profile must answer EPERM"
    );
}

/// A hash of a file's bytes, to show host binaries unchanged.
fn file_hash(p: &Path) -> (u64, u64) {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        len += n as u64;
        h.write(&buf[..n]);
    }
    (len, h.finish())
}

/// A temp dir the sandbox user may use: as root the instance's host uid is an unprivileged one,
/// so the directory is opened up (0777), like its files.
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

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

// ---------------------------------------------------------------------------------------------
// 1. Filesystem
// ---------------------------------------------------------------------------------------------

/// Writes of every kind to a `--ro` bind, to a mount beneath it (as root: a tmpfs the host
/// mounted there, which the recursive bind carries) and to the system dirs fail with EROFS,
/// also without the seccomp filter: the read-only mount flag is the reason, not DAC (files are
/// 0666/0777), Landlock (EROFS is decided before Landlock's hook) or seccomp. A reopen through
/// /proc/self/fd does not get around it. The host files are unchanged.
#[test]
fn fs_read_only_binds_and_mounts_beneath_them_refuse_writes() {
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
fn fs_remount_umount_and_the_new_mount_api_are_refused() {
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
fn fs_chroot_escape_and_dotdot_walks_find_no_host() {
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
        root[2].ends_with("root-v1"),
        "the instance's / must be the template: {root:?}"
    );
}

/// Mount propagation goes neither way. Out: while an instance lives (and after its program
/// tried to mount), the host's mount table is exactly as before. In (root, who may mount on
/// the host): a tmpfs mounted by the host beneath a `--ro` bound directory after the instance
/// was made does not appear inside.
#[test]
fn fs_mount_propagation_goes_neither_way() {
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

// ---------------------------------------------------------------------------------------------
// 2. /proc
// ---------------------------------------------------------------------------------------------

/// Opening `/proc/*/exe` for writing never reaches a host binary: pid 1's exe (the reaper, a
/// copy of the supervisor: the integration binary for library runs, rsandbox for CLI runs) is
/// EACCES because the reaper is not dumpable; the program's own exe (root's python3) is EACCES
/// by DAC; a binary the sandbox user may write (0777, from a `--ro` bind) is ETXTBSY while it
/// runs and EROFS (the mount) once it has exited. The host binaries hash the same afterwards.
#[test]
fn proc_exe_writes_leave_host_binaries_unchanged() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = open_tempdir();
    std::fs::copy("/bin/sleep", dir.path().join("mysleep")).unwrap();
    std::fs::set_permissions(
        dir.path().join("mysleep"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let watched: Vec<PathBuf> = vec![
        util::bin(),
        std::env::current_exe().unwrap(),
        python.clone(),
        dir.path().join("mysleep"),
    ];
    let before: Vec<(u64, u64)> = watched.iter().map(|p| file_hash(p)).collect();
    let body = r#"
import subprocess, time
for p in ['/proc/1/exe', '/proc/self/exe']:
    out[p + ' w'] = err(lambda: open(p, 'r+b'))
    out[p + ' trunc'] = err(lambda: os.open(p, os.O_WRONLY | os.O_TRUNC))
out['/proc/1/exe readlink'] = err(lambda: os.readlink('/proc/1/exe'))
out['/proc/1/map_files'] = err(lambda: os.listdir('/proc/1/map_files'))
child = subprocess.Popen(['/mnt/bin/mysleep', '30'])
time.sleep(0.2)
out['child exe w'] = err(lambda: open('/proc/%d/exe' % child.pid, 'r+b'))
child.kill(); child.wait()
out['stopped exe w'] = err(lambda: open('/mnt/bin/mysleep', 'r+b'))
"#;
    let sb = util::builder()
        .ro(dir.path(), Some(PathBuf::from("/mnt/bin")))
        .build()
        .unwrap();
    let r = attack(&sb, body);
    expect_all(
        &r,
        &[
            "/proc/1/exe w",
            "/proc/1/exe trunc",
            "/proc/1/exe readlink",
            "/proc/1/map_files",
        ],
        "EACCES",
        "the reaper is not dumpable",
    );
    // O_TRUNC asks the mount for write access before the permission check: EROFS.
    // (EROFS first where the host's /usr is itself read-only, as in the v2 guest.)
    let dac = if util::host_read_only("/usr") {
        "EROFS"
    } else {
        "EACCES"
    };
    assert_eq!(s(&r, "/proc/self/exe w"), dac, "DAC: root's python3");
    assert_eq!(s(&r, "/proc/self/exe trunc"), "EROFS", "read-only /usr");
    assert_eq!(s(&r, "child exe w"), "ETXTBSY", "{r:#?}");
    assert_eq!(s(&r, "stopped exe w"), "EROFS", "{r:#?}");
    // The CLI: pid 1 is a copy of the rsandbox binary itself.
    let cli = std::process::Command::new(util::bin())
        .args(["run", "--json", "-c"])
        .arg(script(
            "out['w'] = err(lambda: open('/proc/1/exe', 'r+b'))\n\
             out['cmdline'] = open('/proc/1/cmdline', 'rb').read().rstrip(b'\\0').decode()",
        ))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let last: Value =
        serde_json::from_str(v["stdout"].as_str().unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["w"], "EACCES", "{v}");
    assert_eq!(last["cmdline"], "rsandbox-init", "{v}");
    let after: Vec<(u64, u64)> = watched.iter().map(|p| file_hash(p)).collect();
    assert_eq!(before, after, "a host binary changed: {watched:?}");
}

/// /proc/sysrq-trigger, /proc/sys/kernel/core_pattern and /proc/kcore. This kernel is built
/// without sysrq and kcore: that is said loudly, the files are shown absent on the host too
/// (so their absence inside is the kernel's, not a hiding that could fail), and the same
/// barrier is proven on the sysctl files that do exist: core_pattern, drop_caches, a per-net
/// and a per-uts sysctl are refused (EACCES: root's 0644 files and Landlock) and the host's
/// core_pattern reads the same after the run. A crash dumps no core (RLIMIT_CORE 0, hard).
#[test]
fn proc_sysrq_core_pattern_and_kcore_are_out_of_reach() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let sysrq = Path::new("/proc/sysrq-trigger").exists();
    let kcore = Path::new("/proc/kcore").exists();
    if !sysrq {
        eprintln!("NOTE: this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off): the sysrq attack cannot be tried; the writable-/proc barrier is shown on core_pattern and other sysctls instead");
    }
    if !kcore {
        eprintln!("NOTE: this kernel has no /proc/kcore (CONFIG_PROC_KCORE off): reading it cannot be tried");
    }
    let body = r#"
import resource, signal
out['sysrq'] = err(lambda: open('/proc/sysrq-trigger', 'w').write('c'))
out['kcore'] = err(lambda: open('/proc/kcore', 'rb').read(16))
out['core_pattern'] = err(lambda: open('/proc/sys/kernel/core_pattern', 'w').write('|/tmp/x'))
out['drop_caches'] = err(lambda: open('/proc/sys/vm/drop_caches', 'w').write('3'))
out['ip_forward'] = err(lambda: open('/proc/sys/net/ipv4/ip_forward', 'w').write('1'))
out['hostname_sysctl'] = err(lambda: open('/proc/sys/kernel/hostname', 'w').write('pwned'))
out['core_pattern_now'] = open('/proc/sys/kernel/core_pattern').read()
try:
    resource.setrlimit(resource.RLIMIT_CORE, (1 << 30, 1 << 30)); out['raise_core'] = 'ok'
except (OSError, ValueError) as e:
    out['raise_core'] = 'refused'
pid = os.fork()
if pid == 0:
    os.chdir('/tmp')
    os.abort()
_, st = os.waitpid(pid, 0)
out['crash'] = '%s core=%s' % (signal.Signals(os.WTERMSIG(st)).name, os.WCOREDUMP(st))
out['tmp'] = sorted(os.listdir('/tmp'))
"#;
    let r = attack(&util::sandbox(), body);
    assert_eq!(s(&r, "sysrq"), if sysrq { "EACCES" } else { "ENOENT" });
    assert_eq!(s(&r, "kcore"), if kcore { "EACCES" } else { "ENOENT" });
    expect_all(
        &r,
        &[
            "core_pattern",
            "drop_caches",
            "ip_forward",
            "hostname_sysctl",
        ],
        "EACCES",
        "root's sysctl files, Landlock",
    );
    assert_eq!(s(&r, "core_pattern_now"), core_before);
    assert_eq!(s(&r, "raise_core"), "refused");
    assert_eq!(s(&r, "crash"), "SIGABRT core=False");
    assert_eq!(r["tmp"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_before
    );
}

/// `oom_score_adj` cannot go below its start value (so the OOM killer would still pick the
/// program over host processes): writing start-1 or -1000 (and the legacy oom_adj -17) is
/// EACCES and the value stays. The supervisor's own value is unchanged.
#[test]
fn proc_oom_score_adj_cannot_go_below_its_start() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let body = r#"
start = int(open('/proc/self/oom_score_adj').read())
out['start'] = str(start)
def w(path, v):
    return err(lambda: open(path, 'w').write(str(v)))
out['minus1'] = w('/proc/self/oom_score_adj', start - 1)
out['min'] = w('/proc/self/oom_score_adj', -1000)
out['legacy'] = w('/proc/self/oom_adj', -17)
out['reaper'] = w('/proc/1/oom_score_adj', -1000)
out['now'] = open('/proc/self/oom_score_adj').read().strip()
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &["minus1", "min", "legacy", "reaper"],
        "EACCES",
        "no CAP_SYS_RESOURCE; Landlock",
    );
    assert_eq!(s(&r, "now"), s(&r, "start"));
    assert_eq!(
        std::fs::read_to_string("/proc/self/oom_score_adj").unwrap(),
        host_before
    );
}

/// No host process or environment is visible: a host sentinel carries a marker in its
/// command line and environment, and so does the rsandbox CLI's environment; inside, no
/// /proc entry's cmdline, environ or comm holds it, only the instance's pids exist, the
/// program's environment is the clean one, and pid 1 shows `rsandbox-init`, not the
/// supervisor's command line (host paths, `--ro` sources).
#[test]
fn proc_shows_no_host_process_or_environment() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let marker = format!("hostile-marker-{}-{}", std::process::id(), nanos());
    let mut sentinel = util::KillOnDrop(
        std::process::Command::new("/bin/sh")
            .args(["-c", &format!("sleep 30; : {marker}")])
            .env("HOSTILE_MARKER", &marker)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = open_tempdir();
    let src = dir.path().join(&marker);
    std::fs::create_dir(&src).unwrap();
    let body = format!(
        r#"
marker = {marker:?}
found, pids = [], []
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    pids.append(int(p))
    if int(p) == os.getpid():
        continue  # this script holds the marker itself
    for f in ['cmdline', 'environ', 'comm', 'status']:
        try:
            if marker.encode() in open('/proc/%s/%s' % (p, f), 'rb').read():
                found.append(p + '/' + f)
        except OSError:
            pass
out['found'] = found
out['pids'] = sorted(pids)
out['me'] = os.getpid()
out['env'] = sorted(os.environ)
out['cmdline1'] = open('/proc/1/cmdline', 'rb').read().rstrip(b'\0').decode()
out['comm1'] = open('/proc/1/comm').read().strip()
out['environ1'] = err(lambda: open('/proc/1/environ', 'rb').read())
"#
    );
    let cli = std::process::Command::new(util::bin())
        .args(["run", "--json", "--ro"])
        .arg(format!("{}:/mnt/hostile-ro", src.display()))
        .arg("-c")
        .arg(script(&body))
        .env("HOSTILE_MARKER", &marker)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&cli.stdout).unwrap_or_else(|e| panic!("{e}: {cli:?}"));
    let r: BTreeMap<String, Value> =
        serde_json::from_str(v["stdout"].as_str().unwrap().lines().last().unwrap()).unwrap();
    let lib = attack(&util::sandbox(), &body);
    let test_exe = std::env::current_exe().unwrap().display().to_string();
    for (via, r) in [("cli", &r), ("library", &lib)] {
        assert_eq!(
            r["found"],
            serde_json::json!([]),
            "{via}: marker visible: {r:#?}"
        );
        let me = r["me"].as_i64().unwrap();
        let pids: Vec<i64> = r["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        assert_eq!(pids, vec![1, me], "{via}: other processes visible");
        let env: BTreeSet<String> = r["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let clean: BTreeSet<String> = rsandbox::defaults::environment()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(env, clean, "{via}: the environment must be the clean one");
        assert_eq!(
            s(r, "cmdline1"),
            "rsandbox-init",
            "{via}: pid 1's command line"
        );
        assert_eq!(s(r, "comm1"), "rsandbox-init", "{via}");
        assert!(!s(r, "cmdline1").contains(&test_exe));
        assert_eq!(s(r, "environ1"), "EACCES", "{via}");
    }
    assert!(
        sentinel.0.try_wait().unwrap().is_none(),
        "the sentinel died"
    );
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------------------------------------------------------------------------------------------
// 3. fds and cwd
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 4. Privilege
// ---------------------------------------------------------------------------------------------

/// A C program that prints its real, effective and saved uid and gid, then tries setuid(0).
const WHOAMI_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    uid_t r, e, s; gid_t gr, ge, gs;
    getresuid(&r, &e, &s); getresgid(&gr, &ge, &gs);
    int rc = setuid(0);
    printf("uid %u %u %u gid %u %u %u setuid0 %s\n", r, e, s, gr, ge, gs, rc == 0 ? "ok" : strerrorname_np(errno));
    return 0;
}
"#;

/// Capability sets are empty, NoNewPrivs is 1, Seccomp is 2 (filter mode, one filter), in a
/// program and in its children. A setuid-root binary does not elevate: a host one (passwd,
/// setuid root, 04755, still marked so inside) runs as uid 1000, and as root a setuid-root
/// copy of a C program bound with `--ro` reports uid/euid/suid 1000 and setuid(0) EINVAL
/// (uid 0 is not even mapped), with and without the seccomp filter (nosuid mounts and
/// no_new_privs are the reasons, not seccomp).
#[test]
fn privilege_caps_no_new_privs_seccomp_and_setuid_binaries() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let dir = open_tempdir();
    let whoami = util::compile_c(dir.path(), "whoami", WHOAMI_C);
    let suid = util::is_root();
    if suid {
        std::os::unix::fs::chown(&whoami, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&whoami, std::fs::Permissions::from_mode(0o6755)).unwrap();
    } else {
        eprintln!("NOTE: unprivileged pass: no setuid-root binary of our own (needs root); the host's passwd stands in");
    }
    let body = r#"
import subprocess, time
st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())
for k in ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp', 'Seccomp_filters']:
    out[k] = st[k].strip()
child = subprocess.run(['/bin/grep', '-E', '^(CapEff|NoNewPrivs|Seccomp):', '/proc/self/status'], capture_output=True, text=True)
out['child'] = ' '.join(child.stdout.split())
p = subprocess.Popen(['/usr/bin/passwd'], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)
out['passwd_mode'] = oct(os.stat('/usr/bin/passwd').st_mode & 0o7777)
out['passwd_uid'] = ' '.join(open('/proc/%d/status' % p.pid).read().split('Uid:')[1].split('\n')[0].split())
p.kill(); p.wait()
out['whoami_mode'] = oct(os.stat('/mnt/suid/whoami').st_mode & 0o7777)
out['whoami'] = subprocess.run(['/mnt/suid/whoami'], capture_output=True, text=True).stdout.strip()
"#;
    for profile in [Profile::Default, Profile::Unconfined] {
        let sb = util::builder()
            .seccomp(profile.clone())
            .ro(dir.path(), Some(PathBuf::from("/mnt/suid")))
            .build()
            .unwrap();
        let r = attack(&sb, body);
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(s(&r, k), "0000000000000000", "{k}: {r:#?}");
        }
        assert_eq!(s(&r, "NoNewPrivs"), "1");
        if profile == Profile::Default {
            assert_eq!(s(&r, "Seccomp"), "2");
            assert_eq!(s(&r, "Seccomp_filters"), "1");
            assert_eq!(
                s(&r, "child"),
                "CapEff: 0000000000000000 NoNewPrivs: 1 Seccomp: 2"
            );
        }
        assert_eq!(s(&r, "passwd_mode"), "0o4755", "the setuid bit is there");
        assert_eq!(s(&r, "passwd_uid"), "1000 1000 1000 1000", "{profile:?}");
        if suid {
            assert_eq!(s(&r, "whoami_mode"), "0o6755");
        }
        assert_eq!(
            s(&r, "whoami"),
            "uid 1000 1000 1000 gid 1000 1000 1000 setuid0 EINVAL",
            "{profile:?}"
        );
    }
}

/// Nested user namespaces and setns fail with the profile's answer, with real arguments:
/// unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER) get EPERM, clone3 with CLONE_NEWUSER in its
/// struct gets ENOSYS (so libc would fall back to clone), `unshare -Ur` fails, setns on the
/// instance's own namespace fds gets EPERM and pid 1's namespace links are unreadable. Without
/// the filter the kernel allows the first three (a nested namespace is legal), so the filter
/// is the reason.
#[test]
fn privilege_nested_user_namespaces_and_setns_fail() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let body = r#"
import subprocess
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x20000, 17
out['unshare_user'] = attempt(272, CLONE_NEWUSER)
out['unshare_user_mnt'] = attempt(272, CLONE_NEWUSER | CLONE_NEWNS)
out['clone_user'] = attempt(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
args = (ctypes.c_uint64 * 11)(CLONE_NEWUSER, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0)
out['clone3_user'] = attempt(435, args, 88)
r = subprocess.run(['unshare', '-Ur', 'true'], capture_output=True, text=True)
out['unshare_cmd'] = '%d %s' % (r.returncode, 'Operation not permitted' in r.stderr)
for ns in ['user', 'mnt', 'pid', 'net']:
    fd = os.open('/proc/self/ns/' + ns, os.O_RDONLY)
    out['setns_' + ns] = attempt(308, fd, 0)
    out['proc1_' + ns] = err(lambda: os.open('/proc/1/ns/' + ns, os.O_RDONLY))
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "unshare_user",
            "unshare_user_mnt",
            "clone_user",
            "setns_user",
            "setns_mnt",
            "setns_pid",
            "setns_net",
        ],
        "EPERM",
        "seccomp",
    );
    assert_eq!(s(&r, "clone3_user"), "ENOSYS");
    assert_eq!(s(&r, "unshare_cmd"), "1 True");
    for ns in ["user", "mnt", "pid", "net"] {
        assert_eq!(s(&r, &format!("proc1_{ns}")), "EACCES");
    }
    let bare = attack(&with_profile(Profile::Unconfined), body);
    expect_all(
        &bare,
        &[
            "unshare_user",
            "unshare_user_mnt",
            "clone_user",
            "clone3_user",
        ],
        "ok",
        "without the filter the kernel allows nesting",
    );
    // setns into one's own user namespace is EINVAL from the kernel: the filter's EPERM differs.
    assert_eq!(s(&bare, "setns_user"), "EINVAL");
    eperm_verdict(libc::SYS_setns, &[]);
}

/// The cgroup v1 `release_agent` escape (unshare a user, mount and cgroup namespace, mount a
/// v1 hierarchy, write release_agent) fails at its first step: the unshare and the cgroup
/// mount get the profile's EPERM, and no cgroup filesystem is reachable inside (/sys is not
/// mounted; /proc/self/cgroup shows only '/'). The host's release_agent and
/// notify_on_release files read the same afterwards.
#[test]
fn privilege_cgroup_release_agent_trick_fails_at_its_first_step() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let host_files = || -> BTreeMap<PathBuf, String> {
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in ["release_agent", "notify_on_release"] {
                let p = e.path().join(f);
                if let Ok(v) = std::fs::read_to_string(&p) {
                    m.insert(p, v);
                }
            }
        }
        m
    };
    let before = host_files();
    let body = r#"
out['unshare'] = attempt(272, 0x10000000 | 0x20000 | 0x02000000)
os.mkdir('/tmp/cgrp')
for ctl in ['memory', 'rdma', 'none,name=x']:
    out['mount_' + ctl] = attempt(165, b'cgroup', b'/tmp/cgrp', b'cgroup', 0, ctl.encode())
out['mount_cgroup2'] = attempt(165, b'cgroup2', b'/tmp/cgrp', b'cgroup2', 0, 0)
out['sys'] = err(lambda: os.listdir('/sys'))
out['cgroupfs'] = [l for l in open('/proc/self/mountinfo') if ' - cgroup' in l]
out['paths'] = sorted(set(l.strip().split(':', 2)[2] for l in open('/proc/self/cgroup')))
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "unshare",
            "mount_memory",
            "mount_rdma",
            "mount_none,name=x",
            "mount_cgroup2",
        ],
        "EPERM",
        "seccomp",
    );
    eperm_verdict(libc::SYS_mount, &[]);
    assert_eq!(s(&r, "sys"), "ENOENT");
    assert_eq!(r["cgroupfs"], serde_json::json!([]));
    assert_eq!(r["paths"], serde_json::json!(["/"]));
    assert_eq!(host_files(), before);
}

/// Raising priority (nice below 0, a real-time scheduler), setting the clock
/// (clock_settime, settimeofday, adjtimex) and changing the host or domain name all fail
/// (EPERM; the clock calls by the profile, as the compiled program shows) and reach nothing
/// of the host: its hostname, its clock (wall minus monotonic) and the supervisor's nice
/// value are the same afterwards.
#[test]
fn privilege_nice_clock_and_hostname_stay_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let clock_offset = || {
        let mut rt = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut mono = rt;
        // SAFETY: clock_gettime writes the timespecs we pass.
        unsafe {
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut rt);
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono);
        }
        (rt.tv_sec - mono.tv_sec) as f64 + (rt.tv_nsec - mono.tv_nsec) as f64 / 1e9
    };
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    // SAFETY: getpriority has no memory effects.
    let nice_before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let offset_before = clock_offset();
    let body = r#"
import socket
out['nice'] = err(lambda: os.nice(-1))
out['setpriority'] = err(lambda: os.setpriority(os.PRIO_PROCESS, 0, -10))
out['fifo'] = err(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)))
ts = (ctypes.c_long * 2)(0, 0)
out['clock_settime'] = attempt(227, 0, ts)
out['settimeofday'] = attempt(164, ts, 0)
tx = (ctypes.c_char * 256)()
ctypes.memmove(tx, (ctypes.c_int * 1)(0x8001), 4)  # ADJ_OFFSET | ADJ_OFFSET_SINGLESHOT... any mode
out['adjtimex'] = attempt(159, tx)
out['sethostname'] = err(lambda: socket.sethostname('pwned'))
out['setdomainname'] = attempt(171, b'pwned', 5)
out['hostname'] = socket.gethostname()
"#;
    let r = attack(&util::sandbox(), body);
    expect_all(
        &r,
        &[
            "nice",
            "fifo",
            "clock_settime",
            "settimeofday",
            "adjtimex",
            "sethostname",
            "setdomainname",
        ],
        "EPERM",
        "no capability; seccomp for the clocks",
    );
    assert_eq!(s(&r, "setpriority"), "EACCES", "no CAP_SYS_NICE");
    assert_eq!(s(&r, "hostname"), "sandbox");
    for nr in [
        libc::SYS_clock_settime,
        libc::SYS_settimeofday,
        libc::SYS_adjtimex,
    ] {
        eperm_verdict(nr, &[]);
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host_domain
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        nice_before
    );
    assert!(
        (clock_offset() - offset_before).abs() < 0.5,
        "the host's wall clock moved"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Syscalls through every ABI
// ---------------------------------------------------------------------------------------------

/// `name -> number` from a kernel uapi header (`#define __NR_name N`).
fn syscall_numbers(header: &str) -> BTreeMap<String, i64> {
    std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header}: {e} (linux-libc-dev)"))
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define __NR_")?;
            let (name, nr) = rest.split_once(' ')?;
            Some((name.to_string(), nr.trim().parse().ok()?))
        })
        .collect()
}

/// Arguments that make a conditional rule of the default profile match (the namespace flags,
/// TIOCSTI, AF_VSOCK, READ_IMPLIES_EXEC); zeros for the unconditional ones.
fn denied_args(name: &str) -> [u64; 6] {
    match name {
        "clone" => [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
        "unshare" => [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        "ioctl" => [0, 0x5412, 0, 0, 0, 0],
        "socket" | "socketpair" => [40, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        "personality" => [0x0040_0000, 0, 0, 0, 0, 0],
        _ => [0; 6],
    }
}

/// The C driver: for each row, the call through the native `syscall` instruction, i386's
/// `int $0x80` and the x32 number (bit 30), each in a forked child, printing the raw result.
const ABI_DRIVER_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>
struct row { const char *name; long nr64, nr32; unsigned long a[6]; };
static const struct row rows[] = {
ROWS
};
static long i386_call(long nr, unsigned long *a) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret)
                     : "a"(nr), "b"(a[0]), "c"(a[1]), "d"(a[2]), "S"(a[3]), "D"(a[4])
                     : "memory");
    return ret;
}
static long native_call(long nr, const unsigned long *a) {
    long ret;
    register unsigned long r10 __asm__("r10") = a[3];
    register unsigned long r8 __asm__("r8") = a[4];
    register unsigned long r9 __asm__("r9") = a[5];
    __asm__ volatile("syscall" : "=a"(ret)
                     : "a"(nr), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
static long in_child(int abi, const struct row *r) {
    int p[2];
    if (pipe(p)) return -9999;
    pid_t w = fork();
    if (w == 0) {
        pid_t me = getpid();
        unsigned long a[6];
        for (int i = 0; i < 6; i++) a[i] = r->a[i];
        long ret = abi == 0 ? native_call(r->nr64, a)
                 : abi == 1 ? i386_call(r->nr32, a)
                 : native_call(r->nr64 | 0x40000000L, a);
        if (getpid() != me) _exit(0); /* a clone that went through: the new process leaves */
        write(p[1], &ret, sizeof ret);
        _exit(0);
    }
    close(p[1]);
    long ret = -9998;
    if (read(p[0], &ret, sizeof ret) != sizeof ret) ret = -9997;
    close(p[0]);
    waitpid(w, 0, 0);
    return ret;
}
int main(void) {
    static const char *abis[] = {"native", "i386", "x32"};
    for (unsigned i = 0; i < sizeof rows / sizeof rows[0]; i++)
        for (int abi = 0; abi < 3; abi++) {
            if ((abi == 1 && rows[i].nr32 < 0) || (abi != 1 && rows[i].nr64 < 0)) continue;
            printf("%s %s %ld\n", rows[i].name, abis[abi], in_child(abi, &rows[i]));
        }
    return 0;
}
"#;

/// Every call the default profile denies (its ERRNO rules, with arguments that match the
/// conditional ones) is tried through each entry point the CPU offers: native `syscall` gets
/// the profile's errno (EPERM; clone3 ENOSYS), i386 `int $0x80` and x32 get ENOSYS, for every
/// call, and the compiled program returns exactly that on each (arch, number). Without the
/// filter this kernel does run i386 calls (getpid answers the pid), so the filter is what
/// stops them. This kernel has no x32 ABI (CONFIG_X86_X32_ABI off): that is said loudly, and
/// shown (x32 getpid is ENOSYS without the filter too), so for x32 the proof is the BPF
/// verdict, which denies although the profile's default action is to allow.
#[test]
fn syscalls_denied_list_through_every_abi() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let profile: Value =
        serde_json::from_str(include_str!("../../seccomp-profiles/default.json")).unwrap();
    let n64 = syscall_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
    let n32 = syscall_numbers("/usr/include/x86_64-linux-gnu/asm/unistd_32.h");
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        if rule["action"] != "SCMP_ACT_ERRNO" {
            continue;
        }
        for name in rule["names"].as_array().unwrap() {
            want.insert(
                name.as_str().unwrap().to_string(),
                rule["errnoRet"].as_i64().unwrap(),
            );
        }
    }
    want.insert("getpid".into(), 0); // the control: allowed natively
    let mut rows = String::new();
    for name in want.keys() {
        let (a, b) = (n64.get(name), n32.get(name));
        if a.is_none() && b.is_none() {
            continue; // neither ABI has it (e.g. nfsservctl's number is gone)
        }
        let args = denied_args(name);
        rows.push_str(&format!(
            "{{\"{name}\", {}, {}, {{{}}}}},\n",
            a.copied().unwrap_or(-1),
            b.copied().unwrap_or(-1),
            args.iter()
                .map(|v| format!("{v}UL"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = util::compile_c(dir.path(), "abi", &ABI_DRIVER_C.replace("ROWS", &rows));
    let bin = std::fs::read(prog).unwrap();
    let run = |p: Profile| -> BTreeMap<(String, String), i64> {
        let o = with_profile(p)
            .run(&Command::new("./abi").file("abi", bin.clone(), 0o755))
            .unwrap();
        ok(&o)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                ((f[0].to_string(), f[1].to_string()), f[2].parse().unwrap())
            })
            .collect()
    };
    let got = run(Profile::Default);
    let enosys = -(libc::ENOSYS as i64);
    let mut checked = 0;
    for ((name, abi), ret) in &got {
        let errno = want[name];
        let expect = match (abi.as_str(), name.as_str()) {
            ("native", "getpid") => {
                assert!(*ret > 0, "native getpid: {ret}");
                continue;
            }
            ("native", _) => -errno,
            _ => enosys,
        };
        assert_eq!(*ret, expect, "{name} via {abi}");
        let (arch, nr) = match abi.as_str() {
            "native" => (bpf::AUDIT_ARCH_X86_64, n64[name]),
            "i386" => (bpf::AUDIT_ARCH_I386, n32[name]),
            _ => (
                bpf::AUDIT_ARCH_X86_64,
                n64[name] | bpf::X32_SYSCALL_BIT as i64,
            ),
        };
        assert_eq!(
            verdict(arch, nr, &denied_args(name)),
            Verdict::Errno(-expect as u16),
            "{name} via {abi}: the compiled program"
        );
        checked += 1;
    }
    assert!(
        checked > 150,
        "only {checked} (call, ABI) pairs checked: {got:?}"
    );
    eprintln!("denied calls checked through native, i386 and x32: {checked} (call, ABI) pairs");
    // Controls without the filter: i386 runs here, x32 does not exist.
    let bare = run(Profile::Unconfined);
    let key = |abi: &str| (String::from("getpid"), abi.to_string());
    assert!(
        bare[&key("i386")] > 0,
        "without the filter this kernel should run i386 getpid: {:?}",
        bare[&key("i386")]
    );
    if bare[&key("x32")] == enosys {
        eprintln!("NOTE: this kernel has no x32 ABI (CONFIG_X86_X32_ABI off): x32 calls fail without the filter too; the x32 denials are proven on the compiled BPF program");
    } else {
        assert!(bare[&key("x32")] > 0, "{bare:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Terminals
// ---------------------------------------------------------------------------------------------

/// Tries TIOCSTI (plain and with bit 32 set in the command), TIOCLINUX (paste) on fds 0-2
/// and on /dev/tty; prints what each returned.
const TTY_ATTACK: &str = r#"
def sti(fd, cmd):
    c = ctypes.c_char(b'X')
    return raw(16, fd, cmd, ctypes.byref(c))
def linux(fd):
    sub = ctypes.c_char(b'\x03')  # TIOCL_PASTESEL
    return raw(16, fd, 0x541c, ctypes.byref(sub))
for fd in (0, 1, 2):
    out['sti%d' % fd] = sti(fd, 0x5412)
    out['sti_hi%d' % fd] = sti(fd, (1 << 32) | 0x5412)
    out['linux%d' % fd] = linux(fd)
try:
    t = os.open('/dev/tty', os.O_RDWR)
    out['devtty'] = 'open'
    out['sti_tty'] = sti(t, 0x5412)
except OSError as e:
    out['devtty'] = name(e.errno)
"#;

/// Runs `argv` as a session leader whose controlling terminal is a fresh pty; returns (its
/// exit status, what it wrote to the terminal, what was queued as terminal input afterwards).
fn on_a_pty(argv: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String, Vec<u8>) {
    use std::os::unix::process::CommandExt;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; the other pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: openpty gave us these fds; close-on-exec, so that programs other tests start
    // meanwhile do not hold the terminal open.
    let (master, slave) = unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    // Raw mode: injected bytes are readable at once, without a newline and without echo.
    // SAFETY: termios calls on our own pty with a stack structure.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(slave.as_raw_fd(), &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
    }
    let mut cmd = std::process::Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // it holds the child's copies of the slave
               // Drain the terminal's output while the child runs (it must never block on a full pty).
    let mfd = master.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(mfd);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let status = child.wait().unwrap();
    // What is queued as input on the terminal now?
    // SAFETY: fcntl/read on our own slave fd into a stack buffer.
    let queued = unsafe {
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
        let mut buf = [0u8; 256];
        let n = libc::read(slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        buf[..n.max(0) as usize].to_vec()
    };
    drop(slave); // the reader sees EIO once every slave fd is closed
    drop(master);
    let out = reader.join().unwrap();
    (status, String::from_utf8_lossy(&out).into_owned(), queued)
}

/// With rsandbox started on a real pseudo-terminal as its controlling terminal, a program
/// that pushes input into "its" terminal injects nothing: TIOCSTI (also with bit 32 set) and
/// TIOCLINUX get the profile's EPERM on fds 0-2, and /dev/tty does not exist. Without the
/// filter nothing is injected either (the fds are pipes: ENOTTY; no controlling terminal).
/// The positive control runs the same program on the same kind of pty outside rsandbox and
/// sees its bytes arrive, so the check would notice an injection.
#[test]
fn terminal_injection_reaches_nothing() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = script(TTY_ATTACK);
    let parse_last = |out: &str| -> BTreeMap<String, Value> {
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON in {out:?}"));
        serde_json::from_str(line.trim()).unwrap()
    };
    for seccomp in ["default", "none"] {
        let (status, out, queued) = on_a_pty(&[
            util::bin().as_os_str(),
            "run".as_ref(),
            "--seccomp".as_ref(),
            seccomp.as_ref(),
            "-c".as_ref(),
            code.as_ref(),
        ]);
        assert!(status.success(), "{seccomp}: {status:?} {out}");
        assert_eq!(
            queued, b"",
            "{seccomp}: input was injected into the terminal"
        );
        let r = parse_last(&out);
        let want = if seccomp == "default" {
            "EPERM"
        } else {
            "ENOTTY"
        };
        let keys: Vec<String> = (0..3)
            .flat_map(|fd| {
                [
                    format!("sti{fd}"),
                    format!("sti_hi{fd}"),
                    format!("linux{fd}"),
                ]
            })
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        expect_all(&r, &keys, want, seccomp);
        assert_eq!(s(&r, "devtty"), "ENOENT", "{seccomp}");
    }
    for cmd in [0x5412u64, 0x1_0000_5412, 0x541c] {
        eperm_verdict(libc::SYS_ioctl, &[0, cmd]);
    }
    // The control: the same program, outside, on its controlling terminal.
    let (_, out, queued) = on_a_pty(&["/usr/bin/python3".as_ref(), "-c".as_ref(), code.as_ref()]);
    let r = parse_last(&out);
    if s(&r, "sti0") == "ok" {
        assert!(
            queued.starts_with(b"XX"),
            "the control injected but the check saw {queued:?}"
        );
    } else {
        eprintln!(
            "NOTE: TIOCSTI is refused on this host even outside ({}; dev.tty.legacy_tiocsti=0?): the control cannot inject",
            s(&r, "sti0")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Network with --net none
// ---------------------------------------------------------------------------------------------

/// Non-blocking host listeners the network tests try to reach: TCP and UDP on 127.0.0.1 and
/// ::1 (when the host has IPv6 on lo), an abstract and a path unix socket.
struct HostListeners {
    tcp4: std::net::TcpListener,
    tcp6: Option<std::net::TcpListener>,
    udp4: std::net::UdpSocket,
    udp6: Option<std::net::UdpSocket>,
    abstract_name: String,
    abstract_sock: std::os::unix::net::UnixListener,
    path_sock: std::os::unix::net::UnixListener,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostListeners {
    fn new() -> HostListeners {
        use std::os::linux::net::SocketAddrExt;
        let tcp4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp6 = std::net::TcpListener::bind("[::1]:0").ok();
        let udp4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp6 = std::net::UdpSocket::bind("[::1]:0").ok();
        let abstract_name = format!("rsandbox-hostile-{}-{}", std::process::id(), nanos());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let abstract_sock = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let dir = open_tempdir();
        let path = dir.path().join("host.sock");
        let path_sock = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        tcp4.set_nonblocking(true).unwrap();
        udp4.set_nonblocking(true).unwrap();
        abstract_sock.set_nonblocking(true).unwrap();
        path_sock.set_nonblocking(true).unwrap();
        for t in tcp6.iter() {
            t.set_nonblocking(true).unwrap();
        }
        for u in udp6.iter() {
            u.set_nonblocking(true).unwrap();
        }
        HostListeners {
            tcp4,
            tcp6,
            udp4,
            udp6,
            abstract_name,
            abstract_sock,
            path_sock,
            path,
            _dir: dir,
        }
    }

    fn port(a: std::io::Result<std::net::SocketAddr>) -> u16 {
        a.unwrap().port()
    }

    /// Python assignments naming the targets.
    fn targets(&self) -> String {
        format!(
            "TCP4 = {}\nTCP6 = {}\nUDP4 = {}\nUDP6 = {}\nABSTRACT = {:?}\nPATH = {:?}\n",
            Self::port(self.tcp4.local_addr()),
            self.tcp6.as_ref().map_or(9, |t| Self::port(t.local_addr())),
            Self::port(self.udp4.local_addr()),
            self.udp6.as_ref().map_or(9, |u| Self::port(u.local_addr())),
            self.abstract_name,
            self.path.display().to_string(),
        )
    }

    /// Asserts nothing reached any listener.
    fn assert_untouched(&self) {
        let would_block = |r: std::io::Result<()>, what: &str| match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the host's {what} was reached: {other:?}"),
        };
        let mut buf = [0u8; 64];
        would_block(self.tcp4.accept().map(drop), "TCP 127.0.0.1 listener");
        if let Some(t) = &self.tcp6 {
            would_block(t.accept().map(drop), "TCP ::1 listener");
        }
        would_block(self.udp4.recv(&mut buf).map(drop), "UDP 127.0.0.1 socket");
        if let Some(u) = &self.udp6 {
            would_block(u.recv(&mut buf).map(drop), "UDP ::1 socket");
        }
        would_block(
            self.abstract_sock.accept().map(drop),
            "abstract unix socket",
        );
        would_block(self.path_sock.accept().map(drop), "path unix socket");
    }
}

/// The attempts against the host's listeners and the raw families, from inside.
const NET_ATTACK: &str = r#"
import socket, time
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2)
    return err(lambda: s.connect(addr))
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    return err(lambda: s.sendto(b'pwned', addr))
out['tcp4'] = tcp(socket.AF_INET, ('127.0.0.1', TCP4))
out['tcp6'] = tcp(socket.AF_INET6, ('::1', TCP6))
out['udp4'] = udp(socket.AF_INET, ('127.0.0.1', UDP4))
out['udp6'] = udp(socket.AF_INET6, ('::1', UDP6))
out['udp4_bcast'] = udp(socket.AF_INET, ('255.255.255.255', UDP4))
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out['abstract'] = err(lambda: u.connect('\0' + ABSTRACT))
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out['path'] = err(lambda: u.connect(PATH))
out['packet'] = err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
out['packet_dgram'] = err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300))
out['vsock'] = err(lambda: socket.socket(40, socket.SOCK_STREAM))
out['raw_icmp'] = err(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
out['raw_icmp6'] = err(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
out['ping_dgram'] = err(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
out['netlink_route_ok'] = err(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
out['io_uring'] = raw(425, 8, (ctypes.c_char * 120)())
unix_table = open('/proc/net/unix').read()
out['unix_table_leaks'] = [n for n in (ABSTRACT, PATH) if n in unix_table]
out['ifaces'] = [n for _, n in socket.if_nameindex()]
"#;

/// With `--net none` nothing on the host is reachable, whatever the family: the test listens
/// on 127.0.0.1 and ::1 (TCP and UDP) and on an abstract and a path unix socket, and none of
/// them hears anything. TCP gets Landlock's EACCES (ABI 4+), UDP ENETUNREACH from the empty
/// namespace (EADDRNOTAVAIL for ::1, which a down lo does not even have); the host's abstract socket does not exist in the instance's network namespace
/// (ECONNREFUSED) nor its path in the mount namespace (ENOENT), and neither shows in
/// /proc/net/unix. AF_PACKET and raw ICMP need CAP_NET_RAW (EPERM), ICMP datagram sockets are
/// closed by the namespace's ping_group_range (EACCES), AF_VSOCK and io_uring (whose socket
/// operations seccomp would never see) get the profile's EPERM: without the filter both
/// succeed, so the filter is the reason.
#[test]
fn net_none_reaches_no_host_listener_or_raw_family() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let l = HostListeners::new();
    if l.tcp6.is_none() {
        eprintln!("NOTE: no IPv6 on the host's loopback: the ::1 attempts target a closed port");
    }
    let body = format!("{}{NET_ATTACK}", l.targets());
    let sb = util::builder().net(Net::None).build().unwrap();
    let landlock_tcp = sb
        .enforcement()
        .landlock
        .strip_prefix("abi")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 4);
    let r = attack(&sb, &body);
    let tcp = if landlock_tcp {
        "EACCES"
    } else {
        "ENETUNREACH"
    };
    assert_eq!(s(&r, "tcp4"), tcp, "{r:#?}");
    assert_eq!(s(&r, "tcp6"), tcp, "{r:#?}");
    expect_all(
        &r,
        &["udp4", "udp4_bcast"],
        "ENETUNREACH",
        "no interface up",
    );
    assert_eq!(
        s(&r, "udp6"),
        "EADDRNOTAVAIL",
        "::1 is not even assigned while lo is down"
    );
    assert_eq!(s(&r, "abstract"), "ECONNREFUSED");
    assert_eq!(s(&r, "path"), "ENOENT");
    expect_all(
        &r,
        &["packet", "packet_dgram", "raw_icmp", "raw_icmp6"],
        "EPERM",
        "no CAP_NET_RAW",
    );
    assert_eq!(s(&r, "ping_dgram"), "EACCES", "ping_group_range");
    expect_all(&r, &["vsock", "io_uring"], "EPERM", "seccomp");
    assert_eq!(s(&r, "netlink_route_ok"), "ok");
    assert_eq!(r["unix_table_leaks"], serde_json::json!([]));
    assert_eq!(r["ifaces"], serde_json::json!(["lo"]));
    let bare = attack(
        &util::builder()
            .net(Net::None)
            .seccomp(Profile::Unconfined)
            .build()
            .unwrap(),
        &body,
    );
    assert_eq!(s(&bare, "io_uring"), "ok", "allowed by the kernel alone");
    // A kernel without vsock (as the v2 guest's) answers EAFNOSUPPORT, on the host as inside:
    // still not the EPERM the profile gives above.
    // SAFETY: socket(2) with constant arguments; the fd is closed at once.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
    let host_vsock = if fd >= 0 {
        unsafe { libc::close(fd) };
        "ok"
    } else {
        "EAFNOSUPPORT"
    };
    assert_eq!(
        s(&bare, "vsock"),
        host_vsock,
        "as the host's kernel alone answers: {bare:#?}"
    );
    assert_eq!(s(&bare, "tcp4"), tcp, "{bare:#?}");
    l.assert_untouched();
}

/// Loopback listeners stay in their instance: with `Net::Loopback`, instance A serves on
/// 127.0.0.1:P and an abstract socket; instance B (also with loopback) connecting to the
/// same port and name is refused, and so is A reaching the host's listener; A itself
/// reaches its own (the control).
#[test]
fn net_loopback_listeners_stay_in_their_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let l = HostListeners::new();
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    let serve = r#"
import socket, subprocess, sys
code = '''
import socket, os, time
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 4242)); t.listen()
u = socket.socket(socket.AF_UNIX); u.bind("\\0rsandbox-hostile-lo"); u.listen()
print("up", flush=True)
time.sleep(60)
'''
p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
out['server'] = p.stdout.readline().decode().strip()
"#;
    let r = attack_in(&a, serve);
    assert_eq!(s(&r, "server"), "up");
    let probe = format!(
        "{}import socket\n\
         def tcp(port):\n    \
             s = socket.socket(); s.settimeout(2)\n    \
             return err(lambda: s.connect(('127.0.0.1', port)))\n\
         out['own_port'] = tcp(4242)\n\
         u = socket.socket(socket.AF_UNIX)\n\
         out['own_abstract'] = err(lambda: u.connect('\\0rsandbox-hostile-lo'))\n\
         out['host_tcp'] = tcp(TCP4)\n",
        l.targets()
    );
    let ra = attack_in(&a, &probe);
    let rb = attack_in(&b, &probe);
    assert_eq!(
        s(&ra, "own_port"),
        "ok",
        "the control: A reaches its own server"
    );
    assert_eq!(s(&ra, "own_abstract"), "ok");
    assert_eq!(s(&rb, "own_port"), "ECONNREFUSED", "B reached A's listener");
    assert_eq!(
        s(&rb, "own_abstract"),
        "ECONNREFUSED",
        "B reached A's socket"
    );
    assert_eq!(s(&ra, "host_tcp"), "ECONNREFUSED", "A reached the host");
    assert_eq!(s(&rb, "host_tcp"), "ECONNREFUSED");
    a.destroy().unwrap();
    b.destroy().unwrap();
    l.assert_untouched();
}

// ---------------------------------------------------------------------------------------------
// 8. Signals and processes
// ---------------------------------------------------------------------------------------------

/// Host processes whose name (comm) is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == name).then_some(pid)
        })
        .collect()
}

/// A fork bomb and a thread bomb are bounded while they run (neither gets past the pids
/// limit, 256), and what a program leaves behind when it exits 0 is gone after the run: a
/// SIGSTOPped tree, a double-forked, setsid, SIGTERM/SIGHUP-ignoring daemon and the bomb's
/// leftovers. Every such process renames itself to a marker; none with that name is alive on
/// the host afterwards, and the fingerprint is unchanged. (`kill(-1, SIGKILL)` against a host
/// sentinel: isolation::kill_minus_one_stays_inside.)
#[test]
fn processes_bombs_are_bounded_and_leftovers_are_gone() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let marker = format!("hb{}", std::process::id() % 100_000);
    let sb = util::sandbox();
    let fp = Fingerprint::take(&sb);
    let body = format!(
        r#"
import signal, threading, time
MARK = {marker:?}.encode()
def mark():
    libc.prctl(15, ctypes.c_char_p(MARK), 0, 0, 0)  # PR_SET_NAME
# A stopped tree: a child and two grandchildren, all stopped.
if os.fork() == 0:
    mark()
    for _ in range(2):
        if os.fork() == 0:
            mark(); os.kill(os.getpid(), signal.SIGSTOP); time.sleep(1000); os._exit(0)
    os.kill(os.getpid(), signal.SIGSTOP); time.sleep(1000); os._exit(0)
# A double-forked daemon that ignores SIGTERM and SIGHUP.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        mark()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        for fd in (0, 1, 2):
            os.dup2(os.open('/dev/null', os.O_RDWR), fd)
        time.sleep(1000)
    os._exit(0)
time.sleep(0.2)
# A fork bomb: fork until refused; every child waits as a small program (a copy of sleep
# named after the marker), so that without cgroups the RSS watchdog, which counts shared
# pages once per process, is not what stops it.
import shutil
shutil.copy('/bin/sleep', '/tmp/' + MARK.decode())
kids = []
while len(kids) < 5000:
    try:
        pid = os.fork()
    except OSError as e:
        out['fork_err'] = name(e.errno)
        break
    if pid == 0:
        try:
            os.execv('/tmp/' + MARK.decode(), [MARK.decode(), '1000'])
        finally:
            os._exit(1)
    kids.append(pid)
out['forks'] = len(kids)
for k in kids[: len(kids) // 2]:
    os.kill(k, signal.SIGKILL); os.waitpid(k, 0)
# A thread bomb in the room that is left.
threads = []
try:
    while len(threads) < 5000:
        t = threading.Thread(target=time.sleep, args=(1000,), daemon=True); t.start(); threads.append(t)
except RuntimeError as e:
    out['thread_err'] = str(e)
out['threads'] = len(threads)
out['tasks'] = sum(int(open('/proc/%s/status' % p).read().split('Threads:')[1].split()[0])
                   for p in os.listdir('/proc') if p.isdigit())
done()
sys.stdout.flush()
os._exit(0)  # leave the daemon threads and processes behind
"#
    );
    let t = Instant::now();
    let r = attack(&sb, &body);
    let took = t.elapsed();
    let forks = r["forks"].as_u64().unwrap();
    let threads = r["threads"].as_u64().unwrap();
    assert!(
        forks > 100 && forks < 256,
        "fork bomb: {forks} forks: {r:?}"
    );
    assert_eq!(s(&r, "fork_err"), "EAGAIN");
    assert!(
        threads > 50 && threads < 256,
        "thread bomb: {threads}: {r:?}"
    );
    assert!(
        r["tasks"].as_u64().unwrap() <= 256,
        "more tasks than the pids limit: {r:?}"
    );
    eprintln!(
        "fork bomb stopped at {forks} forks, thread bomb at {threads} threads, run took {took:?}"
    );
    fp.assert_same(&sb);
    assert_eq!(
        processes_named(&marker),
        Vec::<u32>::new(),
        "leftovers alive"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Resources
// ---------------------------------------------------------------------------------------------

/// A 1 TiB PROT_NONE reservation (what JIT runtimes and allocators do) is allowed: rsandbox
/// limits memory by cgroup (or the RSS watchdog), never RLIMIT_AS. Touching memory is what is
/// limited: memory bombs are limits::memory_bomb_is_stopped_and_reported_as_memory (and
/// limits::fallback_watchdog_stops_a_memory_bomb without cgroups).
#[test]
fn resources_terabyte_prot_none_reservation_is_allowed() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let body = r#"
import mmap
m = mmap.mmap(-1, 1 << 40, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000, prot=0)  # MAP_NORESERVE, PROT_NONE
out['size'] = str(len(m))
libc.mmap.restype = ctypes.c_void_p
p = libc.mmap(None, ctypes.c_size_t(1 << 40), 0, 0x22, -1, 0)  # PROT_NONE, PRIVATE|ANONYMOUS
out['plain'] = 'ok' if p not in (None, 2**64 - 1) else name(ctypes.get_errno())
out['vm'] = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize')][0]
"#;
    let r = attack(&util::sandbox(), body);
    assert_eq!(s(&r, "size"), (1u64 << 40).to_string());
    assert_eq!(s(&r, "plain"), "ok");
    let vm_kb: u64 = s(&r, "vm").parse().unwrap();
    assert!(vm_kb > 2 << 30, "VmSize {vm_kb} kB");
}

/// 16 threads spinning on the CPU in one process.
const SPIN_C: &str = r#"
#include <pthread.h>
static void *spin(void *a) { for (volatile unsigned long i = 0;; i++) {} return a; }
int main(void) {
    pthread_t t;
    for (int i = 0; i < 15; i++) pthread_create(&t, 0, spin, 0);
    spin(0);
}
"#;

/// Many threads spinning and a program sleeping forever both end at the wall timeout (status
/// timeout, about 2 s), the spinners bounded to the instance's CPU (1 CPU by default: quota
/// on cgroups, affinity everywhere), and nothing of either remains.
#[test]
fn resources_spinning_threads_and_sleep_forever_end_at_the_timeout() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spin = std::fs::read(util::compile_c(dir.path(), "spin", SPIN_C)).unwrap();
    let fp = Fingerprint::take(&sb);
    for (what, cmd) in [
        ("spin", Command::new("./spin").file("spin", spin, 0o755)),
        ("sleep", Command::new("/bin/sleep").arg("infinity")),
    ] {
        let t = Instant::now();
        let o = sb.run(&cmd).unwrap();
        assert_eq!(o.status, Status::Timeout, "{what}: {o:#?}");
        assert!(
            o.wall_ms >= 1900.0 && t.elapsed() < Duration::from_secs(6),
            "{what}: wall {} ms, run took {:?}",
            o.wall_ms,
            t.elapsed()
        );
        if what == "spin" {
            assert!(
                o.cpu_ms <= o.wall_ms * 1.25 + 100.0,
                "16 spinning threads used {} ms of CPU in {} ms: more than one CPU",
                o.cpu_ms,
                o.wall_ms
            );
        }
        fp.assert_same(&sb);
    }
}

/// 10 GiB written to stdout are drained (never blocking the program), counted exactly, kept
/// only up to the cap, and the supervisor's memory does not grow with them.
#[test]
fn resources_ten_gib_of_stdout_is_drained_in_constant_memory() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let before = util::vm_rss();
    let t = Instant::now();
    let o = sb
        .run(&Command::new("/usr/bin/head").args(["-c", "10G", "/dev/zero"]))
        .unwrap();
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    assert_eq!(o.stdout_bytes, 10 << 30);
    assert!(o.stdout_truncated);
    assert_eq!(
        o.stdout_bytes().len() as u64,
        rsandbox::defaults::OUTPUT_LIMIT
    );
    let grew = util::vm_rss().saturating_sub(before);
    eprintln!(
        "10 GiB of stdout in {:?}; supervisor RSS grew {grew} bytes",
        t.elapsed()
    );
    assert!(grew < 64 << 20, "the supervisor grew by {grew} bytes");
}

/// Filling /tmp, /dev/shm and the work dir stops at each one's size with ENOSPC (they are
/// tmpfs mounts of the instance), the program goes on, and the host's disk does not fill: its
/// free space while all three are full is within a margin of before (other writers share the
/// disk), far less than the bytes written.
#[test]
fn resources_filling_tmp_shm_and_work_dir_is_bounded() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let free = |p: &str| {
        let st = util::statvfs(p);
        st.f_bavail as i64 * st.f_frsize as i64
    };
    let sb = util::builder()
        .memory(1 << 30) // room for all three at once (tmpfs pages are charged to the instance)
        .build()
        .unwrap();
    let inst = sb.create().unwrap();
    let before: Vec<i64> = ["/", "/tmp"].iter().map(|p| free(p)).collect();
    let body = r#"
chunk = b'\xa5' * (1 << 20)
for d in ['/tmp', '/dev/shm', '/home/sandbox']:
    n = 0
    try:
        with open(d + '/fill', 'wb') as f:
            while n < (2 << 30):
                f.write(chunk); f.flush(); n += len(chunk)
    except OSError as e:
        out[d + ' err'] = name(e.errno)
    out[d] = os.stat(d + '/fill').st_size
    out[d + ' fs'] = [l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo') if l.split()[4] == d][0]
out['goes_on'] = 'yes'
"#;
    let r = attack_in(&inst, body);
    let written: i64 = ["/tmp", "/dev/shm", "/home/sandbox"]
        .iter()
        .map(|d| r[*d].as_i64().unwrap())
        .sum();
    let after: Vec<i64> = ["/", "/tmp"].iter().map(|p| free(p)).collect();
    for (d, size) in [
        ("/tmp", rsandbox::defaults::TMP_SIZE),
        ("/dev/shm", rsandbox::defaults::SHM_SIZE),
        ("/home/sandbox", rsandbox::defaults::WORK_SIZE),
    ] {
        assert_eq!(s(&r, &format!("{d} err")), "ENOSPC", "{d}: {r:?}");
        assert_eq!(s(&r, &format!("{d} fs")), "tmpfs", "{d}");
        let n = r[d].as_u64().unwrap();
        assert!(n <= size && n + (2 << 20) >= size, "{d}: {n} of {size}");
    }
    assert_eq!(s(&r, "goes_on"), "yes");
    for (i, p) in ["/", "/tmp"].iter().enumerate() {
        let used = before[i] - after[i];
        eprintln!("host {p}: {used} bytes less free while {written} bytes fill the instance");
        assert!(
            used < written / 2,
            "the host's {p} lost {used} bytes while the instance wrote {written}"
        );
    }
    inst.destroy().unwrap();
}

/// Exhausting fds stops at RLIMIT_NOFILE (EMFILE at 1024, and the limit cannot be raised);
/// exhausting SysV IPC (shared memory, message queues, semaphores: until the kernel refuses)
/// happens in the instance's own IPC namespace: the host's /proc/sysvipc tables are the same
/// while the instance holds everything and after it is gone.
#[test]
fn resources_fd_and_sysv_ipc_exhaustion_stay_in_the_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let tables = || -> Vec<String> {
        ["shm", "msg", "sem"]
            .iter()
            .map(|t| std::fs::read_to_string(format!("/proc/sysvipc/{t}")).unwrap())
            .collect()
    };
    let host_before = tables();
    let inst = util::sandbox().create().unwrap();
    let body = r#"
import resource
fds = []
try:
    while True:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    out['fd_err'] = name(e.errno)
out['fds'] = len(fds) + 3
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20)); out['raise'] = 'ok'
except (ValueError, OSError):
    out['raise'] = 'refused'
for fd in fds:
    os.close(fd)
libc.shmget.restype = libc.msgget.restype = libc.semget.restype = ctypes.c_int
def exhaust(f, cap):
    n = 0
    while n < cap:
        if f() < 0:
            return n, name(ctypes.get_errno())
        n += 1
    return n, 'capped'
out['shm'] = exhaust(lambda: libc.shmget(0, 4096, 0o1600), 100000)
out['msg'] = exhaust(lambda: libc.msgget(0, 0o1600), 100000)
out['sem'] = exhaust(lambda: libc.semget(0, 1, 0o1600), 100000)
out['seen'] = [len(open('/proc/sysvipc/' + t).read().splitlines()) - 1 for t in ('shm', 'msg', 'sem')]
"#;
    let r = attack_in(&inst, body);
    assert_eq!(s(&r, "fd_err"), "EMFILE");
    assert_eq!(r["fds"], 1024);
    assert_eq!(s(&r, "raise"), "refused");
    for t in ["shm", "msg", "sem"] {
        let (n, e) = (r[t][0].as_u64().unwrap(), r[t][1].as_str().unwrap());
        assert_eq!(e, "ENOSPC", "{t}: stopped after {n}: {r:?}");
        assert!(n >= 1000, "{t}: {n}");
    }
    assert_eq!(
        tables(),
        host_before,
        "the host's SysV IPC changed while the instance was full"
    );
    inst.destroy().unwrap();
    assert_eq!(tables(), host_before);
}

// ---------------------------------------------------------------------------------------------
// 10. Leaks between runs and between concurrent instances
// ---------------------------------------------------------------------------------------------

/// What instance `i` plants: files in /tmp and /dev/shm, SysV shared memory, a message queue
/// and a semaphore set under fixed keys, and a background process that holds an abstract
/// socket and a loopback TCP listener (the network is `Net::Loopback`).
fn plant(i: usize) -> String {
    format!(
        r#"
import socket, subprocess
I = {i}
open('/tmp/mark-%d' % I, 'w').write('secret')
open('/dev/shm/mark-%d' % I, 'w').write('secret')
libc.shmget.restype = libc.msgget.restype = libc.semget.restype = ctypes.c_int
KEY = 0x5eed0000 + I
out['ipc'] = [libc.shmget(KEY, 4096, 0o1666), libc.msgget(KEY, 0o1666), libc.semget(KEY, 1, 0o1666)]
code = '''
import socket, time
u = socket.socket(socket.AF_UNIX); u.bind("\\0mark-%d"); u.listen()
t = socket.socket(); t.bind(("127.0.0.1", %d)); t.listen()
print("up", flush=True)
time.sleep(1e6)  # until its instance is destroyed (planting all 100 takes minutes under emulation)
''' % (I, 20000 + I)
p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
out['server'] = p.stdout.readline().decode().strip()
"#
    )
}

/// What instance `me` looks for, of all `n` instances' plantings: it must find exactly its own.
fn search(me: usize, n: usize) -> String {
    format!(
        r#"
import socket, signal
ME, N = {me}, {n}
libc.shmget.restype = libc.msgget.restype = libc.semget.restype = ctypes.c_int
def ipc(j):
    k = 0x5eed0000 + j
    return [libc.shmget(k, 0, 0) >= 0, libc.msgget(k, 0) >= 0, libc.semget(k, 0, 0) >= 0]
def unix(j):
    u = socket.socket(socket.AF_UNIX)
    return err(lambda: u.connect('\0mark-%d' % j)) == 'ok'
def tcp(j):
    t = socket.socket(); t.settimeout(2)
    return err(lambda: t.connect(('127.0.0.1', 20000 + j))) == 'ok'
seen = set()
for j in range(N):
    if any(ipc(j)) or unix(j) or tcp(j):
        seen.add(j)
for d in ('/tmp', '/dev/shm'):
    for f in os.listdir(d):
        if f.startswith('mark-'):
            seen.add(int(f.split('-')[1]))
out['seen'] = sorted(seen)
out['own_all'] = all(ipc(ME)) and unix(ME) and tcp(ME)
out['sysvipc_rows'] = [len(open('/proc/sysvipc/' + t).read().splitlines()) - 1 for t in ('shm', 'msg', 'sem')]
out['pids'] = len([p for p in os.listdir('/proc') if p.isdigit()])
# Then attack: kill everything one can, drop every key one can guess.
out['kill'] = err(lambda: os.kill(-1, signal.SIGKILL))
"#
    )
}

/// Nothing leaks between runs, nor between two instances alive at once: what instance A
/// plants (/tmp and /dev/shm files, SysV shm/msg/sem under fixed keys, an abstract socket, a
/// loopback listener) is invisible to instance B while A lives and to a fresh instance after
/// A is gone, and a later run in a new instance sees empty /tmp and /dev/shm. Keyrings, which
/// are not namespaced, are closed: add_key and keyctl (even reading one's own user keyring's
/// id) get the profile's EPERM; without the filter they work, so the filter is the reason.
#[test]
fn leaks_nothing_between_runs_or_instances() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::builder().net(Net::Loopback).build().unwrap();
    let a = sb.create().unwrap();
    let r = attack_in(&a, &plant(0));
    assert_eq!(s(&r, "server"), "up");
    assert!(
        r["ipc"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_i64().unwrap() >= 0),
        "{r:?}"
    );
    let b = sb.create().unwrap();
    let rb = attack_in(&b, &search(1, 2));
    assert_eq!(
        rb["seen"],
        serde_json::json!([]),
        "B saw A's plantings: {rb:?}"
    );
    assert_eq!(rb["sysvipc_rows"], serde_json::json!([0, 0, 0]));
    let ra = attack_in(&a, &search(0, 2));
    assert_eq!(ra["seen"], serde_json::json!([0]), "A's control: {ra:?}");
    assert_eq!(ra["own_all"], Value::Bool(true), "A finds its own: {ra:?}");
    a.destroy().unwrap();
    b.destroy().unwrap();
    let c = sb.create().unwrap();
    let rc = attack_in(&c, &search(1, 2));
    assert_eq!(
        rc["seen"],
        serde_json::json!([]),
        "a later instance saw A's: {rc:?}"
    );
    c.destroy().unwrap();
    let keys = r#"
out['add_key'] = raw(248, b'user', b'rsandbox-hostile', b'secret', 6, -4)  # KEY_SPEC_USER_KEYRING
out['keyctl_get_id'] = raw(250, 0, -4, 0)  # KEYCTL_GET_KEYRING_ID of @u
out['request_key'] = raw(249, b'user', b'rsandbox-hostile', 0, 0)
"#;
    let k = attack(&sb, keys);
    expect_all(
        &k,
        &["add_key", "keyctl_get_id", "request_key"],
        "EPERM",
        "seccomp",
    );
    let bare = attack(
        &util::builder()
            .net(Net::Loopback)
            .seccomp(Profile::Unconfined)
            .build()
            .unwrap(),
        "out['keyctl_get_id'] = raw(250, 0, -4, 0)",
    );
    assert_eq!(
        s(&bare, "keyctl_get_id"),
        "ok",
        "without the filter: {bare:?}"
    );
}

/// Known gap, kept visible: flock (and POSIX read locks) on a file that every instance shares
/// read-only (here the python3 binary) is one inode for all of them and for the host, so a
/// lock one instance holds is felt by another and by the host: a covert channel and a
/// (rarely useful) denial of service against whoever locks system files. What does hold:
/// another instance's /proc/locks does not show the lock (pid namespace), and the lock ends
/// with the instance that held it. See the README's Security model.
#[test]
fn leaks_known_gap_flock_on_shared_read_only_files() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let sb = util::sandbox();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    let hold = format!(
        r#"
import fcntl, subprocess
code = '''
import fcntl, time
f = open({p:?}, 'rb'); fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True); time.sleep(120)
'''
p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, start_new_session=True)
out['holder'] = p.stdout.readline().decode().strip()
"#,
        p = python.display().to_string()
    );
    assert_eq!(s(&attack_in(&a, &hold), "holder"), "locked");
    let probe = format!(
        r#"
import fcntl
f = open({p:?}, 'rb')
out['try'] = err(lambda: fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB))
out['locks'] = open('/proc/locks').read()
"#,
        p = python.display().to_string()
    );
    let rb = attack_in(&b, &probe);
    assert_eq!(
        s(&rb, "try"),
        "EAGAIN",
        "the known gap changed: another instance no longer feels the lock; update the README"
    );
    eprintln!("KNOWN GAP: an instance's flock on a shared read-only file is felt by other instances and the host (README: Security model)");
    assert_eq!(s(&rb, "locks"), "", "B sees A's lock in /proc/locks");
    let f = std::fs::File::open(&python).unwrap();
    // SAFETY: flock on a file we own the descriptor of.
    let host_try = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    assert_eq!(host_try, -1, "the host is affected too (the same inode)");
    a.destroy().unwrap();
    // The lock ends with its instance.
    let mut free = false;
    for _ in 0..100 {
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            free = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(free, "the lock outlived its instance");
    assert_eq!(s(&attack_in(&b, &probe), "try"), "ok");
    b.destroy().unwrap();
}

/// 100 instances alive at once (as many as this 2-core machine runs in a few seconds), each
/// planting its marks and then looking for everyone's: each finds exactly its own, and its
/// `kill(-1, SIGKILL)` reaches no other instance (every instance's own server is still there
/// when it looks, whatever order the instances run in). Afterwards nothing is left: the
/// fingerprint is unchanged and no SysV object or file of theirs exists on the host.
#[test]
fn leaks_hundred_concurrent_instances_see_nothing_of_each_other() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    const N: usize = 100;
    const WORKERS: usize = 4;
    let sb = util::builder()
        .net(Net::Loopback)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let fp = Fingerprint::take(&sb);
    let host_ipc: Vec<String> = ["shm", "msg", "sem"]
        .iter()
        .map(|t| std::fs::read_to_string(format!("/proc/sysvipc/{t}")).unwrap())
        .collect();
    let t = Instant::now();
    // Each worker owns every WORKERS-th instance; phases are separated by a barrier so all
    // 100 are alive and planted before anyone searches.
    let barrier = std::sync::Barrier::new(WORKERS);
    let results: Vec<Vec<(usize, BTreeMap<String, Value>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (sb, barrier) = (&sb, &barrier);
                scope.spawn(move || {
                    let mine: Vec<(usize, Instance)> = (w..N)
                        .step_by(WORKERS)
                        .map(|i| (i, sb.create().expect("create")))
                        .collect();
                    for (i, inst) in &mine {
                        let r = attack_in(inst, &plant(*i));
                        assert_eq!(s(&r, "server"), "up", "instance {i}");
                    }
                    barrier.wait();
                    let found: Vec<(usize, BTreeMap<String, Value>)> = mine
                        .iter()
                        .map(|(i, inst)| (*i, attack_in(inst, &search(*i, N))))
                        .collect();
                    barrier.wait();
                    for (_, inst) in mine {
                        inst.destroy().unwrap();
                    }
                    found
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut count = 0;
    for (i, r) in results.into_iter().flatten() {
        assert_eq!(r["seen"], serde_json::json!([i]), "instance {i}: {r:?}");
        assert_eq!(
            r["own_all"],
            Value::Bool(true),
            "instance {i}'s control: {r:?}"
        );
        assert_eq!(
            r["sysvipc_rows"],
            serde_json::json!([1, 1, 1]),
            "instance {i}"
        );
        assert_eq!(s(&r, "kill"), "ok", "instance {i}");
        count += 1;
    }
    assert_eq!(count, N);
    eprintln!(
        "{N} concurrent instances planted, searched and attacked in {:?}",
        t.elapsed()
    );
    fp.assert_same(&sb);
    let host_now: Vec<String> = ["shm", "msg", "sem"]
        .iter()
        .map(|t| std::fs::read_to_string(format!("/proc/sysvipc/{t}")).unwrap())
        .collect();
    assert_eq!(host_now, host_ipc);
}

/// Known gap, kept visible: side channels of the shared kernel and the shared read-only files.
/// An instance's inotify watch on the python3 binary, which every instance shares, sees another
/// instance start python; and /proc/meminfo shows the host's memory, not the instance's. See
/// the README's Security model.
#[test]
fn leaks_known_gap_shared_kernel_side_channels() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let sb = util::sandbox();
    let a = sb.create().unwrap();
    let watch = format!(
        r#"
import subprocess
code = '''
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
assert libc.inotify_add_watch(fd, {p:?}.encode(), 0x20) >= 0  # IN_OPEN
open("/tmp/events", "w").write("0")
print("ready", flush=True)
n = 0
while True:
    os.read(fd, 4096)
    n += 1
    open("/tmp/events", "w").write(str(n))
'''
p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
out['watcher'] = p.stdout.readline().decode().strip()
"#,
        p = python.display().to_string()
    );
    assert_eq!(s(&attack_in(&a, &watch), "watcher"), "ready");
    let events = || {
        let o = a
            .exec(&Command::new("/bin/cat").arg("/tmp/events"))
            .unwrap();
        ok(&o).trim().parse::<u64>().unwrap()
    };
    let quiet = events();
    let b = sb.create().unwrap();
    ok(&b.exec(&Command::python("pass")).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let after = events();
    assert!(
        after > quiet,
        "the known gap changed: an inotify watch no longer sees another instance open a shared file; update the README"
    );
    eprintln!("KNOWN GAP: an inotify watch on a shared read-only file sees other instances open it ({quiet} -> {after} events)");
    let host_total = std::fs::read_to_string("/proc/meminfo").unwrap();
    let host_total = host_total.lines().next().unwrap().to_string();
    let o = b
        .exec(&Command::new("/usr/bin/head").args(["-1", "/proc/meminfo"]))
        .unwrap();
    assert_eq!(
        ok(&o).trim_end(),
        host_total,
        "the known gap changed: /proc/meminfo no longer shows the host's memory; update the README"
    );
    a.destroy().unwrap();
    b.destroy().unwrap();
}
