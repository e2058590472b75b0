//! Ordinary programs keep working: CPython's own suites under strict, sqlite3, default, Docker's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rsandbox::seccomp::Profile;
use rsandbox::{Command, Net, Status};

use super::{docker_profile, ok, prelude, with_profile};
use crate::util;

/// Runs `python3 -m test ARGS` (CPython's own test modules) in a fresh instance under the
/// strict profile; on failure, runs it again without a filter to say whether the profile is
/// at fault, and shows the ENOSYS lines the tests printed. Returns the wall time under strict.
fn stdlib_under_strict(args: &[&str]) -> Duration {
    let mut py = vec!["-m", "test"];
    py.extend_from_slice(args);
    python_under_strict(&py, None)
}

/// Runs `/usr/bin/python3 ARGS` as [`stdlib_under_strict`] does; `extra_tests`, a directory
/// from tests/fetch-cpython-tests, is bound read-only at /opt/cpython-tests and put on
/// PYTHONPATH.
fn python_under_strict(args: &[&str], extra_tests: Option<&std::path::Path>) -> Duration {
    let run = |profile: Profile| {
        let mut b = util::builder();
        if let Some(dir) = extra_tests {
            b = b
                .ro(dir, Some(PathBuf::from("/opt/cpython-tests")))
                .env("PYTHONPATH", "/opt/cpython-tests");
        }
        let sb = b
            .seccomp(profile)
            .net(Net::Loopback) // asyncio's streams tests use TCP on 127.0.0.1
            .output_limit(8 << 20)
            .timeout(util::allow(240.0))
            // These runs are about syscalls, not limits: room for multiprocessing's processes
            // (unprivileged, the memory watchdog adds up every process's RSS, shared pages
            // included).
            .memory(4 << 30)
            .build()
            .unwrap();
        let cmd = Command::new("/usr/bin/python3").args(args);
        let t = Instant::now();
        (sb.run(&cmd).expect("run"), t.elapsed())
    };
    let (o, took) = run(Profile::Strict);
    eprintln!(
        "python3 {} under strict: {:.1} s",
        args.join(" "),
        took.as_secs_f64()
    );
    if o.status != Status::Ok {
        let out = format!(
            "{}{}",
            util::stdout(&o),
            String::from_utf8_lossy(&o.stderr_bytes())
        );
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("  File ")).collect();
        let failed: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("FAIL:") || l.starts_with("ERROR:"))
            .collect();
        let enosys: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                l.contains("Errno 38")
                    || l.contains("Function not implemented")
                    || l.contains("futex facility")
            })
            .collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        let (bare, _) = run(Profile::Unconfined);
        let culprit = if bare.status == Status::Ok {
            "passes (the profile is at fault)"
        } else {
            "fails too"
        };
        panic!(
            "python3 {} failed under strict ({:?}, exit {:?}, violation {:?}); without a filter it {culprit}.\n\
             failed: {failed:#?}\nENOSYS: {enosys:#?}\n--- last lines under strict ---\n{tail}",
            args.join(" "),
            o.status,
            o.exit_code,
            o.seccomp_violation,
        );
    }
    took
}

/// Whether the test package (libpython3.11-testsuite) ships this CPython test module; a
/// loud SKIP line when it does not.
fn has_stdlib_test(name: &str) -> bool {
    let base = PathBuf::from("/usr/lib/python3.11/test");
    let there = base.join(format!("{name}.py")).exists() || base.join(name).is_dir();
    if !there {
        eprintln!(
            "SKIP: {name} is not in {} (install libpython3.11-testsuite); test not run",
            base.display()
        );
    }
    there
}

/// The strict allowlist runs CPython's test_subprocess. test_user and test_group are left
/// out: they run children as uid/gid 65534, which the instance's user namespace does not map,
/// so they fail with EINVAL even without a filter (they accept only EPERM/EACCES).
#[test]
fn strict_runs_stdlib_test_subprocess() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_subprocess") {
        return;
    }
    stdlib_under_strict(&["test_subprocess", "-i", "test_user", "-i", "test_group"]);
}

/// The strict allowlist runs CPython's test_threading.
#[test]
fn strict_runs_stdlib_test_threading() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_threading") {
        return;
    }
    stdlib_under_strict(&["test_threading"]);
}

