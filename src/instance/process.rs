//! Programs that outlive the call that starts them: started like a session's run (same uid,
//! filters and limits, a run cgroup of their own) and handed to the caller with their
//! descriptors, for a context's interpreter to be driven between calls.

use std::os::fd::OwnedFd;

use super::Instance;
use crate::cgroup::RunCgroup;
use crate::command::Command;
use crate::error::Result;
use crate::spawn;

/// A program started by [`Instance::start_process`].
pub(crate) struct Process {
    /// Its pid in the instance.
    pub(crate) pid: i32,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// The reaper writes the exit record here when the program ends.
    pub(crate) status: OwnedFd,
    /// The seccomp user-notification listener, when the filter reports violations.
    pub(crate) listener: Option<OwnedFd>,
    run_cg: Option<RunCgroup>,
}

impl Instance {
    /// Starts `cmd` with `stdin` as its fd 0 and returns at once; the caller reads its output
    /// and ends it with [`Instance::kill_process`]. Its run cgroup holds every process it starts.
    pub(crate) fn start_process(&self, cmd: &Command, stdin: OwnedFd) -> Result<Process> {
        let l = self.launch(cmd, false, Some(stdin))?;
        Ok(Process {
            pid: l.pid,
            stdout: l.io.stdout,
            stderr: l
                .io
                .stderr
                .expect("a socket-stdin program has a stderr pipe"),
            status: l.io.status,
            listener: l.io.listener,
            run_cg: l.run_cg,
        })
    }

    /// The wall timeout of this instance's runs (the sandbox's).
    pub(crate) fn default_timeout(&self) -> std::time::Duration {
        self.inner.timeout
    }

    /// The cap on each output stream of a run.
    pub(crate) fn output_limit(&self) -> u64 {
        self.inner.output_limit
    }

    /// Sends `sig` to the process group of the program with this pid (an interrupt reaches
    /// the program and what it runs in the foreground, as Ctrl-C on a terminal does).
    pub(crate) fn signal_pid(&self, pid: i32, sig: i32) -> Result<()> {
        let reaper = self.reaper()?;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        spawn::signal(reaper, pid, sig)
    }

    /// Ends the process and everything it started: its run cgroup is killed (without cgroups,
    /// its process group), then the cgroup is removed.
    pub(crate) fn kill_process(&self, p: Process) {
        match p.run_cg {
            Some(run) => {
                run.kill();
                run.release();
            }
            None => {
                if let Ok(reaper) = self.reaper() {
                    let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = spawn::signal(reaper, p.pid, libc::SIGKILL);
                }
            }
        }
    }
}
