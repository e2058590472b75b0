//! Namespaces and processes: fresh namespaces per instance, the reaper as pid 1, kill(-1), orphans.

use std::process::Stdio;
use std::time::Duration;

use rsandbox::Command;

use super::{ok, sh_in};
use crate::util;

/// The namespaces every instance must get fresh.
const NAMESPACES: [&str; 7] = ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"];

/// The script that prints each namespace link of the running shell, one per line.
fn ns_script() -> String {
    NAMESPACES
        .iter()
        .map(|n| format!("readlink /proc/self/ns/{n};"))
        .collect()
}

fn host_ns() -> Vec<String> {
    NAMESPACES
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Every instance gets its own user, mount, pid, net, ipc, uts and cgroup namespace: all 7
/// links differ from the host's, and two live instances differ from each other.
#[test]
fn fresh_namespaces_per_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let host = host_ns();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    let ns_a: Vec<String> = ok(&sh_in(&a, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    let ns_b: Vec<String> = ok(&sh_in(&b, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ns_a.len(), 7, "{ns_a:?}");
    assert_eq!(ns_b.len(), 7, "{ns_b:?}");
    for (i, n) in NAMESPACES.iter().enumerate() {
        assert!(ns_a[i].starts_with(&format!("{n}:[")), "{n}: {}", ns_a[i]);
        assert_ne!(ns_a[i], host[i], "instance shares the host's {n} namespace");
        assert_ne!(ns_b[i], host[i], "instance shares the host's {n} namespace");
        assert_ne!(ns_a[i], ns_b[i], "two live instances share a {n} namespace");
    }
    // A one-shot run too.
    let one: Vec<String> = ok(&util::sh(&sb, &ns_script()))
        .lines()
        .map(str::to_string)
        .collect();
    for (i, n) in NAMESPACES.iter().enumerate() {
        assert_ne!(
            one[i], host[i],
            "one-shot run shares the host's {n} namespace"
        );
    }
    a.destroy().unwrap();
    b.destroy().unwrap();
}

/// The program is not pid 1: its parent is the reaper (pid 1), and the fresh pid namespace
/// holds only the reaper and the program.
#[test]
fn reaper_is_pid_1_and_only_instance_processes_are_visible() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let o = util::py(
        &sb,
        "import os\n\
         pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n\
         ppid1 = open('/proc/1/stat').read().rsplit(')', 1)[1].split()[1]\n\
         print(os.getpid(), os.getppid(), os.path.isdir('/proc/1'), ppid1, ' '.join(map(str, pids)))",
    );
    let out = ok(&o);
    let f: Vec<&str> = out.split_whitespace().collect();
    let me: u32 = f[0].parse().unwrap();
    assert_ne!(me, 1, "the program must not be pid 1: {out}");
    assert_eq!(
        f[1], "1",
        "the program's parent must be the reaper (pid 1): {out}"
    );
    assert_eq!(f[2], "True", "/proc/1 must exist: {out}");
    assert_eq!(f[3], "0", "pid 1's parent is outside the namespace: {out}");
    let pids: Vec<u32> = f[4..].iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(
        pids,
        vec![1, me],
        "only the reaper and the program may be visible: {out}"
    );
}

/// `kill(-1, SIGKILL)` inside reaches the instance's own processes, but neither a host process
/// (as non-root it runs under the very same host uid) nor another instance's processes.
#[test]
fn kill_minus_one_stays_inside() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let mut sentinel = util::KillOnDrop(
        std::process::Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let other = sb.create().unwrap();
    let bg = ok(&sh_in(&other, "sleep 100 >/dev/null 2>&1 & echo $!"))
        .trim()
        .to_string();

    let o = util::py(
        &sb,
        "import os, signal, subprocess\n\
         p = subprocess.Popen(['sleep', '100'])\n\
         os.kill(-1, signal.SIGKILL)\n\
         print(p.wait())",
    );
    // The instance's own child was killed by it: the call did reach something.
    assert_eq!(ok(&o).trim(), "-9");

    std::thread::sleep(Duration::from_millis(100));
    let alive = sentinel.0.try_wait().unwrap();
    drop(sentinel);
    assert!(
        alive.is_none(),
        "kill(-1) inside killed a host process: {alive:?}"
    );
    let o = sh_in(&other, &format!("kill -0 {bg} && echo alive"));
    assert_eq!(
        ok(&o).trim(),
        "alive",
        "kill(-1) inside killed another instance's process"
    );
    other.destroy().unwrap();
}

/// Orphans are reparented to the reaper and reaped: after double-forked grandchildren exit,
/// no zombie is left, within one run and across execs of an instance.
#[test]
fn orphans_are_reaped() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    // Every process of the instance, and the zombies among them.
    let scan = "def scan():\n    \
                    pids, zombies = [], []\n    \
                    for p in os.listdir('/proc'):\n        \
                        if p.isdigit():\n            \
                            try:\n                \
                                s = open('/proc/%s/stat' % p).read()\n            \
                            except FileNotFoundError:\n                \
                                continue\n            \
                            pids.append(int(p))\n            \
                            if s.rsplit(')', 1)[1].split()[0] == 'Z':\n                \
                                zombies.append(int(p))\n    \
                    return 'pids=%s zombies=%s me=%d' % (sorted(pids), sorted(zombies), os.getpid())\n";
    let want = |line: &str| {
        let me = line.rsplit('=').next().unwrap();
        format!("pids=[1, {me}] zombies=[] me={me}")
    };
    let code = format!(
        "import os, time, sys\n{scan}\
         for i in range(5):\n    \
             pid = os.fork()\n    \
             if pid == 0:\n        \
                 if os.fork() == 0:\n            \
                     time.sleep(0.1)\n            \
                     sys.stdout.write('ppid %d\\n' % os.getppid()); sys.stdout.flush()\n            \
                     os._exit(0)\n        \
                 os._exit(0)\n    \
             os.waitpid(pid, 0)\n\
         time.sleep(0.5)\n\
         print(scan())\n"
    );
    let out = ok(&util::py(&sb, &code));
    let ppids: Vec<&str> = out.lines().filter(|l| l.starts_with("ppid")).collect();
    assert_eq!(
        ppids,
        vec!["ppid 1"; 5],
        "orphans must be reparented to the reaper: {out}"
    );
    let line = out.lines().find(|l| l.starts_with("pids=")).unwrap();
    assert_eq!(line, want(line), "zombies or stray processes left: {out}");

    // Across execs: orphans left by one exec are reaped before the next looks.
    let inst = sb.create().unwrap();
    ok(&sh_in(
        &inst,
        "for i in 1 2 3 4 5; do sh -c '(sleep 0.1; exit 3) &' ; done; setsid sh -c 'exit 0' &",
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = inst
        .exec(&Command::python(format!("import os\n{scan}print(scan())")))
        .unwrap();
    let out = ok(&out);
    assert_eq!(
        out.trim(),
        want(out.trim()),
        "zombies or stray processes left across execs"
    );
    inst.destroy().unwrap();
}
