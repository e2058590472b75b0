//! `rsandbox run --tty` driven from a pty the test opens, as a user at a terminal would:
//! typing and the echo, the window size at the start and on a resize, Ctrl-C, the exit status,
//! the user's terminal settings afterwards, and the refusal without a terminal.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util;

/// `rsandbox ARGS` as a session leader whose controlling terminal is a fresh pty of the host
/// (in its default, cooked mode); the test holds the master and a copy of the slave.
pub(super) struct OnPty {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    child: Option<std::process::Child>,
    out: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// What was queued as input on the user's terminal when rsandbox exited.
    queued: Option<Vec<u8>>,
}

fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the live winsize on our stack.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

/// The user's terminal settings, to compare before and after.
pub(super) fn settings(fd: &OwnedFd) -> (u32, u32, u32, u32, Vec<u8>) {
    // SAFETY: tcgetattr fills a zeroed termios on our stack.
    let t = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), &mut t), 0);
        t
    };
    (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc.to_vec())
}

impl OnPty {
    pub(super) fn start(args: &[&str], rows: u16, cols: u16) -> OnPty {
        use std::os::unix::process::CommandExt;
        let (master, slave) = util::openpty();
        set_size(&master, rows, cols);
        let mut cmd = std::process::Command::new(util::bin());
        cmd.args(args)
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
        let child = cmd.spawn().unwrap();
        drop(cmd); // it holds the child's copies of the slave
        let out = Arc::new(Mutex::new(Vec::new()));
        let (o, mfd) = (out.clone(), master.try_clone().unwrap());
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(mfd);
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave fd is closed.
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            master,
            slave: Some(slave),
            child: Some(child),
            out,
            reader: Some(reader),
            queued: None,
        }
    }

    /// Everything the terminal showed so far.
    pub(super) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `what` (a hang guard, not a timing assertion).
    pub(super) fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + util::allow(60.0);
        while !self.screen().contains(what) {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {what:?}; it shows {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the terminal has shown `what` `n` times.
    pub(super) fn wait_for_nth(&self, what: &str, n: usize) {
        let deadline = Instant::now() + util::allow(60.0);
        while self.screen().matches(what).count() < n {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {what:?} {n} times; it shows {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types bytes at the keyboard.
    pub(super) fn type_in(&self, bytes: &[u8]) {
        // SAFETY: write(2) of a live buffer to our own master.
        let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize);
    }

    /// Resizes the window: the kernel sends SIGWINCH to the terminal's foreground group.
    pub(super) fn resize(&self, rows: u16, cols: u16) {
        set_size(&self.master, rows, cols);
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for rsandbox to exit and for everything it wrote to be read (the terminal is then
    /// closed: type nothing more); returns its exit code (or 128+signal).
    pub(super) fn wait(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let st = self.child.take().unwrap().wait().unwrap();
        let fd = self.slave.as_ref().unwrap().as_raw_fd();
        // SAFETY: fcntl/read on our own slave fd into a stack buffer.
        self.queued = Some(unsafe {
            libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
            let mut buf = [0u8; 256];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            buf[..n.max(0) as usize].to_vec()
        });
        // The reader ends (EIO) once every copy of the slave is closed: all output is in.
        drop(self.slave.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        st.code().unwrap_or_else(|| 128 + st.signal().unwrap())
    }

    /// The user's terminal settings now (read through the master: a pty's settings are one).
    pub(super) fn settings(&self) -> (u32, u32, u32, u32, Vec<u8>) {
        settings(&self.master)
    }

    /// What was queued as input on the user's terminal when rsandbox exited (nothing should
    /// be).
    pub(super) fn queued_input(&self) -> Vec<u8> {
        self.queued.clone().expect("wait() first")
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The reader ends (EIO) once every copy of the slave is closed.
        drop(self.slave.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// An interactive run: the program starts with the user's window size (30x100), a typed line
/// is echoed and read, a resize reaches the program as SIGWINCH with the new size (50x132),
/// its exit status (3) is rsandbox's, and the user's terminal is as it was before.
#[test]
fn typing_echo_resize_and_the_exit_code() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = "import os, signal, sys, time\n\
        winch = []\n\
        signal.signal(signal.SIGWINCH, lambda *a: winch.append(1))\n\
        print('size', *os.get_terminal_size(), os.ttyname(0), sys.stdin.isatty())\n\
        print('got', repr(sys.stdin.readline()))\n\
        print('waiting for a resize')\n\
        while not winch:\n    time.sleep(0.01)\n\
        print('resized', *os.get_terminal_size())\n\
        sys.exit(3)";
    let mut t = OnPty::start(&["run", "-t", "--timeout", "60", "-c", code], 30, 100);
    let before = t.settings();
    t.wait_for("size 100 30 /dev/pts/0 True\r\n");
    t.type_in(b"hello world\r");
    t.wait_for("hello world\r\n"); // the echo, by the instance's pty
    t.wait_for("got 'hello world\\n'\r\n");
    t.wait_for("waiting for a resize");
    t.resize(50, 132);
    t.wait_for("resized 132 50\r\n");
    assert_eq!(t.wait(), 3, "{}", t.screen());
    assert_eq!(
        t.settings(),
        before,
        "the user's terminal settings were not restored"
    );
    assert_eq!(t.queued_input(), b"");
}

/// Ctrl-C reaches the program through the instance's pty (the shell's `sleep` dies of SIGINT,
/// so does the shell: exit 130); `-t -- /bin/sh` is an interactive shell with a prompt.
#[test]
fn ctrl_c_reaches_the_program_and_a_shell_is_interactive() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let mut t = OnPty::start(
        &[
            "run",
            "-t",
            "--timeout",
            "60",
            "--",
            "/bin/sh",
            "-c",
            "echo started; sleep 600",
        ],
        24,
        80,
    );
    let before = t.settings();
    t.wait_for("started\r\n");
    t.type_in(b"\x03");
    assert_eq!(t.wait(), 130, "{}", t.screen());
    assert_eq!(t.settings(), before);

    let mut t = OnPty::start(
        &["run", "-t", "--timeout", "60", "--", "/bin/sh", "-i"],
        24,
        80,
    );
    t.wait_for_nth("$ ", 1);
    t.type_in(b"echo $((6 * 7)); tty\r");
    t.wait_for("42\r\n/dev/pts/0\r\n");
    t.wait_for_nth("$ ", 2);
    t.type_in(b"sleep 600\r");
    t.wait_for("sleep 600\r\n");
    t.type_in(b"\x03"); // the shell survives, its foreground sleep does not
    t.wait_for_nth("$ ", 3);
    t.type_in(b"echo after; exit 4\r");
    t.wait_for("after\r\n");
    assert_eq!(t.wait(), 4, "{}", t.screen());
}

/// The terminal is restored on the other ways out: the run's timeout (exit 124), a SIGTERM to
/// rsandbox (the run is cancelled, exit 143), and `--json` reports the terminal's byte stream
/// in `stdout` as usual.
#[test]
fn the_terminal_is_restored_on_a_timeout_and_a_signal_and_json_reports() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let mut t = OnPty::start(
        &[
            "run",
            "-t",
            "--timeout",
            "1",
            "--",
            "/bin/sh",
            "-c",
            "echo up; sleep 600",
        ],
        24,
        80,
    );
    let before = t.settings();
    t.wait_for("up\r\n");
    assert_eq!(t.wait(), 124, "{}", t.screen());
    assert_eq!(t.settings(), before);
    assert!(t.screen().contains("timed out"), "{}", t.screen());

    let mut t = OnPty::start(
        &[
            "run",
            "-t",
            "--timeout",
            "60",
            "--",
            "/bin/sh",
            "-c",
            "echo up; sleep 600",
        ],
        24,
        80,
    );
    t.wait_for("up\r\n");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(t.pid(), libc::SIGTERM) };
    assert_eq!(t.wait(), 128 + libc::SIGTERM, "{}", t.screen());
    assert_eq!(t.settings(), before);

    let mut t = OnPty::start(
        &[
            "run",
            "-t",
            "--json",
            "--",
            "/bin/sh",
            "-c",
            "tty; echo err >&2; exit 2",
        ],
        24,
        80,
    );
    assert_eq!(t.wait(), 2, "{}", t.screen());
    assert_eq!(t.settings(), before);
    let screen = t.screen();
    let line = screen
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{screen:?}"));
    let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(r["status"], "exit");
    assert_eq!(r["stdout"], "/dev/pts/0\r\nerr\r\n", "{r}");
    assert_eq!(r["stderr"], "", "{r}");
}

/// Without a terminal on its stdin, `--tty` is refused before anything runs (exit 125, a
/// message that says why), also with `--json`.
#[test]
fn tty_without_a_terminal_is_refused() {
    let _g = util::shared();
    let out = std::process::Command::new(util::bin())
        .args(["run", "-t", "--", "/bin/true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tty needs a terminal on rsandbox's stdin"),
        "{err}"
    );
    let out = std::process::Command::new(util::bin())
        .args(["run", "-t", "--json", "--", "/bin/true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tty needs a terminal"),
        "{v}"
    );
    // And --tty with --stdin or --daemon is a usage error.
    let out = std::process::Command::new(util::bin())
        .args(["run", "-t", "--stdin", "-", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
