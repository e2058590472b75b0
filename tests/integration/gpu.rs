//! GPUs without a GPU: fake NVIDIA nodes (char 195:N, made with mknod by `tests/fake-gpus`) as
//! the device source. An instance sees exactly its nodes, `CUDA_VISIBLE_DEVICES` numbers them
//! from 0, the device controller allows exactly them (a node bound and granted by Landlock but
//! left out of the controller fails with EPERM; a granted one with ENXIO: no driver behind major
//! 195 here), GPUs are not shared unless asked, requests that cannot be met fail with their
//! reason, and nothing remains.
//!
//! The fake nodes come from `RSANDBOX_TEST_GPU_DEV_DIR` (made by `tests/run.sh` or the v2
//! guest, as root, for the unprivileged pass), else, as root, from a fresh directory on the first
//! filesystem here not mounted `nodev`. Feature `fake-gpu`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use rsandbox::{Command, GpuError, Outcome, Sandbox, Status};

use crate::util::{self, Fingerprint};

/// A directory of fake NVIDIA nodes (4 GPUs, the 4 control nodes); removed on drop when made
/// by the test.
pub(crate) struct FakeGpus {
    pub(crate) dev: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl FakeGpus {
    /// A test builder taking its GPU nodes from here.
    pub(crate) fn builder(&self) -> rsandbox::SandboxBuilder {
        util::builder().gpu_dev_dir(&self.dev)
    }
}

/// Where fake nodes may be made: the first of these on a filesystem without `nodev` (the
/// guest's `/var/tmp` is read-only and its `/tmp` is `nodev`; its `/var/lib/rsandbox` is not).
const NODE_BASES: &[&str] = &["/var/tmp", "/tmp", "/var/lib/rsandbox"];

/// The fake GPUs for this test, or `None` after a SKIP line (a failure where
/// `RSANDBOX_TEST_EXPECT` lists `fake-gpu`).
pub(crate) fn fake_gpus() -> Option<FakeGpus> {
    if !util::require("userns") {
        return None;
    }
    if let Some(d) = std::env::var_os("RSANDBOX_TEST_GPU_DEV_DIR") {
        // Links to the shared nodes in a directory of this test's own: GPU pools are per
        // device directory, so tests running side by side do not take each other's GPUs.
        let shared = PathBuf::from(d);
        let e = open_errno(&shared.join("nvidia0"));
        if e != libc::ENXIO {
            let why = format!(
                "RSANDBOX_TEST_GPU_DEV_DIR={}: opening nvidia0 gives {} (want ENXIO)",
                shared.display(),
                errno_name(e)
            );
            util::missing("fake-gpu", &why);
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        for e in std::fs::read_dir(&shared).unwrap().flatten() {
            std::os::unix::fs::symlink(e.path(), dev.join(e.file_name())).unwrap();
        }
        return Some(FakeGpus {
            dev,
            _owned: Some(tmp),
        });
    }
    if !util::is_root() {
        util::missing(
            "fake-gpu",
            "not root and no RSANDBOX_TEST_GPU_DEV_DIR (tests/run.sh makes one for this pass)",
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-gpus");
    let mut tried = Vec::new();
    for base in NODE_BASES {
        let Ok(tmp) = tempfile::Builder::new()
            .prefix("rsandbox-fake-gpus-")
            .tempdir_in(base)
        else {
            tried.push(format!("{base}: cannot create a directory"));
            continue;
        };
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dev = tmp.path().join("dev");
        let out = Process::new(&script)
            .arg(&dev)
            .stdin(Stdio::null())
            .output()
            .expect("running tests/fake-gpus");
        assert!(out.status.success(), "tests/fake-gpus: {out:?}");
        match open_errno(&dev.join("nvidia0")) {
            libc::ENXIO => {
                return Some(FakeGpus {
                    dev,
                    _owned: Some(tmp),
                })
            }
            e => tried.push(format!(
                "{base}: opening a fake node gives {} (nodev?)",
                errno_name(e)
            )),
        }
    }
    util::missing(
        "fake-gpu",
        &format!("NO DIRECTORY FOR FAKE DEVICE NODES: {}", tried.join("; ")),
    );
    None
}

/// The errno of opening `p` read-write (0: it opened).
fn open_errno(p: &Path) -> i32 {
    match std::fs::OpenOptions::new().read(true).write(true).open(p) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        0 => "success",
        libc::ENXIO => "ENXIO",
        libc::ENODEV => "ENODEV",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        _ => "another error",
    }
}

/// Whether this pass has a device controller (`cgroup1` or `bpf` in the report) rather than
/// `mount-only`: root with v1 devices, or root on v2 (the BPF program).
fn controller_expected() -> bool {
    util::is_root()
        && match rsandbox::testing::cgroup::setup() {
            Ok(rsandbox::testing::cgroup::Setup::V1 { bases }) => {
                bases.iter().any(|(c, _)| *c == "devices")
            }
            Ok(rsandbox::testing::cgroup::Setup::V2 { .. }) => true,
            Err(_) => false,
        }
}

/// Prints, one per line: the sorted names in /dev; `NAME MAJOR:MINOR` of each NVIDIA node;
/// `open NAME ERRNO` for opening each read-write; `CUDA_VISIBLE_DEVICES=...` (or `-`).
const LOOK: &str = r#"
import errno, os, stat
names = sorted(os.listdir('/dev'))
print(' '.join(names))
for n in names:
    if n.startswith('nvidia'):
        s = os.stat('/dev/' + n)
        assert stat.S_ISCHR(s.st_mode), n
        print(n, '%d:%d' % (os.major(s.st_rdev), os.minor(s.st_rdev)))
for n in names:
    if n.startswith('nvidia'):
        try:
            os.close(os.open('/dev/' + n, os.O_RDWR))
            print('open', n, 'ok')
        except OSError as e:
            print('open', n, errno.errorcode[e.errno])
print('CUDA_VISIBLE_DEVICES=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'))
"#;

fn ok(o: &Outcome) -> String {
    assert_eq!(o.status, Status::Ok, "run failed: {o:#?}");
    util::stdout(o)
}

/// `/dev` of an instance without GPUs (isolation::root::dev_has_only_the_safe_nodes).
const PLAIN_DEV: &str = "fd full null ptmx pts random shm stderr stdin stdout urandom zero";

/// `PLAIN_DEV` with these NVIDIA nodes, sorted as Python sorts.
fn dev_with(nodes: &[&str]) -> String {
    let mut v: Vec<&str> = PLAIN_DEV.split(' ').chain(nodes.iter().copied()).collect();
    v.sort();
    v.join(" ")
}

const CONTROL: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

fn uvm_major(dev: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    libc::major(std::fs::metadata(dev.join("nvidia-uvm")).unwrap().rdev())
}

/// `--gpu-devices 1,3`: /dev holds nvidia1 and nvidia3 (195:1, 195:3), the control nodes and the
/// usual nodes, nothing else; each NVIDIA node opens as far as the missing driver (ENXIO), so
/// neither Landlock nor the device controller refuses it; CUDA numbers the two GPUs 0 and 1.
#[test]
fn an_instance_sees_exactly_its_gpus() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    let sb = fake.builder().gpu_devices(&[3, 1]).build().unwrap();
    let o = util::py(&sb, LOOK);
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    let mut nodes = vec!["nvidia1", "nvidia3"];
    nodes.extend(CONTROL);
    assert_eq!(l[0], dev_with(&nodes), "{out}");
    let uvm = uvm_major(&fake.dev);
    let want_rdev = [
        "nvidia-modeset 195:254".to_string(),
        format!("nvidia-uvm {uvm}:0"),
        format!("nvidia-uvm-tools {uvm}:1"),
        "nvidia1 195:1".into(),
        "nvidia3 195:3".into(),
        "nvidiactl 195:255".into(),
    ];
    assert_eq!(l[1..7], want_rdev, "{out}");
    for line in &l[7..13] {
        assert!(line.ends_with(" ENXIO"), "{line}: {out}");
    }
    assert_eq!(l[13], "CUDA_VISIBLE_DEVICES=0,1");
    assert_eq!(
        o.enforcement.devices,
        if controller_expected() {
            if rsandbox::probe::host().cgroup_layout == rsandbox::probe::CgroupLayout::V2 {
                "bpf"
            } else {
                "cgroup1"
            }
        } else {
            "mount-only"
        }
    );
}

/// The device controller is what denies a GPU the instance was not granted: nvidia2 is bound
/// into /dev and granted by Landlock like nvidia1, but left out of the controller's allow list
/// (a test-only setting). Opening it fails with EPERM (the controller; Landlock would say
/// EACCES), opening nvidia1 with ENXIO (allowed; no driver). Outside, nvidia2 opens to ENXIO
/// too, so EPERM is not the node's own doing. Without a controller (`mount-only`, an
/// unprivileged user) nvidia2 would open to ENXIO: selection is by mounts only, and the report
/// says so.
#[test]
fn the_device_controller_denies_a_bound_and_granted_node() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    assert_eq!(open_errno(&fake.dev.join("nvidia2")), libc::ENXIO);
    let sb = fake
        .builder()
        .gpu_devices(&[1])
        .gpu_uncontrolled_nodes(&["nvidia2"])
        .build()
        .unwrap();
    let script = "import errno, os\n\
                  for n in ['nvidia1', 'nvidia2', 'nvidiactl']:\n\
                  \x20   try:\n\
                  \x20       os.close(os.open('/dev/' + n, os.O_RDWR)); print(n, 'ok')\n\
                  \x20   except OSError as e:\n\
                  \x20       print(n, errno.errorcode[e.errno])";
    let o = util::py(&sb, script);
    let out = ok(&o);
    if controller_expected() {
        assert_ne!(o.enforcement.devices, "mount-only");
        assert_eq!(out, "nvidia1 ENXIO\nnvidia2 EPERM\nnvidiactl ENXIO\n");
    } else {
        assert_eq!(o.enforcement.devices, "mount-only");
        assert_eq!(out, "nvidia1 ENXIO\nnvidia2 ENXIO\nnvidiactl ENXIO\n");
        eprintln!("note: no device controller in this pass (mount-only): EPERM not checked");
    }
}

