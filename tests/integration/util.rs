//! Shared test helpers: feature expectations, the "nothing remains" fingerprint, the CLI path,
//! and a lock that keeps fingerprint tests from seeing other tests' instances.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rsandbox::{Outcome, Sandbox, SandboxBuilder};

/// Tests that run instances hold this shared; tests that compare fingerprints hold it
/// exclusively, so no other test's instance is alive while they look.
static LOCK: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(|p| p.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(|p| p.into_inner())
}

/// Whether this test process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn feature_present(feature: &str) -> bool {
    let p = rsandbox::probe::host();
    match feature {
        "userns" => p.userns,
        "landlock" => p.landlock_abi > 0,
        "cgroup1" => p.cgroup_mounts.iter().any(|m| m.version == 1),
        "cgroup2" => p.cgroup_layout == rsandbox::probe::CgroupLayout::V2,
        // The v2 device controller is a BPF program attached by rsandbox: root on a v2 host.
        "bpf-devices" => {
            is_root()
                && matches!(
                    rsandbox::testing::cgroup::setup(),
                    Ok(rsandbox::testing::cgroup::Setup::V2 { .. })
                )
        }
        // CPython test modules Debian leaves out, from tests/fetch-cpython-tests.
        "cpython-tests" => std::env::var_os("RSANDBOX_TEST_CPYTHON_TESTS").is_some_and(|d| {
            Path::new(&d)
                .join("test/test_sqlite3/__init__.py")
                .is_file()
        }),
        "root" => is_root(),
        "nonroot" => !is_root(),
        _ => false,
    }
}

/// Checks that a host feature is present. Missing: a loud SKIP line and `false`, unless the
/// feature is listed in `RSANDBOX_TEST_EXPECT` (comma-separated), in which case the test fails.
/// ("root"/"nonroot" select the pass a test belongs to and are never expected.)
pub fn require(feature: &str) -> bool {
    feature_present(feature) || missing(feature, "not available on this host")
}

/// A feature found missing (`why`): a loud SKIP line and `false`, or a failure when
/// `RSANDBOX_TEST_EXPECT` lists it.
pub fn missing(feature: &str, why: &str) -> bool {
    let expected = std::env::var("RSANDBOX_TEST_EXPECT").unwrap_or_default();
    if expected.split(',').any(|f| f.trim() == feature) {
        panic!("feature {feature:?} is missing ({why}) but RSANDBOX_TEST_EXPECT lists it");
    }
    eprintln!("SKIP: feature {feature:?} is missing ({why}); test not run");
    false
}

/// The instance's cgroup directories, from its state record (matched by reaper pid).
pub fn instance_cgroups(sb: &Sandbox, inst: &rsandbox::Instance) -> Vec<PathBuf> {
    let pid = inst.reaper_pid().expect("a live instance has a reaper");
    for e in std::fs::read_dir(sb.state_dir()).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if let Ok(info) = serde_json::from_str::<rsandbox::testing::state::RecordInfo>(&text) {
            if info.reaper_pid == pid {
                assert!(
                    !info.cgroups.is_empty(),
                    "the record of reaper {pid} names no cgroups: {text}"
                );
                return info.cgroups;
            }
        }
    }
    panic!(
        "no state record in {} names reaper {pid}",
        sb.state_dir().display()
    );
}

/// The rsandbox binary: `RSANDBOX_BIN` (CI copies binaries where a non-root user can read
/// them) or the one cargo built.
pub fn bin() -> PathBuf {
    std::env::var_os("RSANDBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rsandbox")))
}

/// `RSANDBOX_TEST_TIME_SCALE` (default 1): the factor on the tests' wall-clock allowances
/// (timeouts that are safety nets, upper bounds on how long something may take), for slow hosts
/// such as the emulated cgroup v2 guest. What a test asserts about a limit itself is not scaled.
pub fn time_scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var("RSANDBOX_TEST_TIME_SCALE") {
        Ok(v) => match v.parse::<f64>() {
            Ok(f) if f >= 1.0 && f.is_finite() => f,
            _ => panic!("RSANDBOX_TEST_TIME_SCALE={v:?}: not a number of at least 1"),
        },
        Err(_) => 1.0,
    })
}

/// A wall-clock allowance of `secs` seconds on this host (see [`time_scale`]).
pub fn allow(secs: f64) -> Duration {
    Duration::from_secs_f64(secs * time_scale())
}

/// A builder with a short timeout, for tests.
pub fn builder() -> SandboxBuilder {
    Sandbox::builder().timeout(allow(20.0))
}

pub fn sandbox() -> Sandbox {
    builder().build().expect("building the sandbox")
}

/// Runs `sh -c script` in a fresh instance of `sb`.
pub fn sh(sb: &Sandbox, script: &str) -> Outcome {
    sb.run(&rsandbox::Command::new("/bin/sh").args(["-c", script]))
        .expect("run")
}

/// Runs Python code in a fresh instance of `sb`.
pub fn py(sb: &Sandbox, code: &str) -> Outcome {
    sb.run(&rsandbox::Command::python(code)).expect("run")
}

pub fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout_bytes()).into_owned()
}

/// What must be unchanged by any run (DESIGN.md §8).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Fingerprint {
    /// Descendants of this process, and any process running under an instance host uid.
    pub processes: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub state_records: BTreeSet<String>,
    pub template_files: BTreeSet<String>,
    pub fds: BTreeSet<String>,
}

