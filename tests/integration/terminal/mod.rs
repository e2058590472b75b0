//! Terminals: every instance's private devpts (openpty, ttyname, termios, the pty bound,
//! CPython's pty tests), terminal runs through the library and the daemon, `rsandbox run
//! --tty` driven from a pty, and attacks on terminals (another instance's or the host's ptys,
//! TIOCSTI from a terminal run).

// The private devpts: openpty as the sandbox user, --max-ptys, nothing left, CPython's suites.
mod devpts;
// Terminal runs: Command::tty and Terminal in the library, "tty": true on the daemon.
mod library;
// `rsandbox run --tty` from a pty: typing, echo, resize, Ctrl-C, exit codes, restored settings.
mod relay;
// Attacks: TIOCSTI from a terminal run, other instances' and the host's ptys.
mod hostile;
