//! The private devpts of every instance: ptys work as the sandbox user, their number is
//! bounded, nothing is left behind, and CPython's own pty tests pass inside.

use std::path::Path;

use rsandbox::{Command, Net, Status};

use crate::util;

/// `os.openpty()`, `pty.spawn`, `ttyname` and `tcsetattr` in a plain run, as uid 1000: the
/// pty is the instance's (`/dev/pts/0`, owned by the sandbox user, mode 0620), `/dev/ptmx` is a
/// link to `pts/ptmx`, and bytes go through it both ways.
#[test]
fn openpty_ttyname_tcsetattr_and_pty_spawn_work_as_the_sandbox_user() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import os, pty, termios, tty, json
m, s = os.openpty()
name = os.ttyname(s)
st = os.stat(name)
attrs = termios.tcgetattr(s)
tty.setraw(s)
termios.tcsetattr(s, termios.TCSANOW, attrs)
os.write(s, b"ping\n")
echoed = os.read(m, 100)
out = {"uid": os.getuid(), "name": name, "owner": [st.st_uid, st.st_gid],
       "mode": oct(st.st_mode & 0o777), "ptmx": os.readlink("/dev/ptmx"),
       "echoed": echoed.decode(), "pts": sorted(os.listdir("/dev/pts"))}
os.close(s); os.close(m)
# pty.spawn: a child on a new pty, its output read back through the master.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.dup2(w, 1)
    def read(fd):
        data = os.read(fd, 1024)
        os.write(w, data)
        return data
    status = pty.spawn(["/bin/sh", "-c", "tty; echo spawned"], read)
    os._exit(os.waitstatus_to_exitcode(status))
os.close(w)
spawned = b""
while True:
    d = os.read(r, 1024)
    if not d:
        break
    spawned += d
_, status = os.waitpid(pid, 0)
out["spawn"] = spawned.decode()
out["spawn_status"] = os.waitstatus_to_exitcode(status)
print(json.dumps(out))
"#;
    let o = util::py(&util::sandbox(), code);
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    let r: serde_json::Value = serde_json::from_str(util::stdout(&o).trim()).unwrap();
    assert_eq!(r["uid"], 1000);
    assert_eq!(r["name"], "/dev/pts/0", "the instance's first pty: {r}");
    assert_eq!(r["owner"], serde_json::json!([1000, 1000]));
    assert_eq!(r["mode"], "0o620");
    assert_eq!(r["ptmx"], "pts/ptmx");
    assert_eq!(r["echoed"], "ping\r\n");
    assert_eq!(r["pts"], serde_json::json!(["0", "ptmx"]));
    assert_eq!(r["spawn_status"], 0, "{r}");
    let spawned = r["spawn"].as_str().unwrap();
    assert!(
        spawned.contains("/dev/pts/") && spawned.contains("spawned"),
        "{spawned:?}"
    );
}

/// `--max-ptys N`: N ptys open at once, the next fails with ENOSPC (the devpts `max=`), and
/// closing one frees its slot.
#[test]
fn more_ptys_than_the_bound_fail_with_enospc() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = r#"
import os, errno
held = []
for i in range(4):
    held.append(os.openpty())
try:
    os.openpty()
    print("fifth: ok")
except OSError as e:
    print("fifth:", errno.errorcode[e.errno])
os.close(held[0][0]); os.close(held[0][1])
held[0] = os.openpty()
print("after close: ok", len(held))
"#;
    let sb = util::builder().max_ptys(4).build().unwrap();
    let o = util::py(&sb, code);
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    assert_eq!(util::stdout(&o), "fifth: ENOSPC\nafter close: ok 4\n");
    // The default bound is 64.
    let o = util::py(
        &util::sandbox(),
        "import os\nptys = [os.openpty() for _ in range(64)]\ntry:\n    os.openpty()\nexcept OSError as e:\n    print(e.errno)",
    );
    assert_eq!(util::stdout(&o), format!("{}\n", libc::ENOSPC), "{o:#?}");
    // Bad bounds are refused with the field named.
    for bad in [0, 1025] {
        let e = match util::builder().max_ptys(bad).build() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("max_ptys({bad}) was accepted"),
        };
        assert!(e.contains("max ptys") && e.contains("1..=1024"), "{e}");
    }
}

