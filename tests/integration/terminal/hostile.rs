//! Attacks on terminals: TIOCSTI from a terminal run against the user's terminal, and the ptys
//! of another instance and of the host, which must be neither visible nor reachable.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rsandbox::{Command, Status};

use super::relay::OnPty;
use crate::util;

/// Pushes `X` into fd 0 and fd 1 (the instance's pty, the program's controlling terminal) with
/// TIOCSTI, then reads what its own terminal now holds as input.
const STI: &str = r#"
import ctypes, errno, fcntl, os, sys, termios, tty
libc = ctypes.CDLL(None, use_errno=True)
def sti(fd):
    c = ctypes.c_char(b'X')
    r = libc.ioctl(fd, 0x5412, ctypes.byref(c))
    return 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]
tty.setraw(0)
res = [sti(0), sti(1)]
os.set_blocking(0, False)
try:
    got = os.read(0, 100)
except BlockingIOError:
    got = b''
print('sti', *res, 'own-input', repr(got), end='\r\n')
"#;

/// From inside a terminal run, TIOCSTI cannot put a byte into the user's terminal: with the
/// default profile it is refused (EPERM); without any filter the kernel lets a program push
/// input into its own controlling terminal, and that terminal is the instance's pty, so the
/// byte comes back to the program itself (where the kernel allows TIOCSTI at all) and the
/// user's terminal has nothing queued.
#[test]
fn tiocsti_from_a_terminal_run_stays_in_the_instance() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    for seccomp in ["default", "none"] {
        let mut t = OnPty::start(
            &[
                "run",
                "-t",
                "--seccomp",
                seccomp,
                "--",
                "/usr/bin/python3",
                "-c",
                STI,
            ],
            24,
            80,
        );
        let before = t.settings();
        assert_eq!(t.wait(), 0, "{seccomp}: {}", t.screen());
        let screen = t.screen();
        let line = screen
            .lines()
            .find(|l| l.starts_with("sti "))
            .unwrap_or_else(|| panic!("{seccomp}: {screen:?}"));
        if seccomp == "default" {
            assert_eq!(
                line.trim_end(),
                "sti EPERM EPERM own-input b''",
                "{screen:?}"
            );
        } else if line.starts_with("sti ok ok") {
            assert!(line.contains("own-input b'XX'"), "{seccomp}: {screen:?}");
        } else {
            // dev.tty.legacy_tiocsti=0: the kernel refuses it even on one's own terminal.
            assert!(line.starts_with("sti EIO EIO"), "{seccomp}: {screen:?}");
        }
        assert_eq!(
            t.queued_input(),
            b"",
            "{seccomp}: input reached the user's terminal"
        );
        assert_eq!(t.settings(), before);
    }
}

/// Another instance's ptys: instance A holds /dev/pts/0 open in a background process; in
/// instance B, /dev/pts shows only B's own ptmx, /dev/pts/0 does not exist, a node for 136:0
/// cannot be made, and B's own first pty is a different one (A's stays open and untouched).
/// The host's ptys: one the test holds open is not in any instance's /dev/pts, there is one
/// devpts mount inside (its own), and a program cannot mount the host's devpts (or another).
#[test]
fn other_instances_and_host_ptys_are_not_visible_or_reachable() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fds; the other pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: openpty gave us these descriptors.
    let (host_m, host_s) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    let host_name = std::fs::read_link(format!("/proc/self/fd/{}", host_s.as_raw_fd())).unwrap();
    let host_n: u32 = host_name
        .to_str()
        .unwrap()
        .strip_prefix("/dev/pts/")
        .unwrap()
        .parse()
        .unwrap();

    let sb = util::sandbox();
    let a = sb.create().unwrap();
    let hold = Command::new("/bin/sh").args([
        "-c",
        "python3 -c 'import os, time; m, s = os.openpty(); open(\"held\", \"w\").write(os.ttyname(s)); time.sleep(600)' > /dev/null 2>&1 &\n\
         while [ ! -s held ]; do sleep 0.01; done; cat held",
    ]);
    let o = a.exec(&hold).unwrap();
    assert_eq!(util::stdout(&o), "/dev/pts/0", "{o:#?}");

    let b = sb.create().unwrap();
    let look = format!(
        r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def err(f):
    try:
        f(); return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
print('pts', sorted(os.listdir('/dev/pts')))
print('open0', err(lambda: os.open('/dev/pts/0', os.O_RDWR)))
print('openhost', err(lambda: os.open('/dev/pts/{host_n}', os.O_RDWR)))
print('mknod', err(lambda: os.mknod('/tmp/pty', 0o20600, os.makedev(136, 0))))
def mount(src, fstype, data):
    r = libc.mount(src.encode(), b'/tmp', fstype.encode(), 0, data.encode())
    return 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]
print('mount-devpts', mount('devpts', 'devpts', ''), mount('devpts', 'devpts', 'newinstance'))
print('devpts-mounts', sum(' - devpts ' in l for l in open('/proc/self/mountinfo')))
m, s = os.openpty()
print('own', os.ttyname(s))
"#
    );
    let o = b.exec(&Command::python(look)).unwrap();
    assert_eq!(o.status, Status::Ok, "{o:#?}");
    let out = util::stdout(&o);
    let want = "pts ['ptmx']\n\
                open0 ENOENT\n\
                openhost ENOENT\n\
                mknod EPERM\n\
                mount-devpts EPERM EPERM\n\
                devpts-mounts 1\n\
                own /dev/pts/0\n";
    assert_eq!(out, want);
    // A's pty is still there, held by its background process.
    let o = a.exec(&Command::new("/bin/ls").arg("/dev/pts")).unwrap();
    assert_eq!(util::stdout(&o), "0\nptmx\n", "{o:#?}");
    a.destroy().unwrap();
    b.destroy().unwrap();
    drop((host_m, host_s));
}