fn ppid_and_uid(pid: u32) -> Option<(u32, u32, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut ppid = None;
    let mut uid = None;
    let mut name = String::new();
    for l in status.lines() {
        if let Some(v) = l.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("Uid:") {
            uid = v.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if let Some(v) = l.strip_prefix("Name:") {
            name = v.trim().to_string();
        }
    }
    Some((ppid?, uid?, name))
}

/// Every host process: pid, parent pid, real uid and name (from `/proc/PID/status`).
pub fn process_table() -> Vec<(u32, u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| ppid_and_uid(pid).map(|(ppid, uid, name)| (pid, ppid, uid, name)))
        .collect()
}

fn processes() -> BTreeSet<String> {
    let me = std::process::id();
    let all = process_table();
    let parent: std::collections::HashMap<u32, u32> =
        all.iter().map(|(p, pp, _, _)| (*p, *pp)).collect();
    let descends = |mut p: u32| {
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == me => return true,
                Some(&pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    };
    let base = rsandbox::testing::ns::user::UID_BASE;
    all.iter()
        .filter(|(pid, _, uid, _)| {
            *pid != me
                && (descends(*pid)
                    || (*uid >= base && *uid < base + rsandbox::testing::ns::user::SLOTS))
        })
        .map(|(pid, _, uid, name)| format!("{pid} uid={uid} {name}"))
        .collect()
}

fn list_tree(root: &Path, out: &mut BTreeSet<String>) {
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                list_tree(&p, out);
            }
        }
    }
}

impl Fingerprint {
    /// Takes the fingerprint; `sb` names the template and state directories to list.
    pub fn take(sb: &Sandbox) -> Fingerprint {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let mut state_records = BTreeSet::new();
        list_tree(sb.state_dir(), &mut state_records);
        let mut template_files = BTreeSet::new();
        list_tree(sb.template_dir(), &mut template_files);
        let fds = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .map(|e| {
                format!(
                    "{:?} -> {:?}",
                    e.file_name(),
                    std::fs::read_link(e.path()).unwrap_or_default()
                )
            })
            .collect();
        Fingerprint {
            processes: processes(),
            mounts,
            state_records,
            template_files,
            fds,
        }
    }

    /// Waits briefly for stragglers (fds closed by exiting helper threads), then compares.
    pub fn assert_same(&self, sb: &Sandbox) {
        let mut now = Fingerprint::take(sb);
        let deadline = std::time::Instant::now() + allow(1.0);
        while std::time::Instant::now() < deadline {
            if &now == self {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
            now = Fingerprint::take(sb);
        }
        assert_eq!(self.processes, now.processes, "processes changed");
        assert_eq!(self.mounts, now.mounts, "host mounts changed");
        assert_eq!(
            self.state_records, now.state_records,
            "state records changed"
        );
        assert_eq!(self.template_files, now.template_files, "template changed");
        assert_eq!(self.fds, now.fds, "open fds changed");
    }
}

/// A host child process, killed and reaped when dropped (also when an assertion fails).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Compiles C source with the host's compiler (the one Rust links with) into `dir/name`:
/// static when it can, so the program needs nothing from the instance; dynamic if there is no
/// static libc.
pub fn compile_c(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = dir.join(name);
    let build = |extra: &[&str]| {
        std::process::Command::new("cc")
            .args(extra)
            .args(["-O1", "-o"])
            .arg(&out)
            .arg(&c)
            .output()
            .expect("running cc (the C compiler Rust links with)")
    };
    if !build(&["-static"]).status.success() {
        let r = build(&[]);
        assert!(
            r.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    out
}

/// This process's resident set size in bytes.
pub fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// `statvfs(path)` on the host.
pub fn statvfs(path: &str) -> libc::statvfs {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a valid C string and a zeroed out-struct that statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {path}: {}", std::io::Error::last_os_error());
    st
}

/// Whether `path` lies on a file system the host itself has read-only (a read-only mount or
/// superblock, as the v2 test guest's 9p root): writes there fail with EROFS before any
/// permission check, whatever rsandbox does.
pub fn host_read_only(path: &str) -> bool {
    statvfs(path).f_flag & libc::ST_RDONLY != 0
}

/// Host processes whose parent is `ppid`, with their names.
pub fn children_of(ppid: i32) -> Vec<(i32, String)> {
    process_table()
        .into_iter()
        .filter(|(_, p, _, _)| *p as i32 == ppid)
        .map(|(pid, _, _, name)| (pid as i32, name))
        .collect()
}

/// A Python with a client package for compatibility tests: `$env_var` (a venv the tests/fetch-*
/// scripts made), or a venv made here under the temp dir with pip. `None` with a loud SKIP when
/// neither works, or a failure when `feature` is in `RSANDBOX_TEST_EXPECT`.
pub fn client_python(
    env_var: &str,
    feature: &str,
    venv_name: &str,
    import: &str,
    packages: &[&str],
) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(p.into());
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let venv = std::env::temp_dir().join(format!("rsandbox-{venv_name}-venv-{uid}"));
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        std::process::Command::new(p)
            .args(["-c", &format!("import {import}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&python) {
        let made = std::process::Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q"])
                .args(packages)
                .status()
                .is_ok_and(|s| s.success());
        if !made || !ok(&python) {
            missing(
                feature,
                &format!("{} could not be installed with pip", packages.join(" ")),
            );
            return None;
        }
    }
    Some(python)
}

/// Runs a command to its end and returns its output, killing it (and failing the test) when
/// it runs past `limit`.
pub fn output_within(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a command");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for a command"),
        Err(_) => {
            // SAFETY: kill(2) on the child this function started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the command ran past {limit:?} and was killed");
        }
    }
}

/// A new pty of this host: (master, slave), both close-on-exec, so that programs other tests
/// start meanwhile do not hold the terminal open.
pub fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
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
    // SAFETY: openpty gave us these fds, which nothing else owns.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}
