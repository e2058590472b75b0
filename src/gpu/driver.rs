//! The driver's user-space files (libraries, `nvidia-smi`) and how an instance gets to see them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the driver's user-space libraries are looked for, besides the loader cache
/// (`ldconfig -p`).
const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// Where the driver's tools are looked for (then this process's `PATH`).
const TOOL_DIRS: &[&str] = &[
    "/usr/local/nvidia/bin",
    "/usr/bin",
    "/usr/local/bin",
    "/bin",
    "/usr/sbin",
];

/// The tools bound with GPUs.
const TOOLS: &[&str] = &["nvidia-smi"];

/// File-name prefixes of the driver's user-space libraries.
const LIBRARY_PREFIXES: &[&str] = &[
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-",
    "libnvcuvid.so",
    "libnvoptix.so",
];

/// Directories the loader searches without `LD_LIBRARY_PATH` on Debian-like systems (its
/// built-in paths and the multiarch ones in `ld.so.conf`).
const LOADER_DIRS: &[&str] = &[
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/i386-linux-gnu",
    "/usr/lib/i386-linux-gnu",
];

/// The driver's user-space files: libraries (`libcuda`, `libnvidia-*`, ...) and tools
/// (`nvidia-smi`), as found on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverFiles {
    pub libraries: Vec<PathBuf>,
    pub tools: Vec<PathBuf>,
}

impl DriverFiles {
    /// The host's driver files: libraries from the loader cache and `LIBRARY_DIRS`, tools
    /// from `TOOL_DIRS` and `PATH`. Looked up once per process.
    pub fn host() -> &'static DriverFiles {
        static HOST: OnceLock<DriverFiles> = OnceLock::new();
        HOST.get_or_init(DriverFiles::scan_host)
    }

    fn scan_host() -> DriverFiles {
        let mut tool_dirs: Vec<PathBuf> = TOOL_DIRS.iter().map(PathBuf::from).collect();
        if let Some(path) = std::env::var_os("PATH") {
            tool_dirs.extend(std::env::split_paths(&path).filter(|d| d.is_absolute()));
        }
        let lib_dirs: Vec<PathBuf> = LIBRARY_DIRS.iter().map(PathBuf::from).collect();
        let mut found = DriverFiles::scan(&lib_dirs, &tool_dirs);
        for lib in ldconfig_libraries() {
            if lib.exists() && !found.libraries.contains(&lib) {
                found.libraries.push(lib);
            }
        }
        found
    }

    /// The driver files in these directories (no loader cache): libraries by name within each
    /// directory, directories in the order given; each tool from the first directory that has it.
    pub(crate) fn scan(lib_dirs: &[PathBuf], tool_dirs: &[PathBuf]) -> DriverFiles {
        let mut found = DriverFiles::default();
        for d in lib_dirs {
            for p in driver_libraries_in(d) {
                if !found.libraries.contains(&p) {
                    found.libraries.push(p);
                }
            }
        }
        for t in TOOLS {
            if let Some(p) = tool_dirs.iter().map(|d| d.join(t)).find(|p| p.is_file()) {
                found.tools.push(p);
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.libraries.is_empty() && self.tools.is_empty()
    }
}

fn is_driver_library(name: &str) -> bool {
    LIBRARY_PREFIXES.iter().any(|p| name.starts_with(p)) && name.contains(".so")
}

/// The driver libraries directly in `dir`, sorted by name.
fn driver_libraries_in(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_driver_library(n))
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Driver libraries in the loader cache: the `=> PATH` of `ldconfig -p` lines.
fn ldconfig_libraries() -> Vec<PathBuf> {
    let Some(ldconfig) = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        return Vec::new();
    };
    let Ok(out) = std::process::Command::new(ldconfig)
        .arg("-p")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, path) = l.trim().split_once(" => ")?;
            let name = name.split_whitespace().next()?;
            is_driver_library(name).then(|| PathBuf::from(path.trim()))
        })
        .collect()
}

/// Whether a host directory is visible inside an instance at the same path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Already bound (a system directory, an interpreter or `--ro`/`--rw` bind).
    Visible,
    /// Not visible: bind it read-only at the same path.
    Bind,
    /// Not bindable (a path rsandbox manages, or a system directory taken from `--rootfs`).
    Skip,
}

