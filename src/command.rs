//! A program to run in an instance: argv or Python code, its files, environment, stdin and
//! timeout, as the caller gives it (resolved against a policy by `policy::resolve`).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::terminal::Terminal;

/// Where a program's stdin comes from.
#[derive(Clone, Debug, Default)]
pub enum Stdin {
    /// End of file at once.
    #[default]
    Null,
    Bytes(Vec<u8>),
    /// A host file (or `/dev/stdin`), streamed.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub(crate) enum Program {
    Argv(Vec<OsString>),
    PythonCode(String),
    PythonScript(String, Vec<OsString>),
}

/// A program to run in an instance, with its files, environment, stdin and timeout.
#[derive(Clone, Debug)]
pub struct Command {
    pub(crate) program: Program,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdin: Stdin,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pass_through: bool,
    pub(crate) files: Vec<(String, Vec<u8>, u32)>,
    pub(crate) cancel: Option<Cancel>,
    /// Run on a pty of the instance (the handle, when the caller wants to type and resize).
    pub(crate) tty: Option<Terminal>,
    /// Sees captured output as it arrives.
    pub(crate) tap: Option<OutputTap>,
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A callback for output as it arrives (see [`Command::on_output`]), indexed 0 stdout, 1 stderr.
#[derive(Clone)]
pub(crate) struct OutputTap(pub(crate) std::sync::Arc<crate::spawn::wait::TapFn>);

impl std::fmt::Debug for OutputTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputTap")
    }
}

impl Command {
    fn with(program: Program) -> Command {
        Command {
            program,
            env: Vec::new(),
            stdin: Stdin::Null,
            timeout: None,
            pass_through: false,
            files: Vec::new(),
            cancel: None,
            tty: None,
            tap: None,
        }
    }
    /// A program looked up on the instance's PATH (or a path inside it).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::with(Program::Argv(vec![program.as_ref().to_os_string()]))
    }
    /// Python code, run as `python -c CODE` with the sandbox's interpreter.
    pub fn python(code: impl Into<String>) -> Command {
        Command::with(Program::PythonCode(code.into()))
    }
    /// A Python script in the work dir, run with the sandbox's interpreter.
    pub fn python_script(path: impl Into<String>) -> Command {
        Command::with(Program::PythonScript(path.into(), Vec::new()))
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Command {
        match &mut self.program {
            Program::Argv(v) | Program::PythonScript(_, v) => v.push(a.as_ref().to_os_string()),
            Program::PythonCode(_) => {}
        }
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Command {
        for a in args {
            self = self.arg(a);
        }
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn stdin(mut self, s: Stdin) -> Command {
        self.stdin = s;
        self
    }
    /// Overrides the sandbox's wall timeout for this run.
    pub fn timeout(mut self, t: Duration) -> Command {
        self.timeout = Some(t);
        self
    }
    /// Copy output to this process's stdout/stderr as it arrives (still capped) instead of
    /// capturing it in the `Outcome`.
    pub fn pass_through(mut self, on: bool) -> Command {
        self.pass_through = on;
        self
    }
    /// Calls `f` with each chunk of captured output as it arrives (within the output cap), for
    /// a caller that streams it; the report still has all of it.
    pub fn on_output(mut self, f: impl Fn(OutputStream, &[u8]) + Send + Sync + 'static) -> Command {
        self.tap = Some(OutputTap(std::sync::Arc::new(move |i, b| {
            f(
                if i == 0 {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                },
                b,
            )
        })));
        self
    }

    /// A file copied into the work dir (path relative to it) before the program starts.
    pub fn file(mut self, path: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Command {
        self.files.push((path.into(), data.into(), mode));
        self
    }

    /// Cancels this run when `cancel` is cancelled: before it starts, it is not started;
    /// while it runs, it is killed (as on a timeout). The run then returns `Err(Cancelled)`.
    pub fn cancel_on(mut self, cancel: &Cancel) -> Command {
        self.cancel = Some(cancel.clone());
        self
    }

    /// Runs the program on a new pty of the instance's own devpts: the pty's slave is its
    /// stdin, stdout, stderr and controlling terminal (24x80), and the run's output is the
    /// terminal's one byte stream (in `stdout`; `stderr` stays empty). `stdin` is typed into the
    /// terminal (a terminal has no end of input but a typed `\x04`).
    pub fn tty(mut self, on: bool) -> Command {
        self.tty = on.then(|| self.tty.take().unwrap_or_default());
        self
    }

    /// [`Command::tty`] with a handle to type into the terminal and resize it while the run
    /// goes on (from another thread).
    pub fn terminal(mut self, terminal: &Terminal) -> Command {
        self.tty = Some(terminal.clone());
        self
    }

    /// argv[0] as given, for messages.
    pub(crate) fn name(&self) -> String {
        match &self.program {
            Program::Argv(v) => v[0].to_string_lossy().into_owned(),
            Program::PythonCode(_) | Program::PythonScript(..) => "python".into(),
        }
    }
}

pub(crate) fn validate_env(env: &[(String, String)]) -> Result<()> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Error::invalid(
                "env",
                format!("{k:?}: names must be non-empty without '=' or NUL, values without NUL"),
            ));
        }
    }
    Ok(())
}