/// The strict allowlist runs CPython's socketpair and Unix-socket tests from test_socket
/// (BasicSocketPairTest, Unix stream sockets, SCM_RIGHTS, sendmsg/recvmsg).
#[test]
fn strict_runs_stdlib_test_socket_unix_and_socketpair() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_socket") {
        return;
    }
    stdlib_under_strict(&["test_socket", "-m", "*SocketPair*", "-m", "*Unix*"]);
}

/// The strict allowlist runs CPython's test_json, test_re and test_tempfile.
#[test]
fn strict_runs_stdlib_json_re_tempfile() {
    let _g = util::shared();
    if !util::require("userns")
        || !["test_json", "test_re", "test_tempfile"]
            .iter()
            .all(|t| has_stdlib_test(t))
    {
        return;
    }
    stdlib_under_strict(&["test_json", "test_re", "test_tempfile"]);
}

/// The strict allowlist runs a subset of CPython's test_asyncio: tasks, streams over TCP on
/// loopback, and the Unix event loop.
#[test]
fn strict_runs_stdlib_test_asyncio_subset() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_asyncio") {
        return;
    }
    stdlib_under_strict(&[
        "test_asyncio.test_tasks",
        "test_asyncio.test_streams",
        "test_asyncio.test_unix_events",
    ]);
}

/// The strict allowlist runs CPython's test_asyncio.test_subprocess (child watchers, pidfds,
/// a watcher thread per child). Now and then (1 run in 8 here) it aborts: a thread's timed
/// futex wait is interrupted by SIGCHLD and resumed through restart_syscall, which strict.json
/// lacks.
#[test]
fn strict_runs_stdlib_test_asyncio_subprocess() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_asyncio") {
        return;
    }
    stdlib_under_strict(&["test_asyncio.test_subprocess"]);
}

/// The strict allowlist runs a subset of CPython's multiprocessing tests under each start
/// method: Process (forkserver), Pool (spawn) and Queue (fork).
#[test]
fn strict_runs_stdlib_multiprocessing_subset() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_multiprocessing_spawn") {
        return;
    }
    stdlib_under_strict(&[
        "test_multiprocessing_forkserver",
        "-m",
        "*WithProcessesTestProcess*",
    ]);
    stdlib_under_strict(&[
        "test_multiprocessing_spawn",
        "-m",
        "*WithProcessesTestPool*",
    ]);
    stdlib_under_strict(&[
        "test_multiprocessing_fork",
        "-m",
        "*WithProcessesTestQueue*",
    ]);
}

/// The strict allowlist runs CPython's test_sqlite3 (433 tests). Debian 12's
/// libpython3.11-testsuite leaves it out: tests/fetch-cpython-tests takes it from the Debian
/// source package of the same interpreter, and `RSANDBOX_TEST_CPYTHON_TESTS` names where
/// (feature `cpython-tests`).
#[test]
fn strict_runs_stdlib_test_sqlite3() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("cpython-tests") {
        return;
    }
    let dir = PathBuf::from(std::env::var_os("RSANDBOX_TEST_CPYTHON_TESTS").unwrap());
    let modules = [
        "backup",
        "dbapi",
        "dump",
        "factory",
        "hooks",
        "regression",
        "transactions",
        "types",
        "userfunctions",
    ]
    .map(|m| format!("test.test_sqlite3.test_{m}"));
    let mut args = vec!["-m", "unittest"];
    args.extend(modules.iter().map(String::as_str));
    python_under_strict(&args, Some(&dir));
}

/// sqlite3 under strict, the way applications use it: a file database in WAL mode written by
/// four threads at once and read by another process, rollback-journal mode, VACUUM, a backup,
/// blob I/O, user functions and an in-memory database.
#[test]
fn strict_runs_a_sqlite3_workload() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import os, sqlite3, subprocess, sys, tempfile, threading
d = tempfile.mkdtemp()
path = os.path.join(d, "t.db")
con = sqlite3.connect(path)
assert con.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
con.execute("create table t(k integer primary key, v text)")
con.executemany("insert into t(v) values (?)", [(str(i),) for i in range(1000)])
con.commit()
def writer(n):
    c = sqlite3.connect(path, timeout=60)
    for i in range(50):
        with c:
            c.execute("insert into t(v) values (?)", (f"w{n}-{i}",))
    c.close()
