//! A live instance: its reaper, cgroup, GPUs and state record, from `create` to `destroy`
//! (also on drop); `exec` and the work-dir file operations live in the submodules.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cgroup::{devices, InstanceCgroup};
use crate::error::{Error, Result};
use crate::gpu::GpuLease;
use crate::ns::mount::MountPlan;
use crate::ns::user::IdMap;
use crate::outcome::{Enforcement, Mechanism, NetworkStats, Usage};
use crate::policy::{self, Net, Policy};
use crate::spawn::{self, Reaper, ReaperSpec};
use crate::state::{self, Record, RecordInfo};
use crate::sys;

mod exec;
mod files;
mod process;
pub(crate) use process::Process;
mod procfs;

// The daemon's file API checks paths and names a missing file as the library does.
#[cfg_attr(not(feature = "daemon"), allow(unused_imports))]
pub(crate) use files::components;
#[cfg_attr(not(feature = "daemon"), allow(unused_imports))]
pub use files::{DirEntry, FileKind, GET_FILE_MAX, LIST_MAX, NO_SUCH_FILE};

/// One isolated instance: fresh namespaces, its own root and work dir, a reaper as pid 1.
pub struct Instance {
    inner: Arc<Policy>,
    reaper: Option<Reaper>,
    record: Option<Record>,
    ids: IdMap,
    cg: Option<InstanceCgroup>,
    /// The GPUs it holds; released after everything else is gone.
    gpu: Option<GpuLease>,
    /// What enforces each limit for this instance (the sandbox's, less what failed here).
    enforcement: Enforcement,
    /// Where this instance's CPUs start (see `Instance::cpu_set`).
    cpu_base: usize,
    /// Serialises use of the control socket and the exec region.
    lock: Mutex<()>,
    /// The egress proxy (networks `allowlist` and `all`); it stops when dropped.
    #[cfg(feature = "egress")]
    proxy: Option<crate::egress::Proxy>,
}

impl Instance {
    /// Leases GPUs, makes the cgroup, records the instance and starts its reaper; whatever
    /// fails undoes what came before it.
    pub(crate) fn create(inner: Arc<Policy>, lease: Option<GpuLease>) -> Result<Instance> {
        // GPUs first: waiting for them must not hold a slot.
        let gpu = lease_gpus(&inner, lease)?;
        let (rules, gpu_plan) = device_plan(&inner, gpu.as_ref());
        let plan = gpu_plan.as_ref().unwrap_or(&inner.plan);
        let mut record = state::claim(&inner.state_dir)?;
        let (euid, egid) = sys::ids();
        let ids = IdMap::for_slot(record.slot, euid, egid);
        let mut enforcement = inner.enforcement.clone();
        let cg = match cgroup(&inner, record.slot, &rules, &mut enforcement) {
            Ok(cg) => cg,
            Err(e) => {
                record.remove();
                return Err(e);
            }
        };
        let fail = |record: Record, cg: &Option<InstanceCgroup>, e: Error| {
            if let Some(cg) = cg {
                cg.destroy();
            }
            record.remove();
            Err(e)
        };
        let cgroups = cg.as_ref().map(|c| c.paths()).unwrap_or_default();
        // Recorded before the clone, so a supervisor killed right after leaves them findable.
        if let Err(e) = record.write(&RecordInfo {
            version: 1,
            supervisor_pid: std::process::id() as i32,
            cgroups: cgroups.clone(),
            ..Default::default()
        }) {
            return fail(record, &cg, e);
        }
        #[cfg_attr(not(feature = "egress"), allow(unused_mut))]
        let mut reaper = match start_reaper(&inner, plan, ids, cg.as_ref()) {
            Ok(r) => r,
            Err(e) => return fail(record, &cg, e),
        };
        #[cfg(feature = "egress")]
        let proxy = match start_proxy(&inner, &mut reaper) {
            Ok(p) => p,
            Err(e) => {
                spawn::kill_reaper(&reaper);
                return fail(record, &cg, e);
            }
        };
        let info = RecordInfo {
            version: 1,
            supervisor_pid: std::process::id() as i32,
            reaper_pid: reaper.pid,
            reaper_start: sys::host::process_start_time(reaper.pid).unwrap_or(0),
            host_uid: ids.host_uid,
            cgroups,
        };
        // Consecutive instances of one process start on consecutive CPUs, so concurrent runs
        // spread over the host; the pid varies the start between processes.
        static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
        let cpu_base = NEXT_CPU.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize;
        let mut inst = Instance {
            inner,
            reaper: Some(reaper),
            record: None,
            ids,
            cg,
            gpu,
            enforcement,
            cpu_base,
            lock: Mutex::new(()),
            #[cfg(feature = "egress")]
            proxy,
        };
        record.write(&info)?;
        inst.record = Some(record);
        Ok(inst)
    }

    fn reaper(&self) -> Result<&Reaper> {
        self.reaper.as_ref().ok_or(Error::Gone)
    }

