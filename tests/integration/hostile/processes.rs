//! Signals and processes: fork and thread bombs, stopped trees, signal-ignoring daemons.

use std::time::Instant;

use super::{attack, s};
use crate::util::{self, Fingerprint};

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
/// sentinel: isolation::namespaces::kill_minus_one_stays_inside.)
#[test]
fn bombs_are_bounded_and_leftovers_are_gone() {
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