ts = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
child = f"import sqlite3; print(sqlite3.connect({path!r}).execute('select count(*) from t').fetchone()[0])"
r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
assert int(r.stdout) == 1200, r
con.create_function("double", 1, lambda x: 2 * x)
assert con.execute("select double(21)").fetchone()[0] == 42
con.execute("create table b(id integer primary key, data blob)")
con.execute("insert into b(data) values (zeroblob(65536))")
con.commit()
with con.blobopen("b", "data", 1) as blob:
    blob.write(b"x" * 1000)
assert con.execute("select substr(data, 1, 3) from b").fetchone()[0] == b"xxx"
mem = sqlite3.connect(":memory:")
con.backup(mem)
assert mem.execute("select count(*) from t").fetchone()[0] == 1200
assert con.execute("pragma journal_mode=delete").fetchone()[0] == "delete"
con.execute("delete from t where k % 2 = 0")
con.commit()
con.execute("vacuum")
print("sqlite3 ok", con.execute("select count(*) from t").fetchone()[0])
"#;
    let t = Instant::now();
    let o = util::py(&with_profile(Profile::Strict), code);
    eprintln!(
        "sqlite3 workload under strict: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if o.status != Status::Ok {
        let bare = util::py(&with_profile(Profile::Unconfined), code);
        panic!(
            "sqlite3 workload failed under strict: {o:#?}\nwithout a filter: {:?}",
            bare.status
        );
    }
    assert_eq!(util::stdout(&o), "sqlite3 ok 600\n");
}

/// Docker's own default profile (tests/data, via Profile::File) runs ordinary programs as it
/// is: subprocess, threads, fork; and it is in force (bpf gets its EPERM; EINVAL unfiltered).
#[test]
fn docker_profile_runs_ordinary_programs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let (_dir, docker) = docker_profile();
    let code = format!(
        "{}\n\
import subprocess, threading
r = subprocess.run(['/bin/sh', '-c', 'echo sub'], capture_output=True, text=True, check=True)
seen = []
ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
pid = os.fork()
if pid == 0:
    os._exit(3)
print(r.stdout.strip(), sorted(seen), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), attempt({}, 0, 0, 0))",
        prelude(),
        libc::SYS_bpf
    );
    let o = util::py(&with_profile(docker), &code);
    assert_eq!(ok(&o), format!("sub [0, 1, 2, 3] 3 {}\n", libc::EPERM));
    assert_eq!(o.enforcement.seccomp, "docker-default-seccomp");
    let bare = util::py(&with_profile(Profile::Unconfined), &code);
    assert_eq!(ok(&bare), format!("sub [0, 1, 2, 3] 3 {}\n", libc::EINVAL));
}

/// Ordinary programs work under the default profile: subprocess, threads, a multiprocessing
/// Pool of 2, sqlite3 in memory, an asyncio loop with a subprocess, socketpair, mmap.
#[test]
fn default_profile_runs_ordinary_programs() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import asyncio, mmap, multiprocessing, os, socket, sqlite3, subprocess, sys, threading
def square(x):
    return x * x
if __name__ == "__main__":
    r = subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True, check=True)
    assert r.stdout == "child\n", r
    seen = []
    ts = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert sorted(seen) == list(range(8))
    with multiprocessing.Pool(2) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    con = sqlite3.connect(":memory:")
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [(i,) for i in range(100)])
    assert con.execute("select sum(x) from t").fetchone()[0] == 4950
    async def main():
        await asyncio.sleep(0.01)
        p = await asyncio.create_subprocess_exec("/bin/echo", "hi", stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        return out
    assert asyncio.run(main()) == b"hi\n"
    a, b = socket.socketpair()
    a.sendall(b"ping")
    assert b.recv(4) == b"ping"
    m = mmap.mmap(-1, 4096)
    m[:5] = b"hello"
    assert m[:5] == b"hello"
    print("ordinary ok")
"#;
    let o = util::py(&util::sandbox(), code);
    assert_eq!(ok(&o), "ordinary ok\n");
}
