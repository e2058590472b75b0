//! Host feature detection, done once per process and cached: user namespaces, the cgroup
//! layout, Landlock, seccomp, and the syscalls the engine relies on.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Serialize;

use crate::sys;

/// The cgroup layout, read from `/proc/self/mountinfo` (never from assumed paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupLayout {
    /// Only cgroup2 is mounted.
    V2,
    /// v1 controllers only.
    V1,
    /// v1 controllers and a cgroup2 mount beside them.
    Hybrid,
    None,
}

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupMount {
    pub version: u8,
    pub path: PathBuf,
    /// v1: the controllers of this hierarchy (`cpu`, `cpuacct`, ...).
    pub controllers: Vec<String>,
}

/// What this host offers.
#[derive(Clone, Debug, Serialize)]
pub struct HostProbe {
    pub kernel: String,
    pub euid: u32,
    /// Whether user namespaces may be created by this user (sysctls; `rsandbox check` also
    /// tries for real).
    pub userns: bool,
    pub userns_note: Option<String>,
    pub cgroup_layout: CgroupLayout,
    pub cgroup_mounts: Vec<CgroupMount>,
    /// This process's cgroup, per hierarchy line of `/proc/self/cgroup`.
    pub own_cgroups: Vec<String>,
    pub landlock_abi: u32,
    pub seccomp: bool,
    pub seccomp_actions: Vec<String>,
}

fn read(path: &str) -> Option<String> {
    crate::sys::host::read_small(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn detect() -> HostProbe {
    let (euid, _) = sys::ids();
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut userns = read("/proc/sys/user/max_user_namespaces")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        > 0;
    let mut userns_note = None;
    if !userns {
        userns_note = Some("user.max_user_namespaces is 0".to_string());
    } else if euid != 0 {
        if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
            userns = false;
            userns_note = Some("kernel.unprivileged_userns_clone is 0".to_string());
        }
        if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            userns = false;
            userns_note = Some("kernel.apparmor_restrict_unprivileged_userns is 1".to_string());
        }
    }
    let cgroup_mounts = parse_cgroup_mounts(&read("/proc/self/mountinfo").unwrap_or_default());
    let has_v1 = cgroup_mounts.iter().any(|m| m.version == 1);
    let has_v2 = cgroup_mounts.iter().any(|m| m.version == 2);
    let cgroup_layout = match (has_v1, has_v2) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::None,
    };
    let own_cgroups = read("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let seccomp_actions: Vec<String> = read("/proc/sys/kernel/seccomp/actions_avail")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    HostProbe {
        kernel,
        euid,
        userns,
        userns_note,
        cgroup_layout,
        cgroup_mounts,
        own_cgroups,
        landlock_abi: sys::landlock_abi(),
        seccomp: !seccomp_actions.is_empty(),
        seccomp_actions,
    }
}

/// The cgroup mounts in `mountinfo`, as the probe reads them: every cgroup2 mount, and
/// each v1 hierarchy with a controller rsandbox knows of (named ones like `name=systemd` are
/// left out).
pub(crate) fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    const KNOWN: [&str; 14] = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "devices",
        "freezer",
        "blkio",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
        "misc",
    ];
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or_default();
        let super_opts = r.nth(1).unwrap_or_default();
        let (version, controllers) = match fstype {
            "cgroup2" => (2, vec![]),
            "cgroup" => (
                1,
                super_opts
                    .split(',')
                    .filter(|o| KNOWN.contains(o))
                    .map(str::to_string)
                    .collect(),
            ),
            _ => continue,
        };
        if version == 1 && controllers.is_empty() {
            continue;
        }
        out.push(CgroupMount {
            version,
            path: mount_point.into(),
            controllers,
        });
    }
    out
}

/// The cached probe of this host.
pub fn host() -> &'static HostProbe {
    static PROBE: OnceLock<HostProbe> = OnceLock::new();
    PROBE.get_or_init(detect)
}
