//! Why cgroups cannot be used on this host: the error of [`super::setup`], whose text reaches
//! users through `--strict` errors, `rsandbox serve`'s warning and `rsandbox check`.

use std::io;
use std::path::PathBuf;

/// Why cgroup detection or delegation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    #[error("disabled by RSANDBOX_NO_CGROUPS")]
    Disabled,
    #[error("no cgroup filesystem is mounted")]
    NotMounted,
    #[error("no cgroup2 mount")]
    NoCgroup2Mount,
    #[error("no 0:: line in /proc/self/cgroup")]
    NoOwnV2Cgroup,
    /// `RSANDBOX_CGROUP` names no cgroup below the cgroup2 mount.
    #[error("RSANDBOX_CGROUP={}: not a cgroup below the cgroup2 mount {}", .dir.display(), .mount.display())]
    NotBelowMount { dir: PathBuf, mount: PathBuf },
    /// `cgroup.controllers` of `dir` could not be read.
    #[error("{}: {source}", .dir.display())]
    Controllers { dir: PathBuf, source: io::Error },
    #[error("{} lacks the memory or pids controller (has: {has})", .dir.display())]
    MissingControllers { dir: PathBuf, has: String },
    /// Enabling `controllers` in the `cgroup.subtree_control` of `RSANDBOX_CGROUP` failed.
    #[error("RSANDBOX_CGROUP={}: cannot enable {controllers} in its cgroup.subtree_control: {source}", .dir.display())]
    EnableInOverride {
        dir: PathBuf,
        controllers: String,
        source: io::Error,
    },
    /// Enabling `controllers` in `dir/cgroup.subtree_control` failed.
    #[error("cannot enable {controllers} in {}/cgroup.subtree_control: {source}", .dir.display())]
    Enable {
        dir: PathBuf,
        controllers: String,
        source: io::Error,
    },
    /// This process could not leave `dir` for a leaf of its own.
    #[error("{}: {reason}", .dir.display())]
    Leaf { dir: PathBuf, reason: LeafError },
    /// Enabling `controllers` still failed after this process moved into a leaf.
    #[error("cannot enable {controllers} in {}/cgroup.subtree_control after moving into a leaf: {source}", .dir.display())]
    EnableAfterLeaf {
        dir: PathBuf,
        controllers: String,
        source: io::Error,
    },
    #[error("cgroup v1 hierarchies are not delegated to unprivileged users")]
    V1Unprivileged,
    #[error("no cgroup v1 hierarchy with the {controller} controller")]
    NoV1Hierarchy { controller: &'static str },
}

/// Why this process could not move into a leaf below its cgroup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeafError {
    /// The cgroup's `cgroup.procs` could not be read.
    #[error("{}: {source}", .dir.display())]
    Procs { dir: PathBuf, source: io::Error },
    /// Other processes (their pids, space-separated) share the cgroup.
    #[error(
        "other processes ({pids}) live in it, so it cannot enable controllers for children: \
         start rsandbox from a leaf cgroup and set RSANDBOX_CGROUP to a delegated cgroup \
         without processes"
    )]
    OtherProcesses { pids: String },
    #[error("creating {}: {source}", .leaf.display())]
    Create { leaf: PathBuf, source: io::Error },
    #[error("moving into {}: {source}", .leaf.display())]
    Move { leaf: PathBuf, source: io::Error },
}