/// What an instance with GPUs needs for the driver's files: directories to bind read-only at
/// their own path, and directories for `LD_LIBRARY_PATH` and `PATH`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DriverPlan {
    pub(crate) bind_dirs: Vec<PathBuf>,
    pub(crate) library_path: Vec<PathBuf>,
    pub(crate) path: Vec<PathBuf>,
}

/// The plan for `files`, given which directories are visible inside. Directories are taken
/// canonical (symlinks resolved), so they name the same files inside once bound; a file behind
/// a symlink needs both the link's directory and the target's.
pub(crate) fn driver_plan(files: &DriverFiles, coverage: impl Fn(&Path) -> Coverage) -> DriverPlan {
    let mut plan = DriverPlan::default();
    let default_path: Vec<&str> = crate::defaults::PATH.split(':').collect();
    let libraries = files.libraries.iter().map(|f| (f, false));
    let tools = files.tools.iter().map(|f| (f, true));
    for (file, is_tool) in libraries.chain(tools) {
        let Some(dir) = plan.bind_for(file, &coverage) else {
            continue;
        };
        let s = dir.to_string_lossy();
        if is_tool && !default_path.contains(&s.as_ref()) {
            push_new(&mut plan.path, dir);
        } else if !is_tool && !LOADER_DIRS.contains(&s.as_ref()) {
            push_new(&mut plan.library_path, dir);
        }
    }
    plan
}

impl DriverPlan {
    /// Adds the directories `file` needs bound (its own and, behind a symlink, its target's) and
    /// returns its canonical directory, or `None` when one of them cannot be made visible.
    fn bind_for(&mut self, file: &Path, coverage: &impl Fn(&Path) -> Coverage) -> Option<PathBuf> {
        let dir = canonical(file.parent()?);
        let target_dir = canonical(file).parent().map(Path::to_path_buf);
        let mut usable = true;
        for d in std::iter::once(dir.clone()).chain(target_dir) {
            match coverage(&d) {
                Coverage::Visible => {}
                Coverage::Bind => push_new(&mut self.bind_dirs, d),
                Coverage::Skip => usable = false,
            }
        }
        usable.then_some(dir)
    }
}

/// `p` with symlinks resolved, or as given when that fails.
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn push_new(v: &mut Vec<PathBuf>, d: PathBuf) {
    if !v.contains(&d) {
        v.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_files_and_plan() {
        let d = tempfile::tempdir().unwrap();
        let lib = d.path().join("lib");
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for f in [
            "libcuda.so.535.1",
            "libnvidia-ml.so.535.1",
            "libc.so.6",
            "libnvidia-notes.txt",
        ] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        std::os::unix::fs::symlink("libcuda.so.535.1", lib.join("libcuda.so.1")).unwrap();
        std::fs::write(bin.join("nvidia-smi"), b"").unwrap();
        let files = DriverFiles::scan(
            std::slice::from_ref(&lib),
            &[PathBuf::from("/nonexistent"), bin.clone()],
        );
        let names: Vec<String> = files
            .libraries
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["libcuda.so.1", "libcuda.so.535.1", "libnvidia-ml.so.535.1"]
        );
        assert_eq!(files.tools, [bin.join("nvidia-smi")]);

        let canon_lib = std::fs::canonicalize(&lib).unwrap();
        let canon_bin = std::fs::canonicalize(&bin).unwrap();
        let plan = driver_plan(&files, |_| Coverage::Bind);
        assert_eq!(plan.bind_dirs, [canon_lib.clone(), canon_bin.clone()]);
        assert_eq!(plan.library_path, std::slice::from_ref(&canon_lib));
        assert_eq!(plan.path, std::slice::from_ref(&canon_bin));
        // Visible where they are: nothing to bind, still on the search paths.
        let plan = driver_plan(&files, |_| Coverage::Visible);
        assert!(plan.bind_dirs.is_empty());
        assert_eq!(plan.library_path, [canon_lib]);
        // Not bindable (e.g. a system dir of another rootfs): neither bound nor searched.
        assert_eq!(
            driver_plan(&files, |_| Coverage::Skip),
            DriverPlan::default()
        );
        // In the loader's and PATH's own directories: nothing to add.
        let std_files = DriverFiles {
            libraries: vec![PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1")],
            tools: vec![PathBuf::from("/usr/bin/nvidia-smi")],
        };
        assert_eq!(
            driver_plan(&std_files, |_| Coverage::Visible),
            DriverPlan::default()
        );
    }
}
