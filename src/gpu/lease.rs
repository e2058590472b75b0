//! [`GpuLease`]: the GPUs one instance holds, given back to their pool (and unlocked) on drop.

use std::fmt;
use std::fs::File;
use std::sync::Arc;

use super::pool::GpuPool;

/// GPUs held for one instance; released (and their locks dropped) on drop.
pub struct GpuLease {
    pool: Arc<GpuPool>,
    indices: Vec<u32>,
    share: bool,
    _locks: Vec<File>,
}

impl GpuLease {
    pub(super) fn new(
        pool: Arc<GpuPool>,
        indices: Vec<u32>,
        share: bool,
        locks: Vec<File>,
    ) -> GpuLease {
        GpuLease {
            pool,
            indices,
            share,
            _locks: locks,
        }
    }

    /// The host GPUs held (the N of `/dev/nvidiaN`), ascending.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    pub fn is_shared(&self) -> bool {
        self.share
    }
    /// The pool it came from.
    pub fn pool(&self) -> &Arc<GpuPool> {
        &self.pool
    }
}

impl fmt::Debug for GpuLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuLease")
            .field("indices", &self.indices)
            .field("share", &self.share)
            .finish()
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        // In-process holders first, then (with `_locks`, dropped after this) the flocks.
        self.pool.release(&self.indices, self.share);
    }
}
