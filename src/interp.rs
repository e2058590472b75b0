//! Finding real interpreters: never a shim (a pyenv shim is a bash script costing ~90 ms), and
//! for a virtualenv, the venv and its base installation, both to be bound read-only.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ns::template::SYSTEM_DIRS;

/// A Python interpreter as the sandbox will run it.
#[derive(Clone, Debug)]
pub struct Python {
    /// The path to execute, as seen inside (the same as on the host).
    pub exe: PathBuf,
    /// Host directories outside the system binds that must be bound read-only at their own
    /// path (a pyenv install under /root, a virtualenv).
    pub binds: Vec<PathBuf>,
}

/// Whether `p` starts with the ELF magic.
fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Whether a host path is covered by the system binds (/usr, /bin, ...).
fn under_system(p: &Path) -> bool {
    SYSTEM_DIRS
        .iter()
        .any(|d| p.starts_with(Path::new("/").join(d)))
}

/// The default interpreter: the first real `python3` in the source root's system directories.
pub fn default_python(source: &Path) -> Option<Python> {
    ["usr/bin/python3", "usr/local/bin/python3", "bin/python3"]
        .iter()
        .find_map(|c| {
            let host = source.join(c);
            let real = std::fs::canonicalize(&host).ok()?;
            // Under --rootfs, absolute symlinks resolve on the host; check the file itself exists.
            (is_elf(&real) || source != Path::new("/")).then(|| Python {
                exe: Path::new("/").join(c),
                binds: vec![],
            })
        })
}

/// Resolves `--python PATH`: asks the interpreter itself where it lives (sys.executable,
/// sys.prefix, sys.base_prefix), which sees through pyenv shims and virtualenvs alike.
pub fn resolve_python(path: &Path, source: &Path) -> Result<Python> {
    if source != Path::new("/") {
        // Inside a --rootfs the path names the rootfs's own interpreter.
        if !source.join(path.strip_prefix("/").unwrap_or(path)).exists() {
            return Err(Error::invalid(
                "python",
                format!(
                    "{} does not exist in the rootfs {}",
                    path.display(),
                    source.display()
                ),
            ));
        }
        return Ok(Python {
            exe: path.to_path_buf(),
            binds: vec![],
        });
    }
    if !path.exists() {
        return Err(Error::invalid(
            "python",
            format!("{} does not exist", path.display()),
        ));
    }
    let out = std::process::Command::new(path)
        .args([
            "-I",
            "-c",
            "import sys, json; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix]))",
        ])
        .output()
        .map_err(|e| Error::invalid("python", format!("cannot run {}: {e}", path.display())))?;
    if !out.status.success() {
        return Err(Error::invalid(
            "python",
            format!(
                "{} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let v: Vec<String> = serde_json::from_slice(&out.stdout).map_err(|_| {
        Error::invalid(
            "python",
            format!("{} is not a Python interpreter", path.display()),
        )
    })?;
    let exe = PathBuf::from(&v[0]);
    let real = std::fs::canonicalize(&exe).map_err(|e| Error::io("resolving", exe.clone(), e))?;
    if !is_elf(&real) {
        return Err(Error::invalid(
            "python",
            format!(
                "{} resolves to {}, which is not an executable binary",
                path.display(),
                real.display()
            ),
        ));
    }
    let mut binds = Vec::new();
    for dir in [
        PathBuf::from(&v[1]),
        PathBuf::from(&v[2]),
        real.parent().unwrap_or(Path::new("/")).to_path_buf(),
    ] {
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if !under_system(&dir) && !binds.iter().any(|b: &PathBuf| dir.starts_with(b)) {
            binds.retain(|b: &PathBuf| !b.starts_with(&dir));
            binds.push(dir);
        }
    }
    // A venv's bin/python is a symlink into the base installation; keep the venv's path so
    // Python finds pyvenv.cfg, unless the venv itself was not requested.
    Ok(Python { exe, binds })
}
