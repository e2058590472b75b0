//! Tests against the kernel (root only): loading large programs, the verifier's log, and a
//! device denied to a process in a cgroup with the program attached.

use super::*;
use crate::cgroup::devices::minimal;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[test]
fn kernel_verifies_large_programs() {
    if crate::sys::ids().0 != 0 {
        eprintln!("SKIP: cgroup::devices large-program load test needs root");
        return;
    }
    let rules: Vec<DeviceRule> = (0..10_000u32)
        .map(|i| DeviceRule {
            kind: if i % 2 == 0 {
                DeviceKind::Char
            } else {
                DeviceKind::Block
            },
            major: i / 3,
            minor: if i % 4 == 0 { None } else { Some(i) },
            read: i % 3 != 0,
            write: i % 5 != 0,
            mknod: i % 7 == 0,
        })
        .collect();
    let t = std::time::Instant::now();
    match load(&rules) {
        Ok(_) => {
            eprintln!(
                "loaded {} rules ({} insns) in {:?}",
                rules.len(),
                program(&rules).len(),
                t.elapsed()
            )
        }
        Err(e)
            if matches!(
                e.get_ref()
                    .and_then(|r| r.downcast_ref::<BpfError>())
                    .map(|b| b.errno),
                Some(libc::EPERM | libc::ENOSYS)
            ) =>
        {
            skip(
                "bpf-devices",
                &format!("cannot load a cgroup device program: {e}"),
            )
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn kernel_rejection_carries_the_verifier_log() {
    if crate::sys::ids().0 != 0 {
        eprintln!("SKIP: cgroup::devices verifier-log test needs root");
        return;
    }
    // Exit without setting r0: the verifier must refuse, and say why.
    let e =
        load_insns(&[Insn::exit()], 0).expect_err("verifier accepted a program that never sets r0");
    let b = e
        .get_ref()
        .and_then(|r| r.downcast_ref::<BpfError>())
        .expect("a BpfError inside");
    if matches!(b.errno, libc::EPERM | libc::ENOSYS) {
        return skip(
            "bpf-devices",
            &format!("cannot load a cgroup device program: {e}"),
        );
    }
    assert_eq!(b.errno, libc::EACCES, "{e}");
    let log = b.log.as_deref().unwrap_or_default();
    assert!(log.contains("R0 !read_ok"), "verifier log: {log:?}");
    assert!(e.to_string().contains("R0 !read_ok"), "{e}");
    eprintln!("rejection as reported: {e}");
}

// ---- The kernel test ----------------------------------------------------------------

/// A loud SKIP line, or a failure where `RSANDBOX_TEST_EXPECT` lists the feature (§8).
fn skip(feature: &str, why: &str) {
    let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
    if expected.split(',').any(|f| f.trim() == feature) {
        panic!("feature {feature:?} is missing ({why}) but RSANDBOX_TEST_EXPECT lists it");
    }
    eprintln!("SKIP: cgroup::devices kernel test not run: {why}");
}

/// The cgroup2 mount: (mount point, root of the mount within the hierarchy).
fn cgroup2_mount() -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = pre.split(' ').collect();
        Some((PathBuf::from(unescape(f.get(4)?)), unescape(f.get(3)?)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path (`0::/...`).
fn own_v2_path() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The test's cgroup and the one child in it: on drop, the child is killed and reaped,
/// anything left in the cgroup (only that child's own descendants) is killed through
/// `cgroup.kill`, and the directory is removed.
struct TestCgroup {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..200 {
            match std::fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => {
                    eprintln!(
                        "warning: could not remove test cgroup {}: {e}",
                        self.dir.display()
                    );
                    return;
                }
                Ok(()) => return,
            }
        }
        eprintln!(
            "warning: test cgroup {} still busy; left behind",
            self.dir.display()
        );
    }
}

/// A char 1:4 node to open: `/dev/port` where the host has one, else one made with
/// mknod(2) in a fresh directory under the temp dir (which must not be `nodev`).
fn port_node(tmp: &Path) -> io::Result<PathBuf> {
    let dev = Path::new("/dev/port");
    if let Ok(m) = std::fs::metadata(dev) {
        if m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 4) {
            return Ok(dev.to_path_buf());
        }
    }
    let node = tmp.join("port");
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    let mode = Mode::from_raw_mode(0o600);
    mknodat(CWD, &node, FileType::CharacterDevice, mode, makedev(1, 4))?;
    Ok(node)
}

#[test]
fn kernel_denies_what_the_program_denies() {
    if crate::sys::ids().0 != 0 {
        eprintln!("SKIP: cgroup::devices kernel test needs root");
        return;
    }
    let Some((mnt, mnt_root)) = cgroup2_mount() else {
        return skip("cgroup2", "no cgroup2 filesystem in /proc/self/mountinfo");
    };
    let Some(own) = own_v2_path() else {
        return skip("cgroup2", "no 0:: line in /proc/self/cgroup");
    };
    // The mount shows the hierarchy from `mnt_root` down; our path must lie beneath it.
    let rel = if mnt_root == "/" {
        own.trim_start_matches('/').to_owned()
    } else if let Some(r) = own.strip_prefix(&mnt_root) {
        r.trim_start_matches('/').to_owned()
    } else {
        let why = format!("own cgroup {own} is outside the cgroup2 mount's root {mnt_root}");
        return skip("cgroup2", &why);
    };
    let parent = mnt.join(rel);
    let name = format!(
        "rsandbox-devtest-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let dir = parent.join(name);
    if let Err(e) = std::fs::create_dir(&dir) {
        return skip(
            "cgroup2",
            &format!("cannot create a cgroup under {}: {e}", parent.display()),
        );
    }
    let mut cg = TestCgroup {
        dir: dir.clone(),
        child: None,
    };

    let cgroup_dir = std::fs::File::open(&dir).expect("open the test cgroup directory");
    let prog = match attach(cgroup_dir.as_fd(), &minimal()) {
        Ok(fd) => fd,
        Err(e)
            if matches!(
                e.get_ref()
                    .and_then(|r| r.downcast_ref::<BpfError>())
                    .map(|b| b.errno),
                Some(libc::EPERM | libc::ENOSYS)
            ) =>
        {
            // Lockdown, no CAP_BPF, or no bpf(2): the feature is missing, not broken.
            return skip(
                "bpf-devices",
                &format!("cannot load or attach a cgroup device program: {e}"),
            );
        }
        Err(e) => panic!("attach failed: {e}"),
    };
    // The attachment outlives the fd.
    drop(prog);
    drop(cgroup_dir);

    let tmp = tempfile::tempdir().expect("temp dir");
    let port = match port_node(tmp.path()) {
        Ok(p) => p,
        Err(e) => {
            return skip(
                "bpf-devices",
                &format!("no /dev/port and mknod of a 1:4 node failed: {e}"),
            )
        }
    };
    // Control: outside the cgroup, opening the node must not fail with EPERM (it may fail
    // with ENXIO or ENODEV where the kernel has no /dev/port driver); otherwise EPERM in
    // the cgroup would prove nothing.
    match std::fs::File::open(&port) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            let why = format!(
                "{} cannot be opened here (nodev mount?): {e}",
                port.display()
            );
            return skip("bpf-devices", &why);
        }
        Err(e) => {
            assert_ne!(
                e.raw_os_error(),
                Some(libc::EPERM),
                "control open of {} already gets EPERM",
                port.display()
            )
        }
    }

    let script = r#"read x
head -c1 /dev/zero >/dev/null && echo zero-ok
printf 'port: '; cat "$1" 2>&1 | head -c 200; echo
printf 'mknod: '; mknod "$2/null" c 1 3 2>&1 | head -c 200; echo
echo done"#;
    let child = Command::new("/bin/sh")
        .args(["-c", script, "sh"])
        .arg(&port)
        .arg(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh");
    let pid = child.id();
    cg.child = Some(child);
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .expect("move the child into the test cgroup");
    let now_in = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!(
        "0::{}",
        Path::new(&own).join(dir.file_name().unwrap()).display()
    );
    assert!(
        now_in.lines().any(|l| l == want),
        "child not in the test cgroup: {now_in:?}, want {want}"
    );

    let child = cg.child.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    cg.child = None;
    eprintln!("child output:\n{out}");
    assert!(status.success(), "sh failed: {status}; output {out:?}");
    assert!(
        out.lines().any(|l| l == "zero-ok"),
        "/dev/zero should work: {out:?}"
    );
    let port_line = out
        .lines()
        .find(|l| l.starts_with("port: "))
        .unwrap_or_default();
    assert!(
        port_line.contains("Operation not permitted"),
        "char 1:4 should get EPERM: {out:?}"
    );
    let mknod_line = out
        .lines()
        .find(|l| l.starts_with("mknod: "))
        .unwrap_or_default();
    assert!(
        mknod_line.contains("Operation not permitted"),
        "mknod of 1:3 should get EPERM: {out:?}"
    );
    assert!(
        out.lines().any(|l| l == "done"),
        "script did not finish: {out:?}"
    );
    drop(cg);
    assert!(
        !dir.exists(),
        "test cgroup {} was not removed",
        dir.display()
    );
}
