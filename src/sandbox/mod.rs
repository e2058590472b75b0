//! The immutable `Sandbox`: one-shot runs, instances for sessions, and the warm pool they
//! come from (parent side); `SandboxBuilder` in `builder` validates and prepares its policy.

use std::path::Path;
use std::sync::Arc;

use crate::command::Command;
use crate::error::Result;
use crate::gpu::{GpuLease, GpuPool, GpuRequest};
use crate::instance::Instance;
use crate::outcome::{Enforcement, Outcome};
use crate::policy::Policy;
use crate::pool::{Pool, PoolStats};

mod builder;
mod gpus;

pub use builder::SandboxBuilder;

/// A validated, immutable sandbox policy. Cheap to clone, `Send + Sync`: run it from as many
/// threads as you like.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Policy>,
    pool: Option<Arc<Pool>>,
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// One-shot run: create an instance, copy the command's files in, run it, destroy
    /// everything. On timeout the whole instance is killed. With a warm pool
    /// ([`SandboxBuilder::warm`]) the instance comes from the pool when one is ready, and is
    /// destroyed by the pool's thread after this returns.
    pub fn run(&self, cmd: &Command) -> Result<Outcome> {
        if let Some(c) = &cmd.cancel {
            c.check()?;
        }
        let inst = self.instance()?;
        let out = inst.exec_inner(cmd, true);
        self.retire(inst)?;
        out
    }

    /// A fresh instance for one job (files in, runs, files out): from the warm pool when one is
    /// ready, else created now. Give it back with [`Sandbox::retire`].
    pub fn instance(&self) -> Result<Instance> {
        match self.pool.as_ref().and_then(|p| p.take()) {
            Some(i) => Ok(i),
            None => self.create(),
        }
    }

    /// Destroys a used instance: on the warm pool's thread when this sandbox has a pool (so the
    /// caller does not wait for the teardown), else here.
    pub fn retire(&self, inst: Instance) -> Result<()> {
        match &self.pool {
            Some(p) => {
                p.finish(inst);
                Ok(())
            }
            None => inst.destroy(),
        }
    }

    /// Changes how many idle instances the warm pool keeps (at most 64; 0 destroys the idle
    /// ones and keeps the thread for teardown). No effect on a sandbox built without a pool.
    pub fn set_warm(&self, n: usize) {
        if let Some(p) = &self.pool {
            p.set_warm(n.min(64));
        }
    }

    /// The warm pool's figures (None: no pool).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.pool.as_ref().map(|p| p.stats())
    }

    /// Creates a live instance for many `exec`s (a session). With GPUs, its lease comes from
    /// [`Sandbox::gpu_pool`], waiting up to `gpu_wait` for enough free GPUs.
    pub fn create(&self) -> Result<Instance> {
        Instance::create(self.inner.clone(), None)
    }

    /// Creates an instance holding GPUs its caller allocated from [`Sandbox::gpu_pool`] (a
    /// daemon queueing requests itself); the lease must match [`Sandbox::gpu_request`]. It is
    /// released when the instance is destroyed.
    pub fn create_with_gpus(&self, lease: GpuLease) -> Result<Instance> {
        Instance::create(self.inner.clone(), Some(lease))
    }

    /// The pool this sandbox's instances take their GPUs from (None: it asks for no GPU).
    pub fn gpu_pool(&self) -> Option<&Arc<GpuPool>> {
        self.inner.gpu.as_ref().map(|g| &g.pool)
    }

    /// What each instance asks its GPU pool for.
    pub fn gpu_request(&self) -> GpuRequest {
        self.inner
            .gpu
            .as_ref()
            .map_or_else(GpuRequest::none, |g| g.request.clone())
    }

    /// What enforces each limit in instances of this sandbox.
    pub fn enforcement(&self) -> &Enforcement {
        &self.inner.enforcement
    }

    /// The root template directory in use.
    pub fn template_dir(&self) -> &Path {
        &self.inner.template.root
    }

    /// The state directory in use.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Sandbox>();
}
