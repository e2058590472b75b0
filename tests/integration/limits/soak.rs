//! A 2,000-run soak that leaves no cgroups (live or dying), locks or processes behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsandbox::{Command, Sandbox, Status};

use super::read_trim;
use crate::util::{self, Fingerprint};

/// Dying (removed but not yet freed) cgroups, per hierarchy rsandbox uses: v1 `num_cgroups` of
/// `/proc/cgroups` less the directories that exist; v2 `nr_dying_descendants` of the base.
fn dying_cgroups() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    match rsandbox::testing::cgroup::setup() {
        Ok(rsandbox::testing::cgroup::Setup::V2 { base }) => {
            let stat = read_trim(&base.join("cgroup.stat"));
            let n = stat
                .lines()
                .find_map(|l| l.strip_prefix("nr_dying_descendants "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            out.insert(base.display().to_string(), n);
        }
        Ok(rsandbox::testing::cgroup::Setup::V1 { bases }) => {
            let table = std::fs::read_to_string("/proc/cgroups").unwrap();
            for (ctl, _) in bases {
                let Some(num) = table.lines().find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.first() == Some(ctl)).then(|| f[2].parse::<i64>().unwrap())
                }) else {
                    continue;
                };
                let mount = rsandbox::probe::host()
                    .cgroup_mounts
                    .iter()
                    .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl))
                    .unwrap();
                let mut dirs = 1;
                let mut stack = vec![mount.path.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            dirs += 1;
                            stack.push(e.path());
                        }
                    }
                }
                out.insert(ctl.to_string(), num - dirs);
            }
        }
        Err(_) => {}
    }
    out
}

/// `rsandbox-*` directories under the supervisor's cgroups (every hierarchy rsandbox uses)
/// that no live supervisor holds: no record for the slot, or one naming this process (whose
/// instances are all gone) or a dead supervisor. Other processes' live instances are fine.
fn orphan_cgroups(sb: &Sandbox) -> BTreeSet<PathBuf> {
    let bases: Vec<PathBuf> = match rsandbox::testing::cgroup::setup() {
        Ok(rsandbox::testing::cgroup::Setup::V2 { base }) => vec![base.clone()],
        Ok(rsandbox::testing::cgroup::Setup::V1 { bases }) => {
            bases.iter().map(|(_, b)| b.clone()).collect()
        }
        Err(_) => Vec::new(),
    };
    let me = std::process::id() as i32;
    let mut out = BTreeSet::new();
    for base in bases {
        for e in std::fs::read_dir(&base).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(slot) = name.strip_prefix("rsandbox-") else {
                continue;
            };
            let record = std::fs::read_to_string(sb.state_dir().join(slot)).ok();
            let held = record
                .and_then(|t| serde_json::from_str::<rsandbox::testing::state::RecordInfo>(&t).ok())
                .is_some_and(|i| {
                    i.supervisor_pid != me
                        && Path::new(&format!("/proc/{}", i.supervisor_pid)).exists()
                });
            if !held {
                out.insert(e.path());
            }
        }
    }
    out
}

/// Who holds each flock, by (major, minor, inode), from `/proc/locks`.
fn flock_holders() -> BTreeMap<(u32, u32, u64), u32> {
    let mut holder = BTreeMap::new();
    for l in std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
    {
        // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" (waiters have "->" after the number)
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            continue;
        }
        let pid = f.get(4).and_then(|p| p.parse::<u32>().ok());
        let id: Vec<&str> = f.get(5).map(|d| d.split(':').collect()).unwrap_or_default();
        if let (Some(pid), [maj, min, ino]) = (pid, id.as_slice()) {
            let (Ok(maj), Ok(min), Ok(ino)) = (
                u32::from_str_radix(maj, 16),
                u32::from_str_radix(min, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            holder.insert((maj, min, ino), pid);
        }
    }
    holder
}

fn holder_of(holders: &BTreeMap<(u32, u32, u64), u32>, path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    holders
        .get(&(libc::major(m.dev()), libc::minor(m.dev()), m.ino()))
        .copied()
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The fingerprint of what this process is answerable for. On a host shared with other test
/// runs (as any user), their live instances use the same host uid range and, as root, the same
/// state directory: their records are left out (ours are those we hold or that name us as
/// supervisor, held or not), and so are the processes beneath another process that holds a
/// record (another supervisor). Taken at once, while the ancestry can still be seen.
fn own_fingerprint(sb: &Sandbox) -> Fingerprint {
    let me = std::process::id();
    let mut fp = Fingerprint::take(sb);
    let holders = flock_holders();
    let mut dirs = vec![
        sb.state_dir().to_path_buf(),
        PathBuf::from("/run/rsandbox/instances"),
    ];
    for (parent, prefix) in [("/tmp", "rsandbox-"), ("/run/user", "")] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                dirs.push(e.path().join("rsandbox/instances"));
            }
        }
    }
    let others: BTreeSet<u32> = dirs
        .iter()
        .flat_map(std::fs::read_dir)
        .flatten()
        .flatten()
        .filter_map(|e| holder_of(&holders, &e.path()))
        .filter(|&pid| pid != me)
        .collect();
    fp.processes.retain(|entry| {
        let mut pid: u32 = entry.split(' ').next().unwrap().parse().unwrap();
        for _ in 0..64 {
            match parent_of(pid) {
                Some(pp) if others.contains(&pp) => return false,
                Some(pp) if pp > 1 => pid = pp,
                _ => break,
            }
        }
        true
    });
    fp.state_records.retain(|r| {
        let named = std::fs::read_to_string(r)
            .ok()
            .and_then(|t| serde_json::from_str::<rsandbox::testing::state::RecordInfo>(&t).ok());
        holder_of(&holders, Path::new(r)) == Some(me)
            || named.is_some_and(|i| i.supervisor_pid as u32 == me)
    });
    fp
}

