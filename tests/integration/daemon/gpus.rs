//! GPUs through `/v1/run`: allocation across concurrent runs on fake GPUs.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::server::{host_before, Daemon};
use crate::util;

/// GPUs through `/v1/run` (`limits.gpus`, `limits.gpu_devices`), on 4 fake GPUs: concurrent
/// runs get disjoint GPUs, a run asking for more than are free waits in the queue until a GPU
/// is released, one that waits longer than `--gpu-wait` gets 503, and requests that can never
/// be met (more GPUs than exist, an unknown index, both fields) get 422 saying why.
#[test]
fn the_daemon_allocates_gpus_across_concurrent_runs() {
    let _g = util::exclusive();
    let Some(fake) = crate::gpu::fake_gpus() else {
        return;
    };
    let before = host_before();
    let dev = fake.dev.as_os_str();
    let gpu_wait = util::allow(2.0);
    let d = Arc::new(Daemon::start_env(
        &[
            "--slots",
            "6",
            "--gpu-wait",
            &gpu_wait.as_secs_f64().to_string(),
        ],
        &[("RSANDBOX_GPU_DEV_DIR", dev)],
    ));
    let hold = util::allow(1.0).as_secs_f64();
    let run = |limits: Value, secs: f64| {
        let d = d.clone();
        std::thread::spawn(move || {
            let script =
                format!("ls /dev | grep '^nvidia[0-9]'; echo $CUDA_VISIBLE_DEVICES; sleep {secs}");
            let mut limits = limits;
            limits["timeout"] = json!(30.0 * util::time_scale());
            d.post(
                "/v1/run",
                &json!({"argv": ["/bin/sh", "-c", script], "limits": limits}),
            )
        })
    };
    // Five runs of one GPU each on four GPUs: one of them waits for a GPU to be released.
    let runs: Vec<_> = (0..5).map(|_| run(json!({"gpus": 1}), hold)).collect();
    let mut seen = std::collections::BTreeMap::new();
    let mut waited = 0.0f64;
    for t in runs {
        let a = t.join().unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let r = a.json();
        assert_eq!(r["status"], "ok", "{r}");
        let out = r["stdout"].as_str().unwrap().to_string();
        let mut lines = out.lines();
        let gpu = lines.next().unwrap_or_default().to_string();
        assert_eq!(lines.next(), Some("0"), "CUDA_VISIBLE_DEVICES: {out}");
        assert_eq!(lines.next(), None, "one GPU node only: {out}");
        *seen.entry(gpu).or_insert(0) += 1;
        waited = waited.max(r["queued_ms"].as_f64().unwrap());
    }
    let names: Vec<&String> = seen.keys().collect();
    assert_eq!(
        names,
        ["nvidia0", "nvidia1", "nvidia2", "nvidia3"],
        "{seen:?}"
    );
    assert!(
        waited >= 0.5 * hold * 1000.0,
        "no run waited for a GPU (longest queue wait {waited} ms, runs hold theirs {hold} s)"
    );

    // All four held for longer than the daemon waits: the fifth gets 503, not a shared GPU.
    let all = run(json!({"gpus": 4}), util::allow(4.0).as_secs_f64());
    std::thread::sleep(util::allow(1.0));
    let t = Instant::now();
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 1}}));
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("not enough free GPUs"), "{}", a.body);
    assert!(t.elapsed() >= gpu_wait.mul_f64(0.75), "{:?}", t.elapsed());
    assert_eq!(all.join().unwrap().status, 200);

    for (limits, why) in [
        (json!({"gpus": 5}), "only 4"),
        (json!({"gpu_devices": [7]}), "no GPU 7"),
        (json!({"gpus": 1, "gpu_devices": [0]}), "not both"),
    ] {
        let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": limits}));
        assert_eq!(a.status, 422, "{limits}: {}", a.body);
        assert!(a.body.contains(why), "{limits}: {}", a.body);
    }
    // Exact indices, and every GPU free again.
    let a = d.post(
        "/v1/run",
        &json!({"argv": ["/bin/sh", "-c", "ls /dev | grep '^nvidia[0-9]' | tr '\\n' ' '"], "limits": {"gpu_devices": [3, 1]}}),
    );
    assert_eq!(a.json()["stdout"], "nvidia1 nvidia3 ", "{}", a.body);
    let a = d.post("/v1/run", &json!({"argv": ["true"], "limits": {"gpus": 4}}));
    assert_eq!(a.json()["status"], "ok", "{}", a.body);
    drop(d);
    before.assert_same(&util::sandbox());
}
