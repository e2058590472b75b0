//! The status precedence of a report as a pure function: from what the supervisor saw to the
//! `status`, `exit_code`, `signal` and `limits_hit` of the report.

use super::{Limit, Status};

/// What the supervisor and the cgroup counters saw of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The wall-clock timeout fired and the run was killed.
    pub timed_out: bool,
    /// A watchdog (CPU time, memory without cgroups) killed the run.
    pub watched: Option<Limit>,
    /// The program's raw wait status; `None` when no exit record came.
    pub wait_status: Option<i32>,
    /// The run has a CPU-time limit (so a SIGXCPU is RLIMIT_CPU, its backstop without cgroups).
    pub cpu_time_limit: bool,
    /// OOM kills and refused forks (`pids.max` hits) during the run.
    pub oom_kills: u64,
    pub pids_hits: u64,
    /// A kill-class seccomp rule fired.
    pub seccomp_violation: bool,
    /// Output past the cap was dropped (either stream).
    pub output_truncated: bool,
}

/// What [`classify`] decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub limits_hit: Vec<Limit>,
}

/// The cause of termination by precedence: timeout > cpu_time > memory > pids (the program
/// died of it) > seccomp (killed by a signal after a violation) > signal > exit (non-zero) >
/// ok; `limits_hit` lists every limit touched, whatever the status. `None`: no limit ended the
/// run and no exit record came (the instance is gone).
pub(crate) fn classify(f: &Facts) -> Option<Verdict> {
    let mut limits_hit = Vec::new();
    let (mut exit_code, mut signal) = (None, None);
    let status = if f.timed_out {
        limits_hit.push(Limit::Wall);
        Status::Timeout
    } else if let Some(l) = f.watched {
        limits_hit.push(l);
        if l == Limit::CpuTime {
            Status::CpuTime
        } else {
            Status::Memory
        }
    } else {
        let ws = f.wait_status?;
        let signaled = libc::WIFSIGNALED(ws);
        let died = signaled || libc::WEXITSTATUS(ws) != 0;
        if signaled {
            signal = Some(libc::WTERMSIG(ws));
        } else {
            exit_code = Some(libc::WEXITSTATUS(ws));
        }
        if signal == Some(libc::SIGXCPU) && f.cpu_time_limit {
            // RLIMIT_CPU, the backstop without cgroups, fired before the watchdog.
            limits_hit.push(Limit::CpuTime);
            Status::CpuTime
        } else if f.oom_kills > 0 && died {
            Status::Memory
        } else if f.pids_hits > 0 && died {
            Status::Pids
        } else if f.seccomp_violation && signaled {
            Status::Seccomp
        } else if libc::WIFEXITED(ws) {
            if exit_code == Some(0) {
                Status::Ok
            } else {
                Status::Exit
            }
        } else {
            signal = Some(libc::WTERMSIG(ws));
            Status::Signal
        }
    };
    if f.oom_kills > 0 && !limits_hit.contains(&Limit::Memory) {
        limits_hit.push(Limit::Memory);
    }
    if f.pids_hits > 0 {
        limits_hit.push(Limit::Pids);
    }
    if f.output_truncated {
        limits_hit.push(Limit::Output);
    }
    Some(Verdict {
        status,
        exit_code,
        signal,
        limits_hit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Limit as L;

    /// Raw wait statuses, as `waitpid` reports them.
    const fn exited(code: i32) -> i32 {
        code << 8
    }
    const fn killed(sig: i32) -> i32 {
        sig
    }

    /// The facts that make each status, with the exit record a run of that kind leaves.
    fn cause(s: Status) -> Facts {
        let mut f = Facts {
            wait_status: Some(exited(0)),
            ..Facts::default()
        };
        match s {
            Status::Timeout => f.timed_out = true,
            Status::CpuTime => f.watched = Some(L::CpuTime),
            Status::Memory => (f.oom_kills, f.wait_status) = (1, Some(killed(libc::SIGKILL))),
            Status::Pids => (f.pids_hits, f.wait_status) = (1, Some(exited(1))),
            Status::Seccomp => {
                (f.seccomp_violation, f.wait_status) = (true, Some(killed(libc::SIGSYS)))
            }
            Status::Signal => f.wait_status = Some(killed(libc::SIGTERM)),
            Status::Exit => f.wait_status = Some(exited(3)),
            Status::Ok => {}
            Status::OutputLimit => unreachable!("not a cause classify decides"),
        }
        f
    }

    /// Both causes at once: the flags of both, and the exit record of the lower one (so the
    /// higher one's flag has to win over what the program itself did).
    fn both(high: Status, low: Status) -> Facts {
        let (h, l) = (cause(high), cause(low));
        Facts {
            timed_out: h.timed_out || l.timed_out,
            watched: h.watched.or(l.watched),
            wait_status: l.wait_status,
            cpu_time_limit: false,
            oom_kills: h.oom_kills + l.oom_kills,
            pids_hits: h.pids_hits + l.pids_hits,
            seccomp_violation: h.seccomp_violation || l.seccomp_violation,
            output_truncated: false,
        }
    }

    /// Every pair of causes, higher first: the status it gives and the limits it lists.
    /// Memory and pids need the program to have died (killed, or a non-zero exit); seccomp
    /// needs it killed by a signal; signal, exit and ok are the exit record itself, so the
    /// lower one's record decides between them.
    #[test]
    fn every_precedence_pair() {
        use Status::*;
        #[rustfmt::skip]
        let table: &[(Status, Status, Status, &[Limit])] = &[
            (Timeout, CpuTime, Timeout, &[L::Wall]),
            (Timeout, Memory,  Timeout, &[L::Wall, L::Memory]),
            (Timeout, Pids,    Timeout, &[L::Wall, L::Pids]),
            (Timeout, Seccomp, Timeout, &[L::Wall]),
            (Timeout, Signal,  Timeout, &[L::Wall]),
            (Timeout, Exit,    Timeout, &[L::Wall]),
            (Timeout, Ok,      Timeout, &[L::Wall]),
            (CpuTime, Memory,  CpuTime, &[L::CpuTime, L::Memory]),
            (CpuTime, Pids,    CpuTime, &[L::CpuTime, L::Pids]),
            (CpuTime, Seccomp, CpuTime, &[L::CpuTime]),
            (CpuTime, Signal,  CpuTime, &[L::CpuTime]),
            (CpuTime, Exit,    CpuTime, &[L::CpuTime]),
            (CpuTime, Ok,      CpuTime, &[L::CpuTime]),
            (Memory,  Pids,    Memory,  &[L::Memory, L::Pids]),
            (Memory,  Seccomp, Memory,  &[L::Memory]),
            (Memory,  Signal,  Memory,  &[L::Memory]),
            (Memory,  Exit,    Memory,  &[L::Memory]),
            // A child OOM-killed while the program exited 0: touched, not the cause.
            (Memory,  Ok,      Ok,      &[L::Memory]),
            (Pids,    Seccomp, Pids,    &[L::Pids]),
            (Pids,    Signal,  Pids,    &[L::Pids]),
            (Pids,    Exit,    Pids,    &[L::Pids]),
            (Pids,    Ok,      Ok,      &[L::Pids]),
            (Seccomp, Signal,  Seccomp, &[]),
            // A violation the program survived (a child's) did not end it.
            (Seccomp, Exit,    Exit,    &[]),
            (Seccomp, Ok,      Ok,      &[]),
            (Signal,  Exit,    Exit,    &[]),
            (Signal,  Ok,      Ok,      &[]),
            (Exit,    Ok,      Ok,      &[]),
        ];
        let order = [Timeout, CpuTime, Memory, Pids, Seccomp, Signal, Exit, Ok];
        let mut pairs = 0;
        for (i, &high) in order.iter().enumerate() {
            for &low in &order[i + 1..] {
                let row = table
                    .iter()
                    .find(|r| (r.0, r.1) == (high, low))
                    .unwrap_or_else(|| panic!("no row for ({high:?}, {low:?})"));
                let v = classify(&both(high, low)).expect("a verdict");
                assert_eq!(
                    (v.status, v.limits_hit.as_slice()),
                    (row.2, row.3),
                    "({high:?}, {low:?})"
                );
                pairs += 1;
            }
        }
        assert_eq!(pairs, table.len());
        // Each cause alone gives its own status.
        for s in order {
            assert_eq!(classify(&cause(s)).unwrap().status, s, "{s:?}");
        }
    }

    #[test]
    fn exit_code_and_signal_come_from_the_exit_record() {
        let v = classify(&cause(Status::Exit)).unwrap();
        assert_eq!((v.exit_code, v.signal), (Some(3), None));
        let v = classify(&cause(Status::Seccomp)).unwrap();
        assert_eq!((v.exit_code, v.signal), (None, Some(libc::SIGSYS)));
        let v = classify(&cause(Status::Memory)).unwrap();
        assert_eq!((v.exit_code, v.signal), (None, Some(libc::SIGKILL)));
        // A limit that ended the run before its exit record came: neither.
        let mut f = cause(Status::Timeout);
        f.wait_status = None;
        let v = classify(&f).unwrap();
        assert_eq!(
            (v.status, v.exit_code, v.signal),
            (Status::Timeout, None, None)
        );
    }

    #[test]
    fn sigxcpu_is_cpu_time_only_with_a_cpu_time_limit() {
        let mut f = Facts {
            wait_status: Some(killed(libc::SIGXCPU)),
            ..Facts::default()
        };
        assert_eq!(classify(&f).unwrap().status, Status::Signal);
        f.cpu_time_limit = true;
        let v = classify(&f).unwrap();
        assert_eq!(
            (v.status, v.limits_hit),
            (Status::CpuTime, vec![L::CpuTime])
        );
        assert_eq!(v.signal, Some(libc::SIGXCPU));
    }

    #[test]
    fn watchdog_memory_is_listed_once_and_output_is_a_limit_not_a_status() {
        let f = Facts {
            watched: Some(L::Memory),
            oom_kills: 2,
            output_truncated: true,
            ..Facts::default()
        };
        let v = classify(&f).unwrap();
        assert_eq!(
            (v.status, v.limits_hit),
            (Status::Memory, vec![L::Memory, L::Output])
        );
        let f = Facts {
            wait_status: Some(exited(0)),
            output_truncated: true,
            ..Facts::default()
        };
        let v = classify(&f).unwrap();
        assert_eq!((v.status, v.limits_hit), (Status::Ok, vec![L::Output]));
    }

    #[test]
    fn no_exit_record_and_no_limit_is_no_verdict() {
        assert_eq!(classify(&Facts::default()), None);
        let f = Facts {
            oom_kills: 1,
            seccomp_violation: true,
            ..Facts::default()
        };
        assert_eq!(classify(&f), None);
    }
}
