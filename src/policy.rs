//! The prepared policy a `Sandbox` shares with its instances: network mode, binds, the mount
//! plan as data, compiled filters and limits, and how a `Command` resolves against it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::{validate_env, Command, Program};
use crate::defaults;
use crate::error::{Error, Result};
use crate::gpu::{DevNode, GpuSetup};
use crate::interp::Python;
use crate::ns::mount::{
    Entry, MountPlan, PlanBuilder, DEV_ATTRS, DEV_DIR_ATTRS, RO_ATTRS, RW_ATTRS,
};
use crate::ns::template::{Template, DEV_DIRS, DEV_LINKS, DEV_NODES, SYSTEM_DIRS};
use crate::ns::user::SANDBOX_ID;
use crate::outcome::Enforcement;

/// Network access of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Net {
    /// A network namespace with no interfaces up: nothing is reachable.
    #[default]
    None,
    /// A private loopback (`lo` up) in the instance's own namespace; the host is not reachable.
    Loopback,
}

/// A network mode that `Net::from_str` does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown network mode {value:?} (expected none or loopback)")]
#[non_exhaustive]
pub struct NetParseError {
    /// The text given.
    pub value: String,
}

impl std::str::FromStr for Net {
    type Err = NetParseError;
    fn from_str(s: &str) -> std::result::Result<Net, NetParseError> {
        match s {
            "none" => Ok(Net::None),
            "loopback" => Ok(Net::Loopback),
            _ => Err(NetParseError {
                value: s.to_string(),
            }),
        }
    }
}

/// One bind of a host path into the instance.
#[derive(Clone, Debug)]
pub struct Bind {
    pub host: PathBuf,
    pub inside: PathBuf,
    pub writable: bool,
}

/// Size of a GPU instance's own `/dev` tmpfs (a few empty files and links).
const DEV_TMPFS_SIZE: u64 = 64 << 10;

/// What the mount plan is made from (kept to make GPU instances' plans, which differ in `/dev`).
pub(crate) struct PlanSpec {
    pub source: PathBuf,
    pub shm_size: u64,
    pub tmp_size: u64,
    pub work_size: u64,
    /// Sorted parents first.
    pub binds: Vec<Bind>,
    /// Bound on the ptys of the instance's own devpts.
    pub max_ptys: u32,
}

/// The mount plan of DESIGN.md §3 step 6, as data. `gpu_nodes`: an instance with GPUs, which
/// gets a `/dev` of its own (a tmpfs made read-only once populated) with these nodes bound
/// besides the usual ones; mount points for them in the shared template would show up in every
/// instance.
pub(crate) fn mount_plan(t: &Template, s: &PlanSpec, gpu_nodes: Option<&[DevNode]>) -> MountPlan {
    let mut p = PlanBuilder::new(&t.root);
    for d in SYSTEM_DIRS {
        let src = s.source.join(d);
        if std::fs::symlink_metadata(&src)
            .map(|m| m.is_dir())
            .unwrap_or(false)
            && t.root.join(d).is_dir()
        {
            p.bind(&src, &Path::new("/").join(d), true, RO_ATTRS);
        }
    }
    p.proc(Path::new("/proc"));
    let dev = Path::new("/dev");
    if let Some(nodes) = gpu_nodes {
        p.tmpfs(dev, DEV_TMPFS_SIZE, 0o755, Some(SANDBOX_ID), false);
        let mut entries: Vec<(&str, Entry)> = DEV_DIRS.iter().map(|d| (*d, Entry::Dir)).collect();
        entries.extend(DEV_NODES.iter().map(|n| (*n, Entry::File)));
        entries.extend(nodes.iter().map(|n| (n.name.as_str(), Entry::File)));
        entries.extend(
            DEV_LINKS
                .iter()
                .map(|(n, target)| (*n, Entry::Symlink(CString::new(*target).expect("no NUL")))),
        );
        p.populate(dev, entries);
    }
    for n in DEV_NODES {
        p.bind(&dev.join(n), &dev.join(n), false, DEV_ATTRS);
    }
    p.devpts(&dev.join("pts"), SANDBOX_ID, s.max_ptys);
    if let Some(nodes) = gpu_nodes {
        for n in nodes {
            p.bind(&n.source, &dev.join(&n.name), false, DEV_ATTRS);
        }
        p.setattr(dev, DEV_DIR_ATTRS);
    }
    p.tmpfs(Path::new("/dev/shm"), s.shm_size, 0o1777, None, false);
    p.tmpfs(Path::new("/tmp"), s.tmp_size, 0o1777, None, false);
    p.tmpfs(
        Path::new(defaults::WORK_DIR),
        s.work_size,
        0o755,
        Some(SANDBOX_ID),
        true,
    );
    for bind in &s.binds {
        if in_instance_tmpfs(&bind.inside) {
            p.mkdir_p(&bind.inside);
        }
        p.bind(
            &bind.host,
            &bind.inside,
            true,
            if bind.writable { RW_ATTRS } else { RO_ATTRS },
        );
    }
    p.finish()
}

