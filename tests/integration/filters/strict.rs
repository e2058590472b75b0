//! The strict profile and `--strict`: ENOSYS for unlisted calls, kills named in the report.

use rsandbox::seccomp::Profile;
use rsandbox::{Command, SeccompViolation, Status};

use super::{docker_profile, json_map, ok, prelude, with_profile};
use crate::util;

/// The report says which profile is in force (`default`, `strict`, `none` without a filter,
/// a file's stem) and the Landlock ABI used (`abiN`, N = min(kernel ABI, 7): `abi7` here), in
/// the Outcome of a real run as in `Sandbox::enforcement`.
#[test]
fn report_names_the_profile_and_the_landlock_abi() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let abi = rsandbox::probe::host().landlock_abi;
    let landlock = format!("abi{}", abi.min(7));
    let (_dir, docker) = docker_profile();
    for (profile, name) in [
        (Profile::Default, "default"),
        (Profile::Strict, "strict"),
        (Profile::Unconfined, "none"),
        (docker, "docker-default-seccomp"),
    ] {
        let sb = with_profile(profile);
        assert_eq!(sb.enforcement().seccomp, name);
        let o = sb.run(&Command::new("/bin/true")).unwrap();
        ok(&o);
        assert_eq!(o.enforcement.seccomp, name);
        assert_eq!(o.enforcement.landlock, landlock);
        assert_eq!(o.seccomp_violation, None);
    }
    if abi >= 7 {
        assert_eq!(landlock, "abi7");
    }
}

/// Under strict, a syscall the allowlist does not name gets ENOSYS (getcpu and
/// sched_rr_get_interval succeed without the filter).
#[test]
fn strict_answers_unlisted_syscalls_with_enosys() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = format!(
        "{}\nprint(json.dumps({{'getcpu': raw({}, 0, 0, 0)[1], 'sched_rr_get_interval': attempt({}, 0, 0)}}))",
        prelude(),
        libc::SYS_getcpu,
        libc::SYS_sched_rr_get_interval
    );
    let strict = json_map(&util::py(&with_profile(Profile::Strict), &code));
    let bare = json_map(&util::py(&with_profile(Profile::Unconfined), &code));
    assert_eq!(strict["getcpu"], libc::ENOSYS as i64, "{strict:?}");
    assert_eq!(
        strict["sched_rr_get_interval"],
        libc::ENOSYS as i64,
        "{strict:?}"
    );
    assert_eq!(bare["getcpu"], 0, "{bare:?}");
    assert_eq!(
        bare["sched_rr_get_interval"],
        libc::EFAULT as i64,
        "{bare:?}"
    );
}

/// Under strict, a kill-class call (ptrace, bpf, keyctl) kills the program: status `seccomp`,
/// `seccomp_violation` names the syscall and its number, and what it printed before is kept.
#[test]
fn strict_kills_attacks_and_names_the_syscall() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let sb = with_profile(Profile::Strict);
    for (name, nr) in [
        ("ptrace", libc::SYS_ptrace),
        ("bpf", libc::SYS_bpf),
        ("keyctl", libc::SYS_keyctl),
    ] {
        let code = format!(
            "{}\nprint('before', flush=True)\nr = raw({nr}, 0, 0, 0, 0)\nprint('after', r)",
            prelude()
        );
        let o = util::py(&sb, &code);
        assert_eq!(o.status, Status::Seccomp, "{name}: {o:#?}");
        assert_eq!(
            o.seccomp_violation,
            Some(SeccompViolation {
                syscall: name.into(),
                nr
            }),
            "{o:#?}"
        );
        assert_eq!(util::stdout(&o), "before\n", "{name}: {o:#?}");
        assert_eq!(o.exit_code, None);
        assert!(o.signal.is_some(), "{o:#?}");
    }
}

/// Under strict, a child process (subprocess) that calls ptrace is killed and the violation
/// is reported, while the parent goes on and prints after it: the run itself is `ok`.
#[test]
fn strict_kill_in_a_child_is_reported_and_the_parent_goes_on() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let code = format!(
        "import subprocess, sys\n\
child = 'import ctypes; ctypes.CDLL(None).syscall({}, 0, 0, 0, 0); print(\"child survived\")'\n\
r = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)\n\
print('child', r.returncode, repr(r.stdout))\n\
print('parent goes on')",
        libc::SYS_ptrace
    );
    let o = util::py(&with_profile(Profile::Strict), &code);
    assert_eq!(ok(&o), "child -9 ''\nparent goes on\n");
    assert_eq!(
        o.seccomp_violation,
        Some(SeccompViolation {
            syscall: "ptrace".into(),
            nr: libc::SYS_ptrace
        })
    );
}

/// Under strict, a sleep that is stopped and continued resumes: the kernel restarts it with
/// `restart_syscall`, which strict.json does not list, so the resumed sleep gets ENOSYS
/// (coreutils: "cannot read realtime clock"; glibc aborts a futex wait the same way:
/// "The futex facility returned an unexpected error code", which test_subprocess hits when a
/// thread's timed GIL wait is interrupted by a child's SIGCHLD).
#[test]
fn strict_lets_a_stopped_sleep_resume() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let script =
        "/bin/sleep 0.5 & p=$!; /bin/sleep 0.2; kill -STOP $p; kill -CONT $p; wait $p; echo rc=$?";
    for profile in [Profile::Unconfined, Profile::Strict] {
        let o = util::sh(&with_profile(profile.clone()), script);
        assert_eq!(ok(&o), "rc=0\n", "{profile:?}: {o:#?}");
    }
}

/// `--strict` (`.strict(true)`) builds and runs here, where the kernel has Landlock and
/// seccomp, with every layer in force; the CLI's `--strict` too. Unprivileged, this host's v1
/// cgroups are not delegated, so `--strict` refuses for cgroups, the check that follows the
/// Landlock and seccomp ones: the refusal must name cgroups, never Landlock or seccomp.
#[test]
fn strict_mode_builds_and_runs_here() {
    let _g = util::shared();
    if !util::require("userns") || !util::require("landlock") {
        return;
    }
    let cli = std::process::Command::new(util::bin())
        .args(["run", "--strict", "--json", "--", "/bin/true"])
        .output()
        .unwrap();
    let sb = match util::builder().strict(true).build() {
        Ok(sb) => sb,
        Err(rsandbox::Error::Unsupported {
            feature: "cgroups",
            message,
        }) if !util::is_root() => {
            eprintln!("NOTE: unprivileged, --strict refuses for cgroups only: {message}");
            assert_eq!(cli.status.code(), Some(125), "{cli:?}");
            assert!(
                String::from_utf8_lossy(&cli.stdout).contains("cgroup"),
                "{cli:?}"
            );
            return;
        }
        Err(e) => panic!("--strict on a kernel with Landlock and seccomp: {e:?}"),
    };
    let o = sb.run(&Command::new("/bin/true")).unwrap();
    ok(&o);
    assert_eq!(o.enforcement.seccomp, "default");
    assert_ne!(o.enforcement.landlock, "none");
    assert_eq!(cli.status.code(), Some(0), "{cli:?}");
    let v: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["enforcement"]["seccomp"], "default");
    assert_eq!(
        v["enforcement"]["landlock"],
        o.enforcement.landlock.as_str()
    );
}
