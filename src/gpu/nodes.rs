//! The device directory's NVIDIA nodes (`nvidiaN` and the control nodes), found by scanning it.
//!
//! NVIDIA's character major is 195 (`/dev/nvidiaN` is minor N, `nvidiactl` 255,
//! `nvidia-modeset` 254), but `nvidia-uvm` and `nvidia-uvm-tools` have a dynamic major, so every
//! node's numbers are read from the directory rather than assumed.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::cgroup::devices::DeviceRule;

/// Control nodes bound with any GPU, in this order, when the device directory has them.
const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// One device node of the device directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevNode {
    /// Its name in `/dev` (e.g. `nvidia0`), the same inside.
    pub name: String,
    /// The host path it is bound from.
    pub(crate) source: PathBuf,
    pub(crate) major: u32,
    pub(crate) minor: u32,
}

impl DevNode {
    /// The device controller's rule for it: read and write, no mknod.
    pub(crate) fn rule(&self) -> DeviceRule {
        DeviceRule::char_rw(self.major, self.minor)
    }
}

/// The NVIDIA nodes of a device directory: the host's `/dev`, or a test's directory of fake
/// nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGpus {
    /// The directory scanned.
    pub dev_dir: PathBuf,
    /// `nvidiaN` by N.
    pub gpus: BTreeMap<u32, DevNode>,
    /// The control nodes present, in `CONTROL_NODES` order.
    pub control: Vec<DevNode>,
}

impl HostGpus {
    /// Lists the `nvidiaN` character devices and control nodes in `dev_dir`.
    pub fn scan(dev_dir: &Path) -> HostGpus {
        let mut gpus = BTreeMap::new();
        let mut control = Vec::new();
        for e in std::fs::read_dir(dev_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match classify(&name) {
                Some(NodeName::Gpu(n)) => {
                    if let Some(node) = char_node(&name, &e.path()) {
                        gpus.insert(n, node);
                    }
                }
                Some(NodeName::Control) => control.extend(char_node(&name, &e.path())),
                None => {}
            }
        }
        control.sort_by_key(|n: &DevNode| CONTROL_NODES.iter().position(|c| *c == n.name));
        HostGpus {
            dev_dir: dev_dir.to_path_buf(),
            gpus,
            control,
        }
    }

    /// The GPU indices (the N of `nvidiaN`), ascending.
    pub(crate) fn indices(&self) -> Vec<u32> {
        self.gpus.keys().copied().collect()
    }
}

/// What a name in the device directory is.
#[derive(Debug, PartialEq, Eq)]
enum NodeName {
    /// `nvidiaN`.
    Gpu(u32),
    /// One of [`CONTROL_NODES`].
    Control,
}

/// What `name` is: a control node, `nvidiaN` with N written canonically (`nvidia01` is not a
/// GPU), or neither.
fn classify(name: &str) -> Option<NodeName> {
    if CONTROL_NODES.contains(&name) {
        return Some(NodeName::Control);
    }
    let digits = name.strip_prefix("nvidia")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok().map(NodeName::Gpu)
}

/// The node at `path` if it is a character device (following symlinks).
fn char_node(name: &str, path: &Path) -> Option<DevNode> {
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let rdev = m.rdev();
    Some(DevNode {
        name: name.to_string(),
        source: path.to_path_buf(),
        major: libc::major(rdev),
        minor: libc::minor(rdev),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_classified() {
        assert_eq!(classify("nvidia0"), Some(NodeName::Gpu(0)));
        assert_eq!(classify("nvidia12"), Some(NodeName::Gpu(12)));
        assert_eq!(classify("nvidiactl"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-uvm"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-uvm-tools"), Some(NodeName::Control));
        assert_eq!(classify("nvidia-modeset"), Some(NodeName::Control));
        for other in [
            "nvidia",
            "nvidia01",
            "nvidia-caps",
            "nvidiafoo",
            "nvidia0a",
            "null",
            "nvme0",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn scan_takes_character_devices_only() {
        let d = tempfile::tempdir().unwrap();
        // Symlinks to /dev/null are character devices (1:3) once followed.
        std::os::unix::fs::symlink("/dev/null", d.path().join("nvidia1")).unwrap();
        std::os::unix::fs::symlink("/dev/null", d.path().join("nvidia-uvm")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("nvidiactl")).unwrap();
        std::fs::write(d.path().join("nvidia0"), b"").unwrap(); // a file, not a device
        std::fs::create_dir(d.path().join("nvidia-caps")).unwrap();
        let h = HostGpus::scan(d.path());
        assert_eq!(h.indices(), [1]);
        assert_eq!((h.gpus[&1].major, h.gpus[&1].minor), (1, 3));
        let names: Vec<&str> = h.control.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["nvidiactl", "nvidia-uvm"]);
        assert_eq!(h.control[0].rule(), DeviceRule::char_rw(1, 5));
        assert!(HostGpus::scan(Path::new("/nonexistent")).gpus.is_empty());
    }
}
