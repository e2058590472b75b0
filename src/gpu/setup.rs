//! What a sandbox with GPUs gives each instance (parent side): its lease, its nodes, their rules.

use std::sync::Arc;
use std::time::Duration;

use super::lease::GpuLease;
use super::nodes::{DevNode, HostGpus};
use super::pool::GpuPool;
use super::request::GpuRequest;
use crate::cgroup::devices::DeviceRule;
use crate::error::{Error, Result};

/// `CUDA_VISIBLE_DEVICES` for an instance with `n` GPUs: inside, CUDA enumerates only the GPUs
/// whose nodes it can open, from 0.
pub(crate) fn cuda_visible_devices(n: usize) -> String {
    (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// The GPU part of a sandbox's policy, prepared at `build`.
pub(crate) struct GpuSetup {
    pub(crate) request: GpuRequest,
    pub(crate) pool: Arc<GpuPool>,
    pub(crate) host: HostGpus,
    /// How long `create` waits for free GPUs.
    pub(crate) wait: Duration,
    /// Test-only: nodes bound and granted by Landlock but left out of the device controller.
    pub(crate) uncontrolled: Vec<DevNode>,
}

impl GpuSetup {
    /// Nodes an instance holding `lease` binds into its `/dev`.
    pub(crate) fn nodes(&self, lease: &GpuLease) -> Vec<DevNode> {
        let mut v: Vec<DevNode> = lease
            .indices()
            .iter()
            .filter_map(|i| self.host.gpus.get(i).cloned())
            .collect();
        v.extend(self.host.control.iter().cloned());
        v.extend(self.uncontrolled.iter().cloned());
        v
    }

    /// What the device controller allows it besides the minimal set.
    pub(crate) fn rules(&self, lease: &GpuLease) -> Vec<DeviceRule> {
        lease
            .indices()
            .iter()
            .filter_map(|i| self.host.gpus.get(i))
            .chain(&self.host.control)
            .map(DevNode::rule)
            .collect()
    }

    /// Inside paths of every node an instance of this sandbox may have (Landlock grants them;
    /// a path an instance lacks is skipped there).
    pub(crate) fn landlock_paths(&self) -> Vec<String> {
        self.host
            .gpus
            .values()
            .chain(&self.host.control)
            .chain(&self.uncontrolled)
            .map(|n| format!("/dev/{}", n.name))
            .collect()
    }

    /// A lease for a new instance: `given` (checked against the request), or one from the pool.
    pub(crate) fn lease(&self, given: Option<GpuLease>) -> Result<GpuLease> {
        let Some(lease) = given else {
            return Ok(self.pool.allocate(&self.request, self.wait)?);
        };
        if !self.fits(&lease) {
            return Err(Error::invalid(
                "GPU lease",
                format!(
                    "{lease:?} does not match this sandbox's request ({}) or comes from another pool",
                    self.request
                ),
            ));
        }
        Ok(lease)
    }

    /// Whether `lease` comes from this sandbox's pool and holds what its request asks for.
    fn fits(&self, lease: &GpuLease) -> bool {
        Arc::ptr_eq(lease.pool(), &self.pool)
            && lease.is_shared() == self.request.is_shared()
            && match self.request.indices() {
                Some(v) => {
                    let mut want = v.to_vec();
                    want.sort_unstable();
                    want == lease.indices()
                }
                None => lease.indices().len() == self.request.len(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_numbers_the_granted_gpus_from_zero() {
        assert_eq!(cuda_visible_devices(3), "0,1,2");
        assert_eq!(cuda_visible_devices(0), "");
    }
}
