//! Which cgroups this process can make instances' cgroups beneath: the layout from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`, delegation, and moving into a leaf.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{CgroupError, LeafError};
use super::files::read;
use super::Setup;
use crate::probe::{self, CgroupLayout, CgroupMount};

/// What detection reads from the host, gathered in one place so tests can hand it fixtures.
#[derive(Clone, Debug)]
pub(super) struct Host {
    pub layout: CgroupLayout,
    /// The mounted hierarchies; their paths are where the cgroup files are read and written.
    pub mounts: Vec<CgroupMount>,
    /// The lines of `/proc/self/cgroup` (`ID:CONTROLLERS:PATH`).
    pub own_cgroups: Vec<String>,
    pub euid: u32,
    pub pid: u32,
    /// `RSANDBOX_NO_CGROUPS` is set.
    pub disabled: bool,
    /// `RSANDBOX_CGROUP`: the delegated cgroup to make instances beneath.
    pub delegated: Option<PathBuf>,
}

impl Host {
    /// This process on this host: the cached probe and the environment.
    pub(super) fn current() -> Host {
        let p = probe::host();
        Host {
            layout: p.cgroup_layout,
            mounts: p.cgroup_mounts.clone(),
            own_cgroups: p.own_cgroups.clone(),
            euid: crate::sys::ids().0,
            pid: std::process::id(),
            disabled: std::env::var_os("RSANDBOX_NO_CGROUPS").is_some(),
            delegated: std::env::var_os("RSANDBOX_CGROUP").map(PathBuf::from),
        }
    }

    /// A host described by the text of `mountinfo` and `cgroup` (`/proc/self/...`), with every
    /// mount point taken below `root` (a fixture directory; `/` for the real one).
    #[cfg(test)]
    pub(super) fn from_text(root: &Path, mountinfo: &str, cgroup: &str) -> Host {
        let mounts: Vec<CgroupMount> = probe::parse_cgroup_mounts(mountinfo)
            .into_iter()
            .map(|m| CgroupMount {
                path: root.join(m.path.strip_prefix("/").unwrap_or(&m.path)),
                ..m
            })
            .collect();
        let has = |v| mounts.iter().any(|m| m.version == v);
        let layout = match (has(1), has(2)) {
            (true, true) => CgroupLayout::Hybrid,
            (true, false) => CgroupLayout::V1,
            (false, true) => CgroupLayout::V2,
            (false, false) => CgroupLayout::None,
        };
        Host {
            layout,
            mounts,
            own_cgroups: cgroup.lines().map(str::to_string).collect(),
            euid: 1000,
            pid: 4242,
            disabled: false,
            delegated: None,
        }
    }

    /// This process's cgroup path in the hierarchy whose `/proc/self/cgroup` line matches.
    fn own_path(&self, matches: impl Fn(&str) -> bool) -> Option<String> {
        self.own_cgroups.iter().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            matches(ctl).then(|| path.to_string())
        })
    }
}

/// Where instances' cgroups go on `host`, or why cgroups cannot be used there.
pub(super) fn detect(host: &Host) -> Result<Setup, CgroupError> {
    if host.disabled {
        return Err(CgroupError::Disabled);
    }
    match host.layout {
        CgroupLayout::V2 => detect_v2(host),
        // Hybrid hosts keep their controllers in v1.
        CgroupLayout::V1 | CgroupLayout::Hybrid => detect_v1(host),
        CgroupLayout::None => Err(CgroupError::NotMounted),
    }
}

/// The controllers rsandbox enables for its instances, among those `dir` offers.
fn wanted_controllers(dir: &Path) -> Result<Vec<&'static str>, CgroupError> {
    let controllers =
        read(&dir.join("cgroup.controllers")).map_err(|source| CgroupError::Controllers {
            dir: dir.to_path_buf(),
            source,
        })?;
    let want: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| controllers.split_whitespace().any(|x| x == *c))
        .collect();
    if !want.contains(&"memory") || !want.contains(&"pids") {
        return Err(CgroupError::MissingControllers {
            dir: dir.to_path_buf(),
            has: controllers.trim().to_string(),
        });
    }
    Ok(want)
}

/// Enables `want` in `dir/cgroup.subtree_control` (those not enabled yet).
fn enable_controllers(dir: &Path, want: &[&str]) -> std::io::Result<()> {
    let enabled = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = want
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|x| x == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), missing.join(" "))
}

