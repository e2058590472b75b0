//! Contexts through the library: what a cell keeps, returns, prints and survives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rsandbox::{CellStatus, Context, ContextOptions, Event, Execution, Instance};

use crate::util;

fn instance() -> Arc<Instance> {
    Arc::new(util::sandbox().create().expect("creating an instance"))
}

fn plain(inst: &Arc<Instance>) -> Context {
    inst.context(ContextOptions::default().ipython(false))
        .expect("starting a context")
}

fn run(ctx: &Context, code: &str) -> Execution {
    ctx.execute(code, Some(util::allow(20.0)), None, &mut |_| {})
        .expect("executing a cell")
}

#[test]
fn variables_persist_and_the_last_expression_is_the_result() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    let a = run(&ctx, "x = 40\nprint('set')");
    assert_eq!(a.status, CellStatus::Ok, "{a:?}");
    assert_eq!(a.stdout, "set\n");
    assert_eq!(a.text, None);
    let b = run(&ctx, "x + 2");
    assert_eq!(b.text.as_deref(), Some("42"), "{b:?}");
    assert!(b.results.len() == 1 && b.results[0].main);
    assert_eq!(b.execution_count, a.execution_count + 1);
    assert!(!b.context_restarted);
    // A trailing semicolon suppresses the result, as in Jupyter.
    assert_eq!(run(&ctx, "x;").results.len(), 0);
}

#[test]
fn the_repr_protocol_gives_mime_bundles_without_ipython() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    let e = run(
        &ctx,
        "class T:\n    def _repr_html_(self): return '<b>t</b>'\n    def _repr_markdown_(self): return '*t*'\n    def __repr__(self): return 'T()'\ndisplay(T())\nT()",
    );
    assert_eq!(e.status, CellStatus::Ok, "{e:?}");
    assert_eq!(e.results.len(), 2, "{e:?}");
    assert!(!e.results[0].main && e.results[1].main);
    for r in &e.results {
        assert_eq!(r.data["text/html"], "<b>t</b>");
        assert_eq!(r.data["text/markdown"], "*t*");
        assert_eq!(r.data["text/plain"], "T()");
    }
}

#[test]
fn errors_keep_the_state_and_show_the_cells_source() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    run(&ctx, "y = 1");
    let e = run(&ctx, "def f():\n    return 1 / 0\nf()");
    assert_eq!(e.status, CellStatus::Error);
    let err = e.error.expect("an error");
    assert_eq!(err.name, "ZeroDivisionError");
    assert_eq!(err.value, "division by zero");
    assert!(err.traceback.contains("return 1 / 0"), "{}", err.traceback);
    assert!(err.traceback.starts_with("Traceback"), "{}", err.traceback);
    assert!(!err.traceback.contains('\x1b'), "no colour codes");
    assert!(!err.traceback.contains("driver"), "{}", err.traceback);
    assert_eq!(run(&ctx, "y").text.as_deref(), Some("1"));
}

#[test]
fn output_streams_while_the_cell_runs() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    let start = Instant::now();
    let mut first = None;
    let e = ctx
        .execute(
            "import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')",
            Some(util::allow(20.0)),
            None,
            &mut |ev| {
                if let Event::Stdout(b) = ev {
                    if first.is_none() && b.starts_with(b"early") {
                        first = Some(start.elapsed());
                    }
                }
            },
        )
        .unwrap();
    assert_eq!(e.stdout, "early\nlate\n");
    let first = first.expect("the first line arrived as an event");
    assert!(
        first < Duration::from_secs_f64(e.wall_ms / 1000.0 - 1.0),
        "the first line arrived at {first:?}, the cell took {} ms",
        e.wall_ms
    );
}

#[test]
fn output_of_c_code_and_subprocesses_is_captured_in_order() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    let e = run(
        &ctx,
        "import os, subprocess\nprint('a', flush=True)\nos.write(1, b'b\\n')\nsubprocess.run(['echo', 'c'])\nos.write(2, b'd\\n')",
    );
    assert_eq!(e.stdout, "a\nb\nc\n");
    assert_eq!(e.stderr, "d\n");
}