/// Soak: 2,000 one-shot runs of /bin/true from two threads leave the fingerprint of DESIGN.md §8
/// unchanged (less other test runs' live instances on a shared host), no `rsandbox-*` cgroup
/// behind in any hierarchy, and no pile of dying cgroups (v1: `/proc/cgroups`; v2:
/// `nr_dying_descendants`).
#[test]
fn soak_2000_runs_leave_nothing_behind() {
    let _g = util::exclusive();
    if !util::require("userns") {
        return;
    }
    let sb = util::sandbox();
    let warm = sb.run(&Command::new("/bin/true")).unwrap();
    assert_eq!(warm.status, Status::Ok, "{warm:#?}");
    let before = own_fingerprint(&sb);
    let dying_before = dying_cgroups();
    let orphans_before = orphan_cgroups(&sb);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let sb = &sb;
            s.spawn(move || {
                for i in 0..1000 {
                    let o = sb
                        .run(&Command::new("/bin/true"))
                        .unwrap_or_else(|e| panic!("thread {t} run {i}: {e}"));
                    assert_eq!(o.status, Status::Ok, "thread {t} run {i}: {o:#?}");
                }
            });
        }
    });
    let took = start.elapsed();
    eprintln!(
        "soak: 2000 runs in {:.1} s ({:.1} ms per run per thread)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / 1000.0
    );

    // Freeing a removed cgroup takes an RCU grace period or more: allow 10 s, and a small slack
    // for other processes' cgroups coming and going (2,000 runs made 2,000 per hierarchy).
    const SLACK: i64 = 20;
    let settled = |now: &BTreeMap<String, i64>| {
        now.iter()
            .all(|(k, n)| *n <= dying_before.get(k).copied().unwrap_or(0) + SLACK)
    };
    let waited = Instant::now();
    let mut dying_after = dying_cgroups();
    while !settled(&dying_after) && waited.elapsed() < util::allow(10.0) {
        std::thread::sleep(Duration::from_millis(200));
        dying_after = dying_cgroups();
    }
    eprintln!("soak: dying cgroups before {dying_before:?}, after {dying_after:?} (settled after {:.1} s)", waited.elapsed().as_secs_f64());

    let mut now = own_fingerprint(&sb);
    let deadline = Instant::now() + util::allow(5.0);
    while now != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = own_fingerprint(&sb);
    }
    assert_eq!(before.processes, now.processes, "processes changed");
    assert_eq!(before.mounts, now.mounts, "host mounts changed");
    assert_eq!(
        before.state_records, now.state_records,
        "state records changed"
    );
    assert_eq!(
        before.template_files, now.template_files,
        "template changed"
    );
    assert_eq!(before.fds, now.fds, "open fds changed");

    // Cgroups of other processes' instances come and go; a leftover of ours stays.
    let mut orphans = orphan_cgroups(&sb);
    let deadline = Instant::now() + util::allow(5.0);
    while !orphans.is_subset(&orphans_before) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        orphans = orphan_cgroups(&sb)
            .intersection(&orphans)
            .cloned()
            .collect();
    }
    let new: Vec<&PathBuf> = orphans.difference(&orphans_before).collect();
    assert!(new.is_empty(), "cgroups left after the soak: {new:?}");
    assert!(
        settled(&dying_after),
        "dying cgroups piled up: before {dying_before:?}, after {dying_after:?}"
    );
}