/// On cgroup v1 the instance's `devices.list` is exactly the minimal set plus its GPU and the
/// control nodes.
#[test]
fn v1_devices_list_is_exactly_the_granted_nodes() {
    let _g = util::shared();
    if !util::is_root()
        || !matches!(
            rsandbox::testing::cgroup::setup(),
            Ok(rsandbox::testing::cgroup::Setup::V1 { .. })
        )
    {
        eprintln!("SKIP: not root with cgroup v1 devices");
        return;
    }
    let Some(fake) = fake_gpus() else { return };
    let sb = fake.builder().gpu_devices(&[2]).build().unwrap();
    let inst = sb.create().unwrap();
    let dirs = util::instance_cgroups(&sb, &inst);
    let dir = dirs
        .iter()
        .find(|d| d.join("devices.list").exists())
        .unwrap_or_else(|| panic!("no devices.list in {dirs:?}"));
    let list = std::fs::read_to_string(dir.join("devices.list")).unwrap();
    let mut got: Vec<&str> = list.lines().collect();
    got.sort();
    let uvm = uvm_major(&fake.dev);
    let mut want: Vec<String> = [3, 5, 7, 8, 9]
        .iter()
        .map(|m| format!("c 1:{m} rw"))
        // The instance's own devpts: its ptmx and its ptys.
        .chain(["c 5:2 rw", "c 136:* rw"].map(String::from))
        .chain(["c 195:2 rw", "c 195:254 rw", "c 195:255 rw"].map(String::from))
        .chain([format!("c {uvm}:0 rw"), format!("c {uvm}:1 rw")])
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(inst.gpus(), [2]);
}