#[test]
fn a_timeout_interrupts_and_keeps_the_state() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    run(&ctx, "z = 7");
    let e = ctx
        .execute(
            "import time\nwhile True: time.sleep(0.05)",
            Some(Duration::from_millis(500)),
            None,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(e.status, CellStatus::Timeout, "{e:?}");
    assert!(!e.context_restarted);
    assert_eq!(
        e.error.as_ref().map(|x| x.name.as_str()),
        Some("KeyboardInterrupt")
    );
    assert_eq!(run(&ctx, "z").text.as_deref(), Some("7"));
}

#[test]
fn a_cell_that_ignores_the_interrupt_is_killed_and_the_context_restarted() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    run(&ctx, "z = 7");
    let e = ctx
        .execute(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.05)",
            Some(Duration::from_millis(500)),
            None,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(e.status, CellStatus::Timeout, "{e:?}");
    assert!(e.context_restarted, "{e:?}");
    let after = run(&ctx, "'z' in globals()");
    assert_eq!(after.text.as_deref(), Some("False"), "a fresh namespace");
}

#[test]
fn a_dead_interpreter_is_reported_and_the_next_cell_starts_afresh() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    run(&ctx, "w = 1");
    let e = run(&ctx, "import os\nprint('bye', flush=True)\nos._exit(3)");
    assert_eq!(e.status, CellStatus::Died, "{e:?}");
    assert_eq!(e.stdout, "bye\n");
    let next = run(&ctx, "'w' in globals()");
    assert!(next.context_restarted);
    assert_eq!(next.text.as_deref(), Some("False"));
}

#[test]
fn interrupt_from_another_thread_and_restart() {
    let _g = util::shared();
    let inst = instance();
    let ctx = Arc::new(plain(&inst));
    run(&ctx, "v = 5");
    assert!(!ctx.interrupt().unwrap(), "nothing runs yet");
    let c2 = ctx.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c2.interrupt().unwrap()
    });
    let e = run(&ctx, "import time\nwhile True: time.sleep(0.05)");
    assert!(t.join().unwrap());
    assert_eq!(e.status, CellStatus::Interrupted, "{e:?}");
    assert_eq!(run(&ctx, "v").text.as_deref(), Some("5"));
    ctx.restart().unwrap();
    assert_eq!(run(&ctx, "'v' in globals()").text.as_deref(), Some("False"));
}

#[test]
fn two_contexts_have_separate_namespaces_and_one_work_dir() {
    let _g = util::shared();
    let inst = instance();
    let a = plain(&inst);
    let b = plain(&inst);
    run(&a, "n = 'a'\nopen('shared.txt', 'w').write('from a')");
    run(&b, "n = 'b'");
    assert_eq!(run(&a, "n").text.as_deref(), Some("'a'"));
    assert_eq!(
        run(&b, "open('shared.txt').read()").text.as_deref(),
        Some("'from a'")
    );
}

#[test]
fn background_threads_and_processes_outlive_their_cell() {
    let _g = util::shared();
    let inst = instance();
    let ctx = plain(&inst);
    run(
        &ctx,
        "import threading, subprocess, time\nbox = []\nthreading.Thread(target=lambda: (time.sleep(0.3), box.append(1)), daemon=True).start()\np = subprocess.Popen(['sleep', '30'])",
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        run(&ctx, "box, p.poll()").text.as_deref(),
        Some("([1], None)")
    );
}

#[test]
fn the_output_cap_applies_per_cell() {
    let _g = util::shared();
    let sb = util::builder().output_limit(1000).build().unwrap();
    let inst = Arc::new(sb.create().unwrap());
    let ctx = plain(&inst);
    let e = run(&ctx, "print('x' * 5000)");
    assert!(
        e.stdout_truncated && e.stdout.len() == 1000,
        "{}",
        e.stdout.len()
    );
    let big = run(
        &ctx,
        "class P:\n    def _repr_html_(self): return 'h' * 5000\nP()",
    );
    assert!(big.stdout_truncated);
    assert!(big.results[0].data["text/plain"]
        .as_str()
        .unwrap()
        .contains("over the output cap"));
    let small = run(&ctx, "print('ok')");
    assert!(!small.stdout_truncated && small.stdout == "ok\n");
}