/// Whether `inside` lies in a tmpfs each instance mounts fresh (so its mount point must be made
/// there, not in the template). Only interpreter binds can be there: `--ro`/`--rw` refuse it.
pub(crate) fn in_instance_tmpfs(inside: &Path) -> bool {
    inside.starts_with("/tmp") || inside.starts_with("/dev/shm")
}

/// Everything a `Sandbox` shares with its instances.
pub(crate) struct Policy {
    pub timeout: Duration,
    pub output_limit: u64,
    pub env: Vec<(String, String)>,
    pub python: Option<Python>,
    pub template: Template,
    /// The plan of instances without GPUs (those with GPUs get one of their own).
    pub plan: MountPlan,
    pub plan_spec: PlanSpec,
    pub gpu: Option<GpuSetup>,
    pub state_dir: PathBuf,
    pub net: Net,
    pub hostname: CString,
    pub enforcement: Enforcement,
    pub seccomp: Option<crate::seccomp::Compiled>,
    pub landlock: crate::landlock::Plan,
    pub limits: crate::cgroup::Limits,
    pub cpu_time: Option<Duration>,
    pub ncpu: usize,
    pub strict: bool,
}

/// Turns a command into argv, envp and candidate executable paths.
pub(crate) fn resolve(
    inner: &Policy,
    cmd: &Command,
) -> Result<(Vec<CString>, Vec<CString>, Vec<CString>)> {
    validate_env(&cmd.env)?;
    let cs = |b: &[u8], what: &'static str| {
        CString::new(b).map_err(|_| Error::invalid(what, "contains a NUL byte"))
    };
    let python = || {
        inner.python.as_ref().ok_or_else(|| {
            Error::invalid(
                "python",
                "no python3 found in /usr/bin or /usr/local/bin; pass --python PATH",
            )
        })
    };
    let argv: Vec<CString> = match &cmd.program {
        Program::Argv(v) => v
            .iter()
            .map(|a| cs(a.as_bytes(), "argument"))
            .collect::<Result<_>>()?,
        Program::PythonCode(code) => {
            let py = python()?;
            vec![
                cs(py.exe.as_os_str().as_bytes(), "python")?,
                CString::new("-c").unwrap(),
                cs(code.as_bytes(), "code")?,
            ]
        }
        Program::PythonScript(path, args) => {
            let py = python()?;
            let mut v = vec![
                cs(py.exe.as_os_str().as_bytes(), "python")?,
                cs(path.as_bytes(), "script")?,
            ];
            for a in args {
                v.push(cs(a.as_bytes(), "argument")?);
            }
            v
        }
    };
    if argv.is_empty() || argv[0].as_bytes().is_empty() {
        return Err(Error::invalid("command", "empty program name"));
    }
    let mut env = defaults::environment();
    for (k, v) in inner.env.iter().chain(&cmd.env) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let envp = env
        .iter()
        .map(|(k, v)| cs(format!("{k}={v}").as_bytes(), "env"))
        .collect::<Result<Vec<_>>>()?;
    let arg0 = argv[0].as_bytes();
    let paths = if arg0.contains(&b'/') {
        vec![argv[0].clone()]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| {
                let mut b = d.trim_end_matches('/').as_bytes().to_vec();
                b.push(b'/');
                b.extend_from_slice(arg0);
                cs(&b, "path")
            })
            .collect::<Result<Vec<_>>>()?
    };
    Ok((argv, envp, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_modes_parse_and_unknown_ones_are_named() {
        assert_eq!("none".parse::<Net>(), Ok(Net::None));
        assert_eq!("loopback".parse::<Net>(), Ok(Net::Loopback));
        let e = "host".parse::<Net>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown network mode \"host\" (expected none or loopback)"
        );
        assert_eq!(e.value, "host");
    }
}