/// `gpus(2)` on 4 GPUs: two instances get disjoint pairs and see only their own nodes; a third
/// fails at once, naming what is free and in use; with a wait it gets the pair released while
/// it waits. A lease allocated by the caller (a daemon) is taken by `create_with_gpus`.
#[test]
fn instances_get_disjoint_gpus_until_none_are_free() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    let sb = fake.builder().gpus(2).build().unwrap();
    let a = sb.create().unwrap();
    let b = sb.create().unwrap();
    assert_eq!((a.gpus(), b.gpus()), (&[0, 1][..], &[2, 3][..]));
    let seen = ok(&b
        .exec(&Command::new("/bin/sh").args([
            "-c",
            "ls /dev | grep '^nvidia[0-9]'; echo $CUDA_VISIBLE_DEVICES",
        ]))
        .unwrap());
    assert_eq!(seen, "nvidia2\nnvidia3\n0,1\n");
    let e = sb.create().map(|_| ()).unwrap_err();
    assert!(
        matches!(&e, rsandbox::Error::Gpu(g) if g.is_retryable()),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "not enough free GPUs for 2 GPUs: free none, in use 0, 1, 2, 3 (not waiting)"
    );

    let waiting = fake
        .builder()
        .gpus(2)
        .gpu_wait(util::allow(20.0))
        .build()
        .unwrap();
    let waiter = std::thread::spawn(move || {
        let inst = waiting.create()?;
        Ok::<_, rsandbox::Error>(inst.gpus().to_vec())
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(a);
    assert_eq!(waiter.join().unwrap().unwrap(), [0, 1]);

    // The caller allocates (as a daemon queueing requests would), then creates.
    let pool = sb.gpu_pool().expect("a GPU sandbox has a pool");
    assert_eq!(pool.gpus(), [0, 1, 2, 3]);
    drop(b);
    let lease = pool.try_allocate(&sb.gpu_request()).unwrap();
    assert_eq!(lease.indices(), [0, 1]);
    let c = sb.create_with_gpus(lease).unwrap();
    assert_eq!(c.gpus(), [0, 1]);
    let wrong = pool.try_allocate(&rsandbox::GpuRequest::count(1)).unwrap();
    assert!(sb.create_with_gpus(wrong).is_err());
    drop(c);
    assert_eq!(pool.free(false), [0, 1, 2, 3]);
}

/// `gpu_share`: sharing instances may hold the same GPU; an exclusive one may not join them.
#[test]
fn shared_gpus_are_shared_only_with_sharers() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    let shared = fake
        .builder()
        .gpu_devices(&[0])
        .gpu_share(true)
        .build()
        .unwrap();
    let exclusive = fake.builder().gpu_devices(&[0]).build().unwrap();
    let s1 = shared.create().unwrap();
    let s2 = shared.create().unwrap();
    assert_eq!((s1.gpus(), s2.gpus()), (&[0][..], &[0][..]));
    let e = exclusive.create().map(|_| ()).unwrap_err();
    assert!(
        e.to_string().starts_with("not enough free GPUs for GPU 0:"),
        "{e}"
    );
    drop((s1, s2));
    let x = exclusive.create().unwrap();
    assert!(shared.create().is_err());
    drop(x);
}

