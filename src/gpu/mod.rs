//! GPUs (NVIDIA), parent side: the host's nodes and driver files, which GPUs each instance gets,
//! and what an instance with GPUs is given.
//!
//! An instance granted GPUs gets its own small `/dev` (a tmpfs made read-only once populated)
//! with the usual nodes plus exactly its `/dev/nvidiaN` nodes and the control nodes
//! (`nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-modeset`, where the host has them),
//! bound from the host. Mount points for them in the shared root template would show up in every
//! other instance, so they are not made there. The device controller allows exactly those nodes
//! (v1 `devices.allow`, v2 the BPF program of `cgroup::devices`); without one (an
//! unprivileged user) the selection is by mounts only and the report says `mount-only`.
//!
//! Nodes keep their host names (`/dev/nvidia2` stays `/dev/nvidia2`: the driver's libraries open
//! `/dev/nvidia{minor}` for the GPU they are talking to), while CUDA numbers the GPUs it can
//! open from 0: `CUDA_VISIBLE_DEVICES` is set to `0,...,n-1`.
//!
//! Which GPUs an instance gets is decided by a [`GpuPool`]: one per device directory per
//! process, over the GPUs found there, which hands out [`GpuLease`]s (exclusive, or shared with
//! other sharing leases), waiting in FIFO order or failing when not enough are free. For the
//! host's `/dev` every lease also holds an `flock` per GPU (exclusive or shared) in `gpus/`
//! beside the state directory, so separate processes (`rsandbox run`, a daemon) do not hand out
//! the same GPU.
//!
//! One file per mechanism: `nodes` (scanning the device directory), `driver` (the driver's
//! libraries and tools, and the binds that make them visible), `request` ([`GpuRequest`]),
//! `pool` (the allocator and its FIFO queue), `lease` ([`GpuLease`]), `locks` (the per-GPU lock
//! files across processes), `setup` (what `build` prepares and `create` hands each instance).
//! Binding the nodes is part of an instance's mount plan (`policy`); their device rules go to
//! `cgroup::devices`.

mod driver;
mod lease;
mod locks;
mod nodes;
mod pool;
mod request;
mod setup;

pub use driver::DriverFiles;
pub use lease::GpuLease;
pub use nodes::{DevNode, HostGpus};
pub use pool::GpuPool;
pub use request::GpuRequest;

pub(crate) use driver::{driver_plan, Coverage};
pub(crate) use setup::{cuda_visible_devices, GpuSetup};