    /// What the instance (every process in it, background ones included) uses now: from its
    /// cgroup, or without one from `/proc` (CPU time of live processes; their anonymous and
    /// shared memory, each shared page split among its sharers; no peak).
    pub fn usage(&self) -> Result<Usage> {
        let reaper = self.reaper()?;
        match &self.cg {
            Some(cg) => Ok(cg.usage()),
            None => Ok(procfs::usage(reaper.pid)),
        }
    }

    /// The reaper's pid on the host (for diagnostics and tests).
    pub fn reaper_pid(&self) -> Option<i32> {
        self.reaper.as_ref().map(|r| r.pid)
    }

    /// The host GPUs this instance holds (the N of `/dev/nvidiaN`; inside, CUDA numbers them
    /// from 0 in this order).
    pub fn gpus(&self) -> &[u32] {
        self.gpu.as_ref().map_or(&[], |l| l.indices())
    }

    /// Kills every process of the instance and removes its mounts, work dir and record.
    /// Mounts and the work dir live only in the instance's mount namespace, so they go with
    /// its last process.
    pub fn destroy(mut self) -> Result<()> {
        self.teardown();
        Ok(())
    }

    /// The egress proxy's figures so far (`None`: this instance has no proxy).
    pub(crate) fn network(&self) -> Option<NetworkStats> {
        #[cfg(feature = "egress")]
        return self.proxy.as_ref().map(|p| p.stats());
        #[cfg(not(feature = "egress"))]
        None
    }

    fn teardown(&mut self) {
        if let Some(r) = self.reaper.take() {
            spawn::kill_reaper(&r);
        }
        #[cfg(feature = "egress")]
        drop(self.proxy.take());
        if let Some(cg) = self.cg.take() {
            cg.destroy();
        }
        if let Some(rec) = self.record.take() {
            rec.remove();
        }
        self.gpu = None;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The GPU lease of a new instance: the caller's (checked against the policy) or one taken
/// from the policy's pool now.
fn lease_gpus(inner: &Policy, lease: Option<GpuLease>) -> Result<Option<GpuLease>> {
    match (&inner.gpu, lease) {
        (Some(g), lease) => Ok(Some(g.lease(lease)?)),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::invalid(
            "GPU lease",
            "this sandbox asks for no GPU; build it with gpus or gpu_devices",
        )),
    }
}

/// The device controller's allow list, and for an instance with GPUs its own mount plan (the
/// policy's plan serves the others).
fn device_plan(
    inner: &Policy,
    gpu: Option<&GpuLease>,
) -> (Vec<devices::DeviceRule>, Option<MountPlan>) {
    match (&inner.gpu, gpu) {
        (Some(g), Some(lease)) => (
            devices::allow_list(&g.rules(lease)),
            Some(policy::mount_plan(
                &inner.template,
                &inner.plan_spec,
                Some(&g.nodes(lease)),
            )),
        ),
        _ => (devices::minimal(), None),
    }
}

/// The instance's cgroup with its limits and device rules; `None` without cgroups. A cgroup
/// that cannot be made is an error under `strict`, else the instance runs without one and
/// `enforcement` says so; device rules that cannot be attached leave devices `mount-only`.
fn cgroup(
    inner: &Policy,
    slot: u32,
    rules: &[devices::DeviceRule],
    enforcement: &mut Enforcement,
) -> Result<Option<InstanceCgroup>> {
    let Ok(setup) = crate::cgroup::setup() else {
        return Ok(None);
    };
    let cg = match InstanceCgroup::create(setup, slot, &inner.limits, rules) {
        Ok(cg) => cg,
        Err(e) if inner.strict => return Err(e),
        Err(_) => {
            enforcement.without_cgroups();
            return Ok(None);
        }
    };
    if !cg.attach_devices(rules) {
        enforcement.devices = Mechanism::MountOnly;
    }
    Ok(Some(cg))
}

/// Clones the reaper into the instance's namespaces and cgroup (v2: straight into it; v1:
/// its pid written to each controller before it is released).
fn start_reaper(
    inner: &Policy,
    plan: &MountPlan,
    ids: IdMap,
    cg: Option<&InstanceCgroup>,
) -> Result<Reaper> {
    let clone_into = cg.map(|c| c.clone_into()).transpose()?.flatten();
    let spec = ReaperSpec {
        plan,
        landlock: &inner.landlock,
        ids,
        hostname: &inner.hostname,
        loopback: inner.net == Net::Loopback,
        proxy: inner.net.egress().is_some(),
    };
    let mut attach = |pid: i32| cg.map_or(Ok(()), |c| c.attach(pid));
    spawn::start_reaper(
        &spec,
        clone_into.as_ref().map(|f| f.as_raw_fd()),
        &mut attach,
    )
}

/// Starts the egress proxy on the listening sockets the reaper made, for networks that have one.
#[cfg(feature = "egress")]
fn start_proxy(inner: &Policy, reaper: &mut Reaper) -> Result<Option<crate::egress::Proxy>> {
    let Some(allow) = inner.net.egress() else {
        return Ok(None);
    };
    let (http, socks) = reaper.listeners.take().ok_or(Error::Gone)?;
    crate::egress::Proxy::start(http, socks, allow, inner.egress_max_conns)
        .map(Some)
        .map_err(|e| Error::io("starting the egress proxy", None, e))
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Instance>();
}