/// Requests that cannot be met fail at `build` with their reason: more GPUs than exist, an
/// unknown index, a repeated one, and none at all on a host without GPUs.
#[test]
fn requests_that_cannot_be_met_say_why() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let e = util::builder()
        .gpu_dev_dir(empty.path())
        .gpus(1)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no GPU on this host: {} has no nvidiaN device, so 1 GPU cannot be granted",
            empty.path().display()
        )
    );
    assert_eq!(e.stage(), "gpu");
    if rsandbox::gpu::HostGpus::scan(Path::new("/dev"))
        .gpus
        .is_empty()
    {
        let e = util::builder()
            .gpu_devices(&[0])
            .build()
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no GPU on this host: /dev has no nvidiaN device"),
            "{e}"
        );
    }
    let Some(fake) = fake_gpus() else { return };
    let build = |b: rsandbox::SandboxBuilder| b.build().map(|_| ()).unwrap_err();
    let e = build(fake.builder().gpus(5));
    assert_eq!(
        e.to_string(),
        "5 GPUs asked for, but this host has only 4 (GPU 0, 1, 2, 3)"
    );
    assert!(matches!(e, rsandbox::Error::Gpu(ref g) if !g.is_retryable()));
    let e = build(fake.builder().gpu_devices(&[0, 7]));
    assert_eq!(
        e.to_string(),
        "no GPU 7 on this host (it has GPU 0, 1, 2, 3)"
    );
    let e = build(fake.builder().gpu_devices(&[2, 2]));
    assert!(matches!(
        e,
        rsandbox::Error::Gpu(GpuError::Duplicate { index: 2 })
    ));
}

/// `gpus(0)` (and the default) binds no GPU node and sets no CUDA variable, even where the
/// device directory has GPUs.
#[test]
fn no_gpus_means_no_gpu_nodes() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    for sb in [
        fake.builder().gpus(0).build().unwrap(),
        fake.builder().build().unwrap(),
    ] {
        assert!(sb.gpu_pool().is_none());
        let out = ok(&util::py(&sb, LOOK));
        assert_eq!(out, format!("{PLAIN_DEV}\nCUDA_VISIBLE_DEVICES=-\n"));
    }
}

