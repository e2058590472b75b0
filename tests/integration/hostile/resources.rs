//! Resource exhaustion: reservations, CPU spinners, output floods, full tmpfs, fds, SysV IPC.

use std::time::{Duration, Instant};

use rsandbox::{Command, Status};

use super::{attack, attack_in, s};
use crate::util::{self, Fingerprint};

/// A 1 TiB PROT_NONE reservation (what JIT runtimes and allocators do) is allowed: rsandbox
/// limits memory by cgroup (or the RSS watchdog), never RLIMIT_AS. Touching memory is what is
/// limited: memory bombs are limits::memory_pids::memory_bomb_is_stopped_and_reported_as_memory (and
/// limits::fallback::fallback_watchdog_stops_a_memory_bomb without cgroups).
#[test]
fn terabyte_prot_none_reservation_is_allowed() {
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
fn spinning_threads_and_sleep_forever_end_at_the_timeout() {
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
fn ten_gib_of_stdout_is_drained_in_constant_memory() {
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
fn filling_tmp_shm_and_work_dir_is_bounded() {
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
fn fd_and_sysv_ipc_exhaustion_stay_in_the_instance() {
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
