//! Options: --help with every default, clear errors for bad input, limit options, check.

use super::{code, json, rsb, stderr, stdout};
use crate::util;

/// `run --help` shows every option, and each option with a default shows it.
#[test]
fn run_help_shows_every_option_with_its_default() {
    let _g = util::shared();
    let o = rsb(["run", "--help"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let help = stdout(&o);
    // The help text of one option: from its flag to the next option's line.
    let option_text = |flag: &str| -> String {
        let lines: Vec<&str> = help.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                l.trim_start().starts_with(flag)
                    || l.trim_start().starts_with(&format!("-c, {flag}"))
            })
            .unwrap_or_else(|| panic!("{flag} is not in run --help:\n{help}"));
        let mut text = lines[start].to_string();
        for l in &lines[start + 1..] {
            if l.trim_start().starts_with('-') || l.trim().is_empty() {
                break;
            }
            text.push_str(l);
        }
        text
    };
    for (flag, default) in [
        ("--timeout", "[default: 30]"),
        ("--tmp-size", "[default: 256M]"),
        ("--work-size", "[default: 256M]"),
        ("--output-limit", "[default: 1M]"),
        ("--net", "[default: none]"),
        ("--seccomp", "[default: default]"),
    ] {
        let text = option_text(flag);
        assert!(
            text.contains(default),
            "{flag} does not show {default}: {text}"
        );
    }
    for flag in [
        "-c <CODE>",
        "--ro",
        "--rw",
        "--file",
        "--env",
        "--stdin",
        "--python",
        "--rootfs",
        "--strict",
        "--json",
    ] {
        option_text(flag);
    }
    // The exit statuses are documented.
    assert!(
        help.contains("124")
            && help.contains("125")
            && help.contains("126")
            && help.contains("127")
    );
}

