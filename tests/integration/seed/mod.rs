//! The seed systems' own Python clients, installed at their pinned versions, driven through
//! their public APIs against a real daemon: microsandbox (`msb`), AI Computer (`aic`) and E2B's
//! code interpreter in debug mode (`e2b`). Each also sends its protocol's bad input by hand.

mod aic;
mod e2b;
mod msb;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The clients, pinned as the issue read them.
const CLIENTS: [&str; 3] = [
    "microsandbox==0.1.8",
    "ai-computer-client==0.3.4",
    "e2b-code-interpreter==2.11.5",
];

/// A Python with the three clients: `RSANDBOX_SEED_PYTHON` (tests/fetch-seed-clients makes
/// it), or a venv made here with pip. `None` (with a loud SKIP, or a failure when
/// `RSANDBOX_TEST_EXPECT` lists `seed-clients`) when neither works.
pub(crate) fn seed_python() -> Option<PathBuf> {
    let expected = std::env::var("RSANDBOX_TEST_EXPECT")
        .unwrap_or_default()
        .split(',')
        .any(|f| f.trim() == "seed-clients");
    if let Some(p) = std::env::var_os("RSANDBOX_SEED_PYTHON") {
        return Some(p.into());
    }
    // SAFETY: geteuid cannot fail.
    let venv =
        std::env::temp_dir().join(format!("rsandbox-seed-venv-{}", unsafe { libc::geteuid() }));
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                "import microsandbox, ai_computer, e2b_code_interpreter",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&python) {
        let made = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q"])
                .args(CLIENTS)
                .status()
                .is_ok_and(|s| s.success());
        if !made || !ok(&python) {
            assert!(
                !expected,
                "seed-clients is expected but the clients could not be installed with pip"
            );
            eprintln!(
                "SKIP: the seed systems' clients could not be installed with pip; test not run"
            );
            return None;
        }
    }
    Some(python)
}

/// Runs `script` with the clients' Python (`sys.argv[1]` is the daemon's URL), with `env`;
/// asserts that it printed "client ok".
pub(crate) fn run_client(python: &Path, script: &str, url: &str, env: &[(&str, &str)]) {
    let out = Command::new(python)
        .args(["-c", script, url])
        .env_remove("MSB_API_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("client ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token file in `dir` holding `token`.
pub(crate) fn token_file(dir: &Path, token: &str) -> String {
    let p = dir.join("token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p.to_str().unwrap().to_string()
}