/// Prefix of the leaf a supervisor moves itself into (`BASE/rsandbox-supervisor-PID`).
const SUPERVISOR_LEAF: &str = "rsandbox-supervisor-";

/// Moves process `me` into a fresh leaf below `dir` when it is the only process in `dir`, so
/// that `dir` can enable controllers for its children (the no-internal-processes rule): what a
/// service started with systemd's `Delegate=yes` is expected to do. Empty leaves that earlier
/// supervisors left behind are removed on the way (rmdir fails on a cgroup with processes).
fn move_into_leaf(dir: &Path, me: u32) -> Result<(), LeafError> {
    let procs = read(&dir.join("cgroup.procs")).map_err(|source| LeafError::Procs {
        dir: dir.to_path_buf(),
        source,
    })?;
    let others: Vec<&str> = procs
        .split_whitespace()
        .filter(|p| *p != me.to_string())
        .collect();
    if !others.is_empty() {
        return Err(LeafError::OtherProcesses {
            pids: others.join(" "),
        });
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(SUPERVISOR_LEAF) {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
    let leaf = dir.join(format!("{SUPERVISOR_LEAF}{me}"));
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(LeafError::Create { leaf, source }),
    }
    fs::write(leaf.join("cgroup.procs"), me.to_string())
        .map_err(|source| LeafError::Move { leaf, source })
}

/// v2: instances go below `RSANDBOX_CGROUP` when set (a delegated cgroup with no processes of
/// its own), else below this process's cgroup, which it leaves for a leaf of its own if needed.
fn detect_v2(host: &Host) -> Result<Setup, CgroupError> {
    let mount = host
        .mounts
        .iter()
        .find(|m| m.version == 2)
        .ok_or(CgroupError::NoCgroup2Mount)?;
    if let Some(dir) = &host.delegated {
        if !dir.starts_with(&mount.path) || !dir.join("cgroup.procs").exists() {
            return Err(CgroupError::NotBelowMount {
                dir: dir.clone(),
                mount: mount.path.clone(),
            });
        }
        let want = wanted_controllers(dir)?;
        enable_controllers(dir, &want).map_err(|source| CgroupError::EnableInOverride {
            dir: dir.clone(),
            controllers: want.join(" "),
            source,
        })?;
        return Ok(Setup::V2 { base: dir.clone() });
    }
    let own = host
        .own_path(|c| c.is_empty())
        .ok_or(CgroupError::NoOwnV2Cgroup)?;
    let dir = mount.path.join(own.trim_start_matches('/'));
    let want = wanted_controllers(&dir)?;
    match enable_controllers(&dir, &want) {
        Ok(()) => {}
        // EBUSY: processes live in our cgroup (the no-internal-processes rule).
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            move_into_leaf(&dir, host.pid).map_err(|reason| CgroupError::Leaf {
                dir: dir.clone(),
                reason,
            })?;
            enable_controllers(&dir, &want).map_err(|source| CgroupError::EnableAfterLeaf {
                dir: dir.clone(),
                controllers: want.join(" "),
                source,
            })?;
        }
        Err(source) => {
            return Err(CgroupError::Enable {
                dir,
                controllers: want.join(" "),
                source,
            })
        }
    }
    Ok(Setup::V2 { base: dir })
}

/// v1 (and hybrid hosts): this process's cgroup in each hierarchy rsandbox uses; the devices
/// hierarchy is optional. Root only: v1 hierarchies are not delegated.
fn detect_v1(host: &Host) -> Result<Setup, CgroupError> {
    if host.euid != 0 {
        return Err(CgroupError::V1Unprivileged);
    }
    let mut bases = Vec::new();
    for ctl in ["memory", "cpu", "cpuacct", "pids", "devices"] {
        let mount = host
            .mounts
            .iter()
            .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl));
        let Some(mount) = mount else {
            if ctl == "devices" {
                continue;
            }
            return Err(CgroupError::NoV1Hierarchy { controller: ctl });
        };
        let own = host
            .own_path(|c| c.split(',').any(|x| x == ctl))
            .unwrap_or_else(|| "/".into());
        bases.push((ctl, mount.path.join(own.trim_start_matches('/'))));
    }
    Ok(Setup::V1 { bases })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ubuntu 20.04-style hybrid host: v1 controllers (cpu and cpuacct co-mounted), the
    /// named systemd hierarchy, and a cgroup2 at `unified` that has only hugetlb.
    const HYBRID_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