/// Bad input is a clear error: option syntax errors are clap usage errors (exit 2) naming the
/// value; invalid settings are one line on stderr and exit 125; with --json, one
/// {"error":{"stage","message"}} object on stdout.
#[test]
fn bad_input_gives_clear_errors() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    for (args, needles) in [
        (vec!["--tmp-size", "12Q"], vec!["12Q", "--tmp-size"]),
        (vec!["--work-size", "lots"], vec!["lots", "--work-size"]),
        (vec!["--env", "NOEQUALS"], vec!["NOEQUALS", "KEY=VALUE"]),
        (vec!["--net", "wifi"], vec!["wifi", "--net"]),
        (vec!["--timeout", "0"], vec!["--timeout", "positive"]),
        (vec!["--timeout", "soon"], vec!["soon", "--timeout"]),
        (vec!["--ro", ""], vec!["--ro"]),
    ] {
        let o = rsb(["run"].iter().chain(&args).chain(&["-c", "pass"]));
        assert_eq!(code(&o), 2, "{args:?}: {o:?}");
        let err = stderr(&o);
        for n in needles {
            assert!(
                err.contains(n),
                "{args:?}: the error does not mention {n:?}: {err}"
            );
        }
    }
    for (args, needle) in [
        (vec!["--ro", "/nonexistent"], "/nonexistent"),
        (vec!["--rw", "/nonexistent/dir:/data"], "/nonexistent/dir"),
        (vec!["--ro", "/etc:/proc"], "/proc"),
        (vec!["--ro", "/etc:relative"], "relative"),
        (vec!["--ro", "/etc:/home/sandbox/etc"], "/home/sandbox"),
        (vec!["--work-size", "1K"], "work size"),
        (
            vec!["--python", "/nonexistent/python3"],
            "/nonexistent/python3",
        ),
        (
            vec!["--rootfs", "/nonexistent-rootfs"],
            "/nonexistent-rootfs",
        ),
    ] {
        let o = rsb(["run"].iter().chain(&args).chain(&["-c", "pass"]));
        assert_eq!(code(&o), 125, "{args:?}: {o:?}");
        let err = stderr(&o);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(
            err.starts_with("rsandbox: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(stdout(&o).is_empty());

        let mut json_args = vec!["run", "--json"];
        json_args.extend(&args);
        json_args.extend(["-c", "pass"]);
        let o = rsb(&json_args);
        assert_eq!(code(&o), 125, "{json_args:?}: {o:?}");
        let v = json(&o);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error"], "{v}");
        assert!(
            v["error"]["stage"].as_str().is_some_and(|s| !s.is_empty()),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Nothing to run, or two things to run.
    let o = rsb(["run"]);
    assert_eq!(code(&o), 125, "{o:?}");
    assert!(stderr(&o).contains("nothing to run"), "{}", stderr(&o));
    let o = rsb(["run", "-c", "pass", "--", "/bin/true"]);
    assert_ne!(code(&o), 0, "{o:?}");
}

/// The limit options are accepted and run the program, `run --help` shows them with their
/// defaults, and bad values are one line on stderr naming the option, with exit 125.
#[test]
fn limit_options_are_accepted_shown_and_checked() {
    let _g = util::shared();
    let help = stdout(&rsb(["run", "--help"]));
    for (flag, default) in [
        ("--cpus <CPUS>", Some("[default: 1]")),
        ("--mem <MB>", Some("[default: 512]")),
        ("--pids <N>", Some("[default: 256]")),
        ("--cpu-time <SECS>", None),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} is not in run --help:\n{help}"));
        if let Some(d) = default {
            assert!(line.contains(d), "{flag} does not show {d}: {line}");
        }
    }
    if !util::require("userns") {
        return;
    }
    // (Python's start costs seconds of CPU under emulation: the allowances scale.)
    let (cpu_time, timeout) = (
        (5.0 * util::time_scale()).to_string(),
        (20.0 * util::time_scale()).to_string(),
    );
    let o = rsb([
        "run",
        "--cpus",
        "1",
        "--mem",
        "100",
        "--pids",
        "10",
        "--cpu-time",
        &cpu_time,
        "--timeout",
        &timeout,
        "-c",
        "print('ran')",
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "ran\n"), "{o:?}");
    for (flag, value) in [
        ("--cpus", "0"),
        ("--cpus", "1000"),
        ("--mem", "1"),
        ("--pids", "0"),
    ] {
        let o = rsb(["run", flag, value, "-c", "print('ran')"]);
        assert_eq!(code(&o), 125, "{flag} {value}: {o:?}");
        let err = stderr(&o);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{flag} {value}: not one line: {err}"
        );
        assert!(
            err.starts_with("rsandbox: ") && err.contains(flag.trim_start_matches('-')),
            "{flag} {value}: the error does not name the option: {err}"
        );
        assert!(stdout(&o).is_empty(), "{flag} {value}: the program ran");
        let o = rsb(["run", "--json", flag, value, "-c", "print('ran')"]);
        assert_eq!(code(&o), 125, "{flag} {value}: {o:?}");
        let v = json(&o);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(flag.trim_start_matches('-')),
            "{flag} {value}: {v}"
        );
    }
}

/// `rsandbox check` exits 0 and reports user namespaces and the cgroup layout; `--json`
/// parses with sandbox_works true and the defaults table.
#[test]
fn check_reports_the_host() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let o = rsb(["check"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let text = stdout(&o);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_string()
    };
    assert!(line("user namespaces").contains("yes"), "{text}");
    let cg = line("cgroups");
    let layout = format!("{:?}", rsandbox::probe::host().cgroup_layout);
    assert!(
        cg.contains(&layout),
        "{cg} does not name the layout {layout}"
    );
    assert!(line("sandbox").contains("works"), "{text}");

    let o = rsb(["check", "--json"]);
    assert_eq!(code(&o), 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check --json is JSON");
    assert_eq!(v["sandbox_works"], true, "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["host"]["userns"], true);
    assert!(
        ["v1", "v2", "hybrid", "none"].contains(&v["host"]["cgroup_layout"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["host"]["cgroup_mounts"].is_array());
    assert_eq!(v["defaults"]["timeout_s"], 30);
    assert_eq!(v["defaults"]["output_limit"], 1 << 20);
    assert!(v["enforcement"]["wall"].is_string());
}
