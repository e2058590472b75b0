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
/// it), or a venv made here with pip (see `util::client_python`).
pub(crate) fn seed_python() -> Option<PathBuf> {
    crate::util::client_python(
        "RSANDBOX_SEED_PYTHON",
        "seed-clients",
        "seed",
        "microsandbox, ai_computer, e2b_code_interpreter",
        &CLIENTS,
    )
}

/// Runs `script` with the clients' Python (`sys.argv[1]` is the daemon's URL), with `env`;
/// asserts that it printed "client ok".
pub(crate) fn run_client(python: &Path, script: &str, url: &str, env: &[(&str, &str)]) {
    let out = crate::util::output_within(
        Command::new(python)
            .args(["-c", script, url])
            .env_remove("MSB_API_KEY")
            .envs(env.iter().copied()),
        crate::util::allow(180.0),
    );
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