33 25 0:31 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
34 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,net_cls,net_prio
";

    const HYBRID_CGROUP: &str = "\
12:net_cls,net_prio:/
11:devices:/system.slice/app.service
10:pids:/system.slice/app.service
9:memory:/system.slice/app.service
8:cpu,cpuacct:/system.slice
1:name=systemd:/system.slice/app.service
0::/system.slice/app.service
";

    const V2_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
";

    const V2_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";

    fn cat(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A pure v2 host below `root` whose own cgroup offers `controllers` and holds `procs`.
    fn v2_host(root: &Path, controllers: &str, procs: &str) -> (Host, PathBuf) {
        let host = Host::from_text(root, V2_MOUNTINFO, V2_CGROUP);
        let own = root.join("sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope");
        fs::create_dir_all(&own).unwrap();
        fs::write(own.join("cgroup.controllers"), controllers).unwrap();
        fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        fs::write(own.join("cgroup.procs"), procs).unwrap();
        (host, own)
    }

    #[test]
    fn hybrid_layout_uses_the_v1_hierarchies() {
        let root = Path::new("/fixture");
        let mut host = Host::from_text(root, HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(host.layout, CgroupLayout::Hybrid);
        let v2: Vec<&CgroupMount> = host.mounts.iter().filter(|m| m.version == 2).collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].path, root.join("sys/fs/cgroup/unified"));
        assert!(
            !host.mounts.iter().any(|m| m.path.ends_with("systemd")),
            "a named hierarchy has no controller"
        );
        let e = detect(&host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cgroup v1 hierarchies are not delegated to unprivileged users"
        );
        host.euid = 0;
        let Setup::V1 { bases } = detect(&host).unwrap() else {
            panic!("a hybrid host keeps its controllers in v1")
        };
        let cg = |h: &str, p: &str| root.join("sys/fs/cgroup").join(h).join(p);
        assert_eq!(
            bases,
            vec![
                ("memory", cg("memory", "system.slice/app.service")),
                ("cpu", cg("cpu,cpuacct", "system.slice")),
                ("cpuacct", cg("cpu,cpuacct", "system.slice")),
                ("pids", cg("pids", "system.slice/app.service")),
                ("devices", cg("devices", "system.slice/app.service")),
            ]
        );
    }

    #[test]
    fn v1_without_devices_is_fine_and_without_memory_is_not() {
        let drop_line = |text: &str, word: &str| -> String {
            text.lines()
                .filter(|l| !l.contains(word))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let no_devices = drop_line(HYBRID_MOUNTINFO, "devices");
        let mut host = Host::from_text(Path::new("/"), &no_devices, HYBRID_CGROUP);
        host.euid = 0;
        let Ok(Setup::V1 { bases }) = detect(&host) else {
            panic!("v1 without a devices hierarchy")
        };
        assert_eq!(
            bases.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            ["memory", "cpu", "cpuacct", "pids"]
        );
        assert_eq!(
            bases[0].1,
            Path::new("/sys/fs/cgroup/memory/system.slice/app.service")
        );
        let no_memory = drop_line(HYBRID_MOUNTINFO, "memory");
        let mut host = Host::from_text(Path::new("/"), &no_memory, HYBRID_CGROUP);
        host.euid = 0;
        let e = detect(&host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no cgroup v1 hierarchy with the memory controller"
        );
        // A hierarchy missing from /proc/self/cgroup is taken at its root.
        let mut host = Host::from_text(Path::new("/"), HYBRID_MOUNTINFO, "0::/\n");
        host.euid = 0;
        let Ok(Setup::V1 { bases }) = detect(&host) else {
            panic!("v1")
        };
        assert_eq!(bases[3].1, Path::new("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn pure_v2_enables_the_controllers_in_its_own_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, own) = v2_host(
            tmp.path(),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
            "",
        );
        assert_eq!(host.layout, CgroupLayout::V2);
        let Ok(Setup::V2 { base }) = detect(&host) else {
            panic!("a v2 setup")
        };
        assert_eq!(base, own);
        assert_eq!(
            cat(&own.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        // Enabled already: nothing is written.
        fs::write(own.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        detect(&host).unwrap();
        assert_eq!(
            cat(&own.join("cgroup.subtree_control")),
            "cpu memory pids\n"
        );
    }

    #[test]
    fn v2_without_memory_or_pids_says_what_it_has() {
        let tmp = tempfile::tempdir().unwrap();
        let (host, own) = v2_host(tmp.path(), "cpu io pids\n", "");
        let e = detect(&host).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} lacks the memory or pids controller (has: cpu io pids)",
                own.display()
            )
        );
        // Without the cpu controller: no CPU quota, but cgroups all the same.
        fs::write(own.join("cgroup.controllers"), "memory pids").unwrap();
        assert!(detect(&host).is_ok());
        assert_eq!(cat(&own.join("cgroup.subtree_control")), "+memory +pids");
    }

    #[test]
    fn v2_errors_keep_their_text() {
        let tmp = tempfile::tempdir().unwrap();
        let host = Host::from_text(tmp.path(), V2_MOUNTINFO, "");
        assert_eq!(
            detect(&host).unwrap_err().to_string(),
            "no 0:: line in /proc/self/cgroup"
        );
        let host = Host::from_text(tmp.path(), V2_MOUNTINFO, V2_CGROUP);
        let own = tmp
            .path()
            .join("sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope");
        let e = detect(&host).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", own.display())), "{e}");
        let none = Host::from_text(tmp.path(), "", "");
        assert_eq!(none.layout, CgroupLayout::None);
        assert_eq!(
            detect(&none).unwrap_err().to_string(),
            "no cgroup filesystem is mounted"
        );
        let off = Host {
            disabled: true,
            ..none
        };
        assert_eq!(
            detect(&off).unwrap_err().to_string(),
            "disabled by RSANDBOX_NO_CGROUPS"
        );
    }

    #[test]
    fn delegated_cgroup_must_lie_below_the_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut host, own) = v2_host(tmp.path(), "memory pids cpu", "");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("cgroup.procs"), "").unwrap();
        host.delegated = Some(elsewhere.clone());
        assert_eq!(
            detect(&host).unwrap_err().to_string(),
            format!(
                "RSANDBOX_CGROUP={}: not a cgroup below the cgroup2 mount {}",
                elsewhere.display(),
                tmp.path().join("sys/fs/cgroup").display()
            )
        );
        // Below the mount, with processes in our own cgroup: used as it is.
        fs::write(own.join("cgroup.procs"), "1 2 3").unwrap();
        host.delegated = Some(own.clone());
        let Ok(Setup::V2 { base }) = detect(&host) else {
            panic!("the delegated cgroup")
        };
        assert_eq!(base, own);
        assert_eq!(
            cat(&own.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
    }

    #[test]
    fn a_lone_supervisor_moves_into_a_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("cgroup.procs"), "4242\n").unwrap();
        fs::create_dir(dir.join("rsandbox-supervisor-17")).unwrap();
        fs::create_dir(dir.join("rsandbox-7")).unwrap();
        move_into_leaf(dir, 4242).unwrap();
        assert!(
            !dir.join("rsandbox-supervisor-17").exists(),
            "stale leaf removed"
        );
        assert!(dir.join("rsandbox-7").is_dir(), "an instance is not a leaf");
        assert_eq!(
            cat(&dir.join("rsandbox-supervisor-4242/cgroup.procs")),
            "4242"
        );
        // Again (the leaf exists now): fine.
        move_into_leaf(dir, 4242).unwrap();
    }

    #[test]
    fn a_shared_cgroup_is_not_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("cgroup.procs"), "1\n4242\n77\n").unwrap();
        let e = CgroupError::Leaf {
            dir: dir.to_path_buf(),
            reason: move_into_leaf(dir, 4242).unwrap_err(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "{}: other processes (1 77) live in it, so it cannot enable controllers for \
                 children: start rsandbox from a leaf cgroup and set RSANDBOX_CGROUP to a \
                 delegated cgroup without processes",
                dir.display()
            )
        );
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "nothing made");
        let gone = dir.join("gone");
        let e = move_into_leaf(&gone, 1).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", gone.display())), "{e}");
    }
}
