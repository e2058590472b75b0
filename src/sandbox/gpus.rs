//! The GPU half of `SandboxBuilder::build`: the request checked against the host's nodes and
//! locks, the driver's files to bind and the environment CUDA needs.

use std::path::{Path, PathBuf};

use super::SandboxBuilder;
use crate::defaults;
use crate::error::{Error, Result};
use crate::gpu::{self, Coverage, GpuPool, GpuSetup};
use crate::ns::template::{Template, SYSTEM_DIRS};
use crate::policy::Bind;

/// Test-only GPU settings: fake device nodes and driver files (see `SandboxBuilder::gpu_dev_dir`).
#[derive(Clone, Debug, Default)]
pub(super) struct GpuTest {
    pub dev_dir: Option<PathBuf>,
    pub driver_dirs: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
    pub uncontrolled: Vec<String>,
}

impl SandboxBuilder {
    /// Checks the GPU request against the host and prepares what its instances need: the
    /// driver's directories to bind (added to `binds`), their environment (added to `env`).
    pub(super) fn prepare_gpus(
        &self,
        source: &Path,
        template: &Template,
        binds: &mut Vec<Bind>,
        env: &mut Vec<(String, String)>,
    ) -> Result<GpuSetup> {
        let dev_dir = self
            .gpu_test
            .dev_dir
            .clone()
            .or_else(|| std::env::var_os("RSANDBOX_GPU_DEV_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/dev"));
        let host = gpu::HostGpus::scan(&dev_dir);
        let pool = GpuPool::for_dev_dir(&dev_dir)
            .map_err(|e| Error::io("preparing the GPU locks for", dev_dir.clone(), e))?;
        pool.check(&self.gpu, &dev_dir)?;
        let mut uncontrolled = Vec::new();
        for name in &self.gpu_test.uncontrolled {
            let node = host
                .control
                .iter()
                .chain(host.gpus.values())
                .find(|n| &n.name == name)
                .cloned();
            uncontrolled.push(node.ok_or_else(|| {
                Error::invalid(
                    "gpu test node",
                    format!("{name}: no such NVIDIA node in {}", dev_dir.display()),
                )
            })?);
        }

        let files = match &self.gpu_test.driver_dirs {
            Some((libs, tools)) => gpu::DriverFiles::scan(libs, tools),
            None => gpu::DriverFiles::host().clone(),
        };
        let from_host = source == Path::new("/");
        let coverage = |d: &Path| {
            let managed = [
                "/proc",
                "/dev",
                "/sys",
                "/etc",
                "/var/tmp",
                defaults::WORK_DIR,
            ];
            if d == Path::new("/") || managed.iter().any(|m| d.starts_with(m)) {
                return Coverage::Skip;
            }
            if SYSTEM_DIRS
                .iter()
                .any(|s| d.starts_with(Path::new("/").join(s)))
            {
                // With --rootfs the system directories are that tree's: its own driver files.
                return if from_host {
                    Coverage::Visible
                } else {
                    Coverage::Skip
                };
            }
            if binds
                .iter()
                .any(|b| b.host == b.inside && d.starts_with(&b.host))
            {
                return Coverage::Visible;
            }
            Coverage::Bind
        };
        let driver = gpu::driver_plan(&files, coverage);
        for d in &driver.bind_dirs {
            binds.push(Bind {
                host: d.clone(),
                inside: d.clone(),
                writable: false,
            });
        }
        // The host's current loader cache: the template's copy may predate the driver.
        let cache = Path::new("/etc/ld.so.cache");
        if from_host && cache.is_file() && template.root.join("etc/ld.so.cache").is_file() {
            binds.push(Bind {
                host: cache.to_path_buf(),
                inside: cache.to_path_buf(),
                writable: false,
            });
        }

        let join = |dirs: &[PathBuf]| {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        env.push((
            "CUDA_VISIBLE_DEVICES".into(),
            gpu::cuda_visible_devices(self.gpu.len()),
        ));
        if !driver.library_path.is_empty() {
            env.push(("LD_LIBRARY_PATH".into(), join(&driver.library_path)));
        }
        if !driver.path.is_empty() {
            env.push((
                "PATH".into(),
                format!("{}:{}", defaults::PATH, join(&driver.path)),
            ));
        }
        Ok(GpuSetup {
            request: self.gpu.clone(),
            pool,
            host,
            wait: self.gpu_wait,
            uncontrolled,
        })
    }
}
