//! /proc: `/proc/*/exe` writes, sysrq, core_pattern, kcore, oom_score_adj, host processes' view.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{attack, expect_all, file_hash, nanos, open_tempdir, s, script};
use crate::util;

/// Opening `/proc/*/exe` for writing never reaches a host binary: pid 1's exe (the reaper, a
/// copy of the supervisor: the integration binary for library runs, rsandbox for CLI runs) is
/// EACCES because the reaper is not dumpable; the program's own exe (root's python3) is EACCES
/// by DAC; a binary the sandbox user may write (0777, from a `--ro` bind) is ETXTBSY while it
/// runs and EROFS (the mount) once it has exited. The host binaries hash the same afterwards.
#[test]
fn exe_writes_leave_host_binaries_unchanged() {
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
fn sysrq_core_pattern_and_kcore_are_out_of_reach() {
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
fn oom_score_adj_cannot_go_below_its_start() {
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
fn shows_no_host_process_or_environment() {
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
