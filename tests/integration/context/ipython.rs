//! Contexts with IPython and matplotlib (Debian's python3-ipykernel and python3-matplotlib):
//! magics, IPython's display formatter and `display()`, and figures as PNG.

use std::sync::Arc;

use rsandbox::{CellStatus, ContextOptions};

use crate::util;

/// Whether the sandbox's Python imports `module`: a loud SKIP (or a failure when the feature
/// is expected) when it does not.
fn python_has(module: &str, feature: &str) -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok || util::missing(feature, &format!("/usr/bin/python3 cannot import {module}"))
}

#[test]
fn ipython_gives_magics_and_its_display_formatter() {
    let _g = util::shared();
    if !python_has("IPython", "ipython") {
        return;
    }
    let inst = Arc::new(util::sandbox().create().unwrap());
    let ctx = inst.context(ContextOptions::default()).unwrap();
    let run = |code: &str| {
        ctx.execute(code, Some(util::allow(60.0)), None, &mut |_| {})
            .unwrap()
    };
    let e = run("%time x = 6 * 7");
    assert_eq!(e.status, CellStatus::Ok, "{e:?}");
    assert!(e.stdout.contains("Wall time"), "{e:?}");
    assert_eq!(run("x").text.as_deref(), Some("42"));
    let e = run("from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))");
    assert_eq!(e.results.len(), 1, "{e:?}");
    assert_eq!(e.results[0].data["text/html"], "<b>bold</b>");
    assert!(!e.results[0].main);
    let e = run("!echo from-a-shell");
    assert_eq!(e.stdout, "from-a-shell\n", "{e:?}");
    let e = run("1/0");
    let tb = &e.error.unwrap().traceback;
    assert!(
        tb.contains("ZeroDivisionError") && !tb.contains('\x1b'),
        "{tb}"
    );
}

#[test]
fn matplotlib_figures_come_back_as_png() {
    let _g = util::shared();
    if !python_has("matplotlib", "ipython") {
        return;
    }
    let inst = Arc::new(util::sandbox().create().unwrap());
    for ipython in [false, true] {
        let ctx = inst
            .context(ContextOptions::default().ipython(ipython))
            .unwrap();
        let run = |code: &str| {
            ctx.execute(code, Some(util::allow(60.0)), None, &mut |_| {})
                .unwrap()
        };
        let e = run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()");
        assert_eq!(e.status, CellStatus::Ok, "{e:?}");
        let pngs: Vec<_> = e
            .results
            .iter()
            .filter(|r| r.data.contains_key("image/png"))
            .collect();
        assert_eq!(pngs.len(), 1, "ipython={ipython}: {e:?}");
        let png = pngs[0].data["image/png"].as_str().unwrap();
        assert!(png.starts_with("iVBORw0KGgo"), "a PNG in base64");
        let e = run("fig = plt.figure()\nplt.plot([0, 1])\nfig");
        assert!(
            e.results
                .iter()
                .any(|r| r.main && r.data.contains_key("image/png")),
            "ipython={ipython}: {e:?}"
        );
    }
}
