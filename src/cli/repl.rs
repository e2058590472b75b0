//! `rsandbox repl`: an interactive Python prompt whose state persists, in a fresh local sandbox
//! (no daemon). Each entry is a cell of one context: output streams as it is written, the value
//! of an expression is shown, a traceback goes to stderr, Ctrl-C interrupts a running cell.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rsandbox::egress::Rule;
use rsandbox::{CellStatus, Context, ContextOptions, Event, Net, Sandbox};

#[derive(Args)]
#[command(
    after_help = "Each entry runs as a cell: variables persist until you leave (Ctrl-D). \
A block (a line ending in ':', open brackets, or a trailing backslash) goes on until an empty \
line. Ctrl-C interrupts a running cell.\n\nExamples:\n  rsandbox repl\n  rsandbox repl --mem 1024 \
--net allowlist --allow-host pypi.org"
)]
pub struct ReplArgs {
    /// CPU quota, in CPUs.
    #[arg(long, value_name = "CPUS", default_value = "1")]
    cpus: f64,
    /// Memory limit in MiB (no swap).
    #[arg(long, value_name = "MB", default_value = "512")]
    mem: u64,
    /// Maximum processes and threads.
    #[arg(long, value_name = "N", default_value = "256")]
    pids: u64,
    /// Each cell's timeout in seconds (it is interrupted, the state survives).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "300")]
    timeout: Duration,
    /// Network: none, loopback, allowlist (with --allow-host) or all.
    #[arg(long, value_name = "MODE")]
    net: Option<Net>,
    /// A destination the allowlist lets through (HOST, HOST:PORT, *.DOMAIN, IP:PORT).
    #[arg(long = "allow-host", value_name = "PATTERN")]
    allow_host: Vec<Rule>,
    /// The Python interpreter (default: the system's python3).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The standard-library path even where the sandbox's Python has IPython.
    #[arg(long)]
    no_ipython: bool,
    /// Environment of the interpreter (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_env)]
    env: Vec<(String, String)>,
}

/// `rsandbox repl`: returns the process exit code.
pub fn repl(a: &ReplArgs) -> i32 {
    match run(a) {
        Ok(()) => 0,
        Err(e) => {
            let code = e
                .downcast_ref::<rsandbox::Error>()
                .map_or(125, |e| e.exit_code());
            eprintln!("rsandbox: {e:#}");
            code
        }
    }
}

fn run(a: &ReplArgs) -> anyhow::Result<()> {
    let memory = a
        .mem
        .checked_mul(1 << 20)
        .ok_or_else(|| anyhow!("--mem {} is too large", a.mem))?;
    let mut b = Sandbox::builder()
        .cpus(a.cpus)
        .memory(memory)
        .pids(a.pids)
        .timeout(a.timeout)
        .net(super::network(a.net.as_ref(), &a.allow_host)?);
    if let Some(p) = &a.python {
        b = b.python(p.clone());
    }
    for (k, v) in &a.env {
        b = b.env(k.clone(), v.clone());
    }
    let inst = Arc::new(b.build()?.create()?);
    let mut opts = ContextOptions::default();
    if a.no_ipython {
        opts = opts.ipython(false);
    }
    let ctx = Arc::new(inst.context(opts)?);
    let _signals = on_interrupt(Arc::downgrade(&ctx))?;
    let stdin = io::stdin();
    let mut lines = stdin.lock();
    while let Some(code) = read_entry(&mut lines)? {
        if code.trim().is_empty() {
            continue;
        }
        let e = ctx.execute(&code, Some(a.timeout), None, &mut print_event)?;
        match e.status {
            CellStatus::Timeout => eprintln!("(the cell timed out after {:?})", a.timeout),
            CellStatus::Died => eprintln!("(the interpreter died; the next entry starts afresh)"),
            _ => {}
        }
        if e.context_restarted && e.status != CellStatus::Died {
            eprintln!("(the interpreter was restarted: earlier variables are gone)");
        }
    }
    drop(ctx);
    Arc::try_unwrap(inst)
        .map_err(|_| anyhow!("the instance is still in use"))?
        .destroy()?;
    Ok(())
}