/// The driver's files: a library directory and a tool directory that are not visible inside
/// (here under the host's /tmp) are bound read-only at their own paths, put on LD_LIBRARY_PATH
/// and PATH; `nvidia-smi` (a fake script) runs from PATH.
#[test]
fn driver_libraries_and_nvidia_smi_are_bound_where_the_host_keeps_them() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    let driver = tempfile::tempdir().unwrap();
    let (lib, bin) = (driver.path().join("lib64"), driver.path().join("bin"));
    for d in [&lib, &bin] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(lib.join("libcuda.so.1"), b"not really").unwrap();
    std::fs::write(lib.join("libnvidia-ml.so.1"), b"not really").unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho \"GPU 0: Fake ($CUDA_VISIBLE_DEVICES)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["libcuda.so.1", "libnvidia-ml.so.1"] {
        std::fs::set_permissions(lib.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let sb = fake
        .builder()
        .gpus(1)
        .gpu_driver_dirs(vec![lib.clone()], vec![bin.clone()])
        .build()
        .unwrap();
    let (lib, bin) = (lib.canonicalize().unwrap(), bin.canonicalize().unwrap());
    let script = format!(
        "nvidia-smi; echo \"$LD_LIBRARY_PATH\"; echo \"$PATH\"; ls {}; cat {}/libcuda.so.1; echo; \
         touch {}/x 2>/dev/null || echo read-only",
        lib.display(),
        lib.display(),
        lib.display()
    );
    let out = ok(&util::sh(&sb, &script));
    assert_eq!(
        out,
        format!(
            "GPU 0: Fake (0)\n{}\n/usr/local/bin:/usr/bin:/bin:{}\nlibcuda.so.1\nlibnvidia-ml.so.1\nnot really\nread-only\n",
            lib.display(),
            bin.display()
        )
    );
}

/// The CLI: `--gpu-devices 0,2` and `--gpus N` (with `RSANDBOX_GPU_DEV_DIR`, the test-only device
/// directory); a request that cannot be met exits 125 with the reason, as JSON with `--json`.
#[test]
fn cli_gpu_options() {
    let _g = util::shared();
    let Some(fake) = fake_gpus() else { return };
    let rsb = |args: &[&str]| {
        Process::new(util::bin())
            .args(args)
            .env("RSANDBOX_GPU_DEV_DIR", &fake.dev)
            .stdin(Stdio::null())
            .output()
            .expect("running rsandbox")
    };
    let show = [
        "--",
        "/bin/sh",
        "-c",
        "ls /dev | grep '^nvidia[0-9]' | tr '\\n' ' '; echo $CUDA_VISIBLE_DEVICES",
    ];
    let o = rsb(&[&["run", "--gpu-devices", "0,2"][..], &show].concat());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "nvidia0 nvidia2 0,1\n",
        "{o:?}"
    );
    assert_eq!(o.status.code(), Some(0));
    let o = rsb(&[&["run", "--gpus", "3", "--gpu-share"][..], &show].concat());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "nvidia0 nvidia1 nvidia2 0,1,2\n",
        "{o:?}"
    );
    let o = rsb(&["run", "--gpus", "9", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "rsandbox: 9 GPUs asked for, but this host has only 4 (GPU 0, 1, 2, 3)\n"
    );
    let o = rsb(&["run", "--json", "--gpu-devices", "5", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["stage"], "gpu");
    assert_eq!(
        v["error"]["message"],
        "no GPU 5 on this host (it has GPU 0, 1, 2, 3)"
    );
    let o = rsb(&[
        "run",
        "--gpus",
        "1",
        "--gpu-devices",
        "1",
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(2), "clap refuses both: {o:?}");
}

/// GPU runs and sessions leave nothing behind: processes, mounts, state records, template
/// files, fds; and every GPU is free again.
#[test]
fn gpu_runs_leave_nothing_behind() {
    let _g = util::exclusive();
    let Some(fake) = fake_gpus() else { return };
    let sb: Sandbox = fake.builder().gpus(2).build().unwrap();
    ok(&util::sh(&sb, "true")); // first use: template mount points, state dir
    let before = Fingerprint::take(&sb);
    for _ in 0..3 {
        ok(&util::sh(
            &sb,
            "cat /dev/nvidia0 2>/dev/null; sleep 0.01 & true",
        ));
    }
    let inst = sb.create().unwrap();
    ok(&inst
        .exec(&Command::new("/bin/sh").args(["-c", "sleep 30 &"]))
        .unwrap());
    inst.destroy().unwrap();
    before.assert_same(&sb);
    assert_eq!(sb.gpu_pool().unwrap().free(false), [0, 1, 2, 3]);
}