/// Ptys opened and left open by a run (and by a background process of a session) are gone with
/// the instance: host processes, mounts, state records, template files and our fds are as
/// before.
#[test]
fn nothing_is_left_after_runs_that_hold_ptys() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let _ = util::sh(&sb, "true"); // the template exists before the fingerprint
    let before = util::Fingerprint::take(&sb);
    let o = util::py(
        &sb,
        "import os\nptys = [os.openpty() for _ in range(8)]\nprint(len(ptys))",
    );
    assert_eq!(util::stdout(&o), "8\n", "{o:#?}");
    let inst = sb.create().unwrap();
    let bg = Command::new("/bin/sh").args([
        "-c",
        "python3 -c 'import os, time; p = os.openpty(); open(\"held\", \"w\").write(\"1\"); time.sleep(600)' > /dev/null 2>&1 &\n\
         while [ ! -s held ]; do sleep 0.01; done",
    ]);
    assert_eq!(inst.exec(&bg).unwrap().status, Status::Ok);
    let tty = inst
        .exec(&Command::new("/bin/sh").args(["-c", "tty"]).tty(true))
        .unwrap();
    assert_eq!(util::stdout(&tty), "/dev/pts/1\r\n", "{tty:#?}");
    inst.destroy().unwrap();
    before.assert_same(&sb);
}

/// Runs `python3 -m test ARGS` (CPython's own test modules) in a plain run (default profile,
/// loopback for the tests that talk TCP to themselves) and asserts they pass.
fn stdlib(args: &[&str]) {
    let sb = util::builder()
        .net(Net::Loopback)
        .output_limit(8 << 20)
        .timeout(util::allow(120.0))
        .memory(2 << 30)
        .build()
        .unwrap();
    let o = sb
        .run(
            &Command::new("/usr/bin/python3")
                .args(["-m", "test"])
                .args(args),
        )
        .unwrap();
    let out = format!(
        "{}{}",
        util::stdout(&o),
        String::from_utf8_lossy(&o.stderr_bytes())
    );
    assert_eq!(
        o.status,
        Status::Ok,
        "python3 -m test {} failed inside:\n{out}",
        args.join(" ")
    );
    assert!(out.contains("Tests result: SUCCESS"), "{out}");
}

fn has_stdlib_test(name: &str) -> bool {
    let there = Path::new("/usr/lib/python3.11/test")
        .join(format!("{name}.py"))
        .exists()
        || Path::new("/usr/lib/python3.11/test").join(name).is_dir();
    if !there {
        eprintln!("SKIP: {name} is not in /usr/lib/python3.11/test (install libpython3.11-testsuite); test not run");
    }
    there
}

/// CPython's test_pty and test_os pass inside as on the host, and asyncio's pty tests too.
/// One difference is the sandbox's on purpose: test_os's `test_chown_without_permission` is
/// left out, as test_subprocess's test_user is under the strict profile: it chowns to uid
/// 65534, which the instance's user namespace does not map (only the sandbox user and root
/// are), so the kernel answers EINVAL where the test accepts only EPERM.
#[test]
fn cpython_test_pty_test_os_and_asyncio_ptys_pass_inside() {
    let _g = util::shared();
    if !util::require("userns") || !has_stdlib_test("test_pty") || !has_stdlib_test("test_asyncio")
    {
        return;
    }
    stdlib(&["test_pty", "test_os", "-i", "test_chown_without_permission"]);
    stdlib(&["test_asyncio.test_events", "-m", "*pty*"]);
}

/// The devpts mount: a private instance (`newinstance` shows as its own superblock, not the
/// host's /dev/pts), nosuid and noexec, `max=64`, ptmx 0666; `/dev/ptmx` links to it.
#[test]
fn the_devpts_mount_is_private_nosuid_noexec_and_bounded() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let o = util::py(
        &util::sandbox(),
        "import os\nprint([l for l in open('/proc/self/mountinfo') if ' /dev/pts ' in l][0].strip())\n\
         print(os.readlink('/dev/ptmx'), os.stat('/dev/pts').st_dev)",
    );
    let out = util::stdout(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l.len(), 2, "{o:#?}");
    assert!(l[0].contains(" - devpts "), "{out}");
    assert!(l[0].contains("nosuid") && l[0].contains("noexec"), "{out}");
    assert!(
        l[0].contains("max=64") && l[0].contains("ptmxmode=666"),
        "{out}"
    );
    let host_pts = std::fs::metadata("/dev/pts").unwrap().dev();
    let (link, dev) = l[1].split_once(' ').unwrap();
    assert_eq!(link, "pts/ptmx", "{out}");
    assert_ne!(
        dev,
        host_pts.to_string(),
        "the instance's /dev/pts is the host's devpts"
    );
}

/// The GPU variant of `/dev` (a tmpfs of its own, populated per instance) gets the same
/// devpts and `/dev/ptmx` link, and ptys work there as the sandbox user.
#[test]
fn a_gpu_instance_has_its_own_devpts_too() {
    let _g = util::shared();
    let Some(fake) = crate::gpu::fake_gpus() else {
        return;
    };
    let sb = fake.builder().gpu_devices(&[1]).build().unwrap();
    let o = util::py(
        &sb,
        "import os\nm, s = os.openpty()\nprint(os.ttyname(s), os.readlink('/dev/ptmx'), sorted(os.listdir('/dev/pts')))",
    );
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    assert_eq!(util::stdout(&o), "/dev/pts/0 pts/ptmx ['0', 'ptmx']\n");
}