/// Output as it arrives; an expression's value and a traceback when they come.
fn print_event(ev: Event<'_>) {
    match ev {
        Event::Stdout(b) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(b);
            let _ = out.flush();
        }
        Event::Stderr(b) => {
            let _ = io::stderr().write_all(b);
        }
        Event::Result(r) if r.main => {
            if let Some(t) = r.data.get("text/plain").and_then(|v| v.as_str()) {
                println!("{t}");
            }
        }
        Event::Result(r) => {
            let kinds: Vec<&str> = r.data.keys().map(String::as_str).collect();
            match r.data.get("text/plain").and_then(|v| v.as_str()) {
                Some(t) => println!("{t}"),
                None => println!("<display data: {}>", kinds.join(", ")),
            }
        }
        Event::Error(e) => eprint!("{}", e.traceback),
        _ => {}
    }
}

/// One entry: a line, or a block that goes on until an empty line. None at end of input.
fn read_entry(lines: &mut impl BufRead) -> io::Result<Option<String>> {
    let tty = rustix::termios::isatty(io::stdin());
    let prompt = |p: &str| {
        if tty {
            eprint!("{p}");
        }
    };
    prompt(">>> ");
    let mut entry = String::new();
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            if tty {
                eprintln!();
            }
            return Ok((!entry.is_empty()).then_some(entry));
        }
        let blank = line.trim().is_empty();
        entry.push_str(&line);
        if (blank && !entry.trim().is_empty()) || !continues(&entry) {
            return Ok(Some(entry));
        }
        prompt("... ");
    }
}

/// Whether an entry asks for more lines: an opened block, unclosed brackets or strings, or a
/// trailing backslash (a block ends at an empty line, as at Python's own prompt).
fn continues(entry: &str) -> bool {
    let last = entry.trim_end_matches('\n');
    if last.ends_with('\\') {
        return true;
    }
    let mut depth = 0i32;
    let mut quote: Option<&str> = None;
    let mut rest = entry;
    while let Some(c) = rest.chars().next() {
        if let Some(q) = quote {
            if rest.starts_with('\\') {
                rest = &rest[rest.char_indices().nth(2).map_or(rest.len(), |(i, _)| i)..];
                continue;
            }
            if rest.starts_with(q) {
                rest = &rest[q.len()..];
                quote = None;
                continue;
            }
        } else if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
            quote = Some(&rest[..3]);
            rest = &rest[3..];
            continue;
        } else if c == '"' || c == '\'' {
            quote = Some(&rest[..1]);
        } else if c == '#' {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
            continue;
        } else if "([{".contains(c) {
            depth += 1;
        } else if ")]}".contains(c) {
            depth -= 1;
        }
        rest = &rest[c.len_utf8()..];
    }
    let opened_block = entry
        .lines()
        .any(|l| l.split('#').next().unwrap_or("").trim_end().ends_with(':'));
    depth > 0 || quote.is_some_and(|q| q.len() == 3) || opened_block
}

/// Ctrl-C while a cell runs interrupts it (at the prompt it is ignored: Ctrl-D leaves).
fn on_interrupt(ctx: std::sync::Weak<Context>) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return drop(ready_tx.send(Err(e))),
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = match signal(SignalKind::interrupt()) {
                Ok(s) => s,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            while int.recv().await.is_some() {
                match ctx.upgrade() {
                    Some(c) => drop(c.interrupt()),
                    None => break,
                }
            }
        });
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(anyhow!("listening for Ctrl-C: {e}")),
        Err(_) => Err(anyhow!("the signal thread ended early")),
    }
}

#[cfg(test)]
mod tests {
    use super::continues;

    #[test]
    fn entries_continue_while_a_block_or_bracket_is_open() {
        assert!(!continues("x = 1\n"));
        assert!(continues("def f():\n"));
        assert!(continues("x = (1,\n"));
        assert!(!continues("x = (1,\n 2)\n"));
        assert!(continues("s = '''a\n"));
        assert!(!continues("s = 'a:'\n"));
        assert!(!continues("d = {'a': 1}\n"));
        assert!(continues("x = 1 + \\\n"));
        assert!(!continues("x = 1  # a comment with (\n"));
    }
}
