//! Terminal injection: TIOCSTI and TIOCLINUX with rsandbox on a real pseudo-terminal.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;

use serde_json::Value;

use super::{eperm_verdict, expect_all, s, script};
use crate::util;

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
    let (master, slave) = util::openpty();
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
fn injection_reaches_nothing() {
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
