//! The command line: clap definitions, turning options into a `Sandbox` and a `Command`,
//! printing, and exit codes (DESIGN.md §4).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use rsandbox::egress::Rule;
use rsandbox::{defaults, Command, Net, Outcome, Sandbox, Status, Stdin};

mod client;
pub mod repl;
pub mod serve;
pub mod session;
pub mod tty;
pub use serve::ServeArgs;

#[derive(Parser)]
#[command(
    name = "rsandbox",
    version,
    about = "Run untrusted code in fresh Linux namespaces, without containers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Cmd {
    /// Run a script, Python code (-c) or any program (after --) in a fresh sandbox.
    Run(RunArgs),
    /// Run the daemon: HTTP/1.1 + JSON on a Unix socket (and optionally TCP), with the native
    /// API and SandboxFusion's /run_code.
    Serve(ServeArgs),
    /// Sessions on a daemon: create one, run in it many times, copy files in and out, remove it.
    Session(session::SessionArgs),
    /// An interactive Python prompt whose variables persist, in a fresh local sandbox.
    Repl(repl::ReplArgs),
    /// Show what this host supports and what would enforce each limit.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 256M, 1G, 4096)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v < 1e9) {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `HOST[:INSIDE]`.
fn parse_bind(s: &str) -> Result<(PathBuf, Option<PathBuf>), String> {
    match s.split_once(':') {
        Some((h, i)) if !h.is_empty() && !i.is_empty() => Ok((h.into(), Some(i.into()))),
        None if !s.is_empty() => Ok((s.into(), None)),
        _ => Err(format!("{s:?} is not HOST[:INSIDE]")),
    }
}

/// `HOST:INSIDE`.
fn parse_file(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once(':') {
        Some((h, i)) if !h.is_empty() && !i.is_empty() => Ok((h.into(), i.to_string())),
        _ => Err(format!(
            "{s:?} is not HOST:INSIDE (INSIDE is relative to the work dir)"
        )),
    }
}

#[derive(Args)]
#[command(
    after_help = "Exit status: the program's own; 128+N when killed by signal N; 124 timeout; \
125 the sandbox failed; 126 not executable; 127 not found.\n\nExamples:\n  rsandbox run script.py\n  \
rsandbox run --timeout 5 --json -c 'print(1+1)'\n  rsandbox run --file data.csv:data.csv job.py\n  \
rsandbox run -- /bin/sh -c 'ls /'\n  rsandbox run -t --timeout 3600 -- /bin/bash\n  rsandbox run --gpus 1 -- nvidia-smi -L"
)]
pub struct RunArgs {
    /// Python code to run (python -c CODE).
    #[arg(short = 'c', value_name = "CODE", conflicts_with_all = ["script", "program"])]
    code: Option<String>,
    /// CPU quota, in CPUs (e.g. 0.5); programs are also pinned to ceil(CPUS) CPUs.
    #[arg(long, value_name = "CPUS", default_value = "1")]
    cpus: f64,
    /// Memory limit in MiB (no swap); an OOM kill is reported as "memory".
    #[arg(long, value_name = "MB", default_value = "512")]
    mem: u64,
    /// Maximum processes and threads.
    #[arg(long, value_name = "N", default_value = "256")]
    pids: u64,
    /// CPU time limit of the run in seconds, all its processes together.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    cpu_time: Option<Duration>,
    /// Wall-clock timeout in seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "30")]
    timeout: Duration,
    /// Size of /tmp (K, M, G suffixes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    tmp_size: u64,
    /// Size of the work dir /home/sandbox (K, M, G suffixes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    work_size: u64,
    /// Output kept per stream, in bytes (K, M, G suffixes); the rest is counted and dropped.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "1M")]
    output_limit: u64,
    /// Network: none (no interfaces), loopback (a private lo), allowlist (out through
    /// rsandbox's proxy to the --allow-host destinations only) or all (out through the proxy to
    /// anything but loopback, private, link-local and the host's own addresses) [default: none]
    #[arg(long, value_name = "MODE")]
    net: Option<Net>,
    /// Let the run reach this destination through the proxy: example.org (ports 80 and 443),
    /// example.org:8443, *.example.org (subdomains), 127.0.0.1:8080, [::1]:8080. Repeatable;
    /// implies --net allowlist.
    #[arg(long, value_name = "PATTERN")]
    allow_host: Vec<Rule>,
    /// Proxy connections the run may hold open at once.
    #[arg(long, value_name = "N", default_value_t = defaults::EGRESS_MAX_CONNS)]
    egress_max_conns: usize,
    /// Bind a host path read-only (INSIDE defaults to HOST). Repeatable.
    #[arg(long, value_name = "HOST[:INSIDE]", value_parser = parse_bind)]
    ro: Vec<(PathBuf, Option<PathBuf>)>,
    /// Bind a host path read-write (INSIDE defaults to HOST). Repeatable.
    #[arg(long, value_name = "HOST[:INSIDE]", value_parser = parse_bind)]
    rw: Vec<(PathBuf, Option<PathBuf>)>,
    /// Copy a host file into the work dir first. Repeatable.
    #[arg(long, value_name = "HOST:INSIDE", value_parser = parse_file)]
    file: Vec<(PathBuf, String)>,
    /// Set an environment variable. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Feed the program's stdin from a file, or - for this process's stdin [default: empty]
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<PathBuf>,
    /// Run the program on a terminal of the sandbox (a new pty as its stdin, stdout, stderr and
    /// controlling terminal) relayed to this one, which must be a terminal: e.g. `-t -- /bin/bash`.
    #[arg(short = 't', long, conflicts_with_all = ["stdin", "daemon"])]
    tty: bool,
    /// Ptys the sandbox's own /dev/pts may hold at once (1 to 1024); one more fails with ENOSPC.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_PTYS)]
    max_ptys: u32,
    /// Python interpreter (a real one, a pyenv shim or a virtualenv's python) [default: /usr/bin/python3]
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Take system directories from this tree (e.g. made by debootstrap) instead of the host's.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// seccomp profile: default, strict, none, or an OCI/Docker JSON file.
    #[arg(long, value_name = "PROFILE", default_value = "default")]
    seccomp: rsandbox::seccomp::Profile,
    /// GPUs for the run, chosen among those no other run holds [default: 0, no GPU node at all]
    #[arg(long, value_name = "N", conflicts_with = "gpu_devices")]
    gpus: Option<u32>,
    /// These host GPUs, by the N of /dev/nvidiaN (e.g. 0,2).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    gpu_devices: Vec<u32>,
    /// Let the run hold its GPUs together with other sharing runs [default: exclusive]
    #[arg(long)]
    gpu_share: bool,
    /// Wait up to SECS for enough free GPUs [default: fail at once]
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    gpu_wait: Option<Duration>,
    /// Fail instead of running with a weaker layer when the kernel lacks Landlock or seccomp.
    #[arg(long)]
    strict: bool,
    /// Print the JSON report (schema v1) on stdout instead of passing output through.
    #[arg(long)]
    json: bool,
    /// Send the run to the daemon listening on this Unix socket instead of running it here.
    #[arg(long, value_name = "SOCKET")]
    daemon: Option<PathBuf>,
    /// A script to copy into the work dir and run (.py with Python, .sh with /bin/sh, else
    /// its #! line), followed by its arguments.
    #[arg(value_name = "SCRIPT")]
    script: Option<PathBuf>,
    #[arg(value_name = "ARGS", allow_hyphen_values = true)]
    script_args: Vec<OsString>,
    /// Any program and its arguments, after --.
    #[arg(last = true, value_name = "PROGRAM")]
    program: Vec<OsString>,
}

fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| {
            if m.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        })
        .unwrap_or(0o644)
}

/// How a script runs: by its extension, else by its `#!` line.
enum Script {
    Python,
    Shell,
    Shebang,
}

impl Script {
    fn of(name: &str, data: &[u8]) -> anyhow::Result<Script> {
        if name.ends_with(".py") {
            Ok(Script::Python)
        } else if name.ends_with(".sh") {
            Ok(Script::Shell)
        } else if data.starts_with(b"#!") {
            Ok(Script::Shebang)
        } else {
            bail!("cannot tell how to run {name}: it has no .py or .sh extension and no #! line")
        }
    }

    /// The mode the copy in the work dir needs.
    fn mode(&self) -> u32 {
        match self {
            Script::Shebang => 0o755,
            _ => 0o644,
        }
    }
}

/// Reads a script: (its file name, its content).
fn read_script(script: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let data =
        std::fs::read(script).with_context(|| format!("reading script {}", script.display()))?;
    let name = script
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("script name {} is not valid UTF-8", script.display()))?
        .to_string();
    Ok((name, data))
}

/// The command a script asks for, and the mode of its copy.
fn script_command(name: &str, data: &[u8]) -> anyhow::Result<(Command, u32)> {
    let kind = Script::of(name, data)?;
    let cmd = match kind {
        Script::Python => Command::python_script(name.to_string()),
        Script::Shell => Command::new("/bin/sh").arg(name),
        Script::Shebang => Command::new(format!("./{name}")),
    };
    Ok((cmd, kind.mode()))
}

/// The network `--net` and `--allow-host` ask for: `--allow-host` alone means `allowlist`.
pub(crate) fn network(net: Option<&Net>, hosts: &[Rule]) -> anyhow::Result<Net> {
    Ok(match (net, hosts) {
        (None, []) => Net::None,
        (None | Some(Net::Allowlist(_)), h) => Net::Allowlist(h.to_vec()),
        (Some(n), []) => n.clone(),
        (Some(n), _) => bail!(
            "--allow-host goes with --net allowlist, not --net {}",
            n.name()
        ),
    })
}

/// Builds the sandbox and command from the options; `Err` is a usage or setup error.
fn prepare(a: &RunArgs) -> anyhow::Result<(Sandbox, Command)> {
    let mut b = Sandbox::builder()
        .cpus(a.cpus)
        .memory(
            a.mem
                .checked_mul(1 << 20)
                .ok_or_else(|| anyhow!("--mem {} is too large", a.mem))?,
        )
        .pids(a.pids)
        .timeout(a.timeout)
        .tmp_size(a.tmp_size)
        .work_size(a.work_size)
        .output_limit(a.output_limit)
        .net(network(a.net.as_ref(), &a.allow_host)?)
        .max_ptys(a.max_ptys)
        .egress_max_conns(a.egress_max_conns)
        .seccomp(a.seccomp.clone())
        .strict(a.strict);
    for (h, i) in &a.ro {
        b = b.ro(h.clone(), i.clone());
    }
    for (h, i) in &a.rw {
        b = b.rw(h.clone(), i.clone());
    }
    for (k, v) in &a.env {
        b = b.env(k.clone(), v.clone());
    }
    if let Some(p) = &a.python {
        b = b.python(p.clone());
    }
    if let Some(r) = &a.rootfs {
        b = b.rootfs(r.clone());
    }
    if let Some(t) = a.cpu_time {
        b = b.cpu_time(t);
    }
    if let Some(n) = a.gpus {
        b = b.gpus(n);
    }
    if !a.gpu_devices.is_empty() {
        b = b.gpu_devices(&a.gpu_devices);
    }
    if let Some(t) = a.gpu_wait {
        b = b.gpu_wait(t);
    }
    b = b.gpu_share(a.gpu_share);
    let mut cmd = if let Some(code) = &a.code {
        Command::python(code.clone())
    } else if !a.program.is_empty() {
        if a.script.is_some() {
            bail!("give either a SCRIPT or a PROGRAM after --, not both");
        }
        Command::new(&a.program[0]).args(&a.program[1..])
    } else if let Some(script) = &a.script {
        let (name, data) = read_script(script)?;
        let (cmd, mode) = script_command(&name, &data)?;
        cmd.file(name, data, mode.max(file_mode(script)))
            .args(&a.script_args)
    } else {
        bail!("nothing to run: give a SCRIPT, -c CODE, or -- PROGRAM [ARGS...]");
    };
    for (host, inside) in &a.file {
        let data =
            std::fs::read(host).with_context(|| format!("reading --file {}", host.display()))?;
        cmd = cmd.file(inside.clone(), data, file_mode(host));
    }
    if let Some(s) = &a.stdin {
        cmd = cmd.stdin(if s == Path::new("-") {
            Stdin::File("/dev/stdin".into())
        } else {
            Stdin::File(s.clone())
        });
    }
    Ok((b.build()?, cmd.pass_through(!a.json)))
}

/// `rsandbox run`: returns the process exit code.
pub fn run(a: &RunArgs) -> i32 {
    if let Some(socket) = &a.daemon {
        return client::run(a, socket);
    }
    let mut signal = None;
    let result = if a.tty {
        // Refused before anything is built: without a terminal there is nothing to relay.
        tty::require_terminal()
            .and_then(|_| prepare(a))
            .and_then(|(sb, cmd)| {
                let r = tty::relay(|term, cancel| sb.run(&cmd.terminal(term).cancel_on(cancel)))?;
                signal = r.signal;
                Ok(r.value?)
            })
    } else {
        prepare(a).and_then(|(sb, cmd)| sb.run(&cmd).map_err(anyhow::Error::from))
    };
    if let Some(sig) = signal {
        eprintln!("rsandbox: received signal {sig}; the run was cancelled");
        return 128 + sig;
    }
    match result {
        Ok(out) => {
            if a.json {
                println!("{}", serde_json::to_string(&out).expect("serializable"));
            } else {
                notes(&out, a.timeout);
            }
            out.exit_code_for_cli()
        }
        Err(e) => {
            // rsandbox errors already name their cause; others carry context chains.
            let (stage, code, message) = match e.downcast_ref::<rsandbox::Error>() {
                Some(re) => (re.stage(), re.exit_code(), re.to_string()),
                None => ("usage", 125, format!("{e:#}")),
            };
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"stage": stage, "message": message}})
                );
            } else {
                eprintln!("rsandbox: {message}");
            }
            code
        }
    }
}

/// One-line notes on stderr for what a pass-through run cannot show otherwise.
fn notes(out: &Outcome, timeout: Duration) {
    if out.status == Status::Timeout {
        eprintln!(
            "rsandbox: timed out after {:.1}s; every process of the run was killed",
            timeout.as_secs_f64()
        );
    } else if let Some(note) = out.limit_note() {
        eprintln!("rsandbox: {note}");
    }
    for (name, trunc, total) in [
        ("stdout", out.stdout_truncated, out.stdout_bytes),
        ("stderr", out.stderr_truncated, out.stderr_bytes),
    ] {
        if trunc {
            eprintln!("rsandbox: {name} truncated ({total} bytes written, limit --output-limit)");
        }
    }
}

/// `rsandbox check`.
pub fn check(json: bool) -> i32 {
    let probe = rsandbox::probe::host();
    let live = Sandbox::builder()
        .build()
        .and_then(|sb| sb.run(&Command::new("/bin/true")).map(|o| (sb, o)));
    let gpus = rsandbox::gpu::HostGpus::scan(Path::new("/dev"));
    let driver = rsandbox::gpu::DriverFiles::host();
    let (works, enforcement, error) = match &live {
        Ok((sb, o)) => (o.status == Status::Ok, Some(sb.enforcement().clone()), None),
        Err(e) => (false, None, Some(e.to_string())),
    };
    if json {
        let v = serde_json::json!({
            "host": probe,
            "sandbox_works": works,
            "error": error,
            "enforcement": enforcement,
            "gpus": {
                "devices": gpus.gpus.values().map(|n| &n.name).collect::<Vec<_>>(),
                "control": gpus.control.iter().map(|n| &n.name).collect::<Vec<_>>(),
                "driver_libraries": driver.libraries,
                "tools": driver.tools,
            },
            "defaults": {
                "timeout_s": defaults::TIMEOUT.as_secs(), "tmp_size": defaults::TMP_SIZE,
                "work_size": defaults::WORK_SIZE, "shm_size": defaults::SHM_SIZE,
                "output_limit": defaults::OUTPUT_LIMIT, "nofile": defaults::NOFILE,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    } else {
        println!("kernel            {}", probe.kernel);
        println!(
            "running as        uid {}{}",
            probe.euid,
            if probe.euid == 0 {
                " (root: instances get host uids 1000000000+slot)"
            } else {
                " (unprivileged: instances map to this uid)"
            }
        );
        println!(
            "user namespaces   {}",
            if probe.userns {
                "yes".to_string()
            } else {
                format!("no ({})", probe.userns_note.clone().unwrap_or_default())
            }
        );
        let mounts: Vec<String> = probe
            .cgroup_mounts
            .iter()
            .map(|m| {
                format!(
                    "{} v{}{}",
                    m.path.display(),
                    m.version,
                    if m.controllers.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", m.controllers.join(","))
                    }
                )
            })
            .collect();
        println!(
            "cgroups           {:?}: {}",
            probe.cgroup_layout,
            mounts.join("; ")
        );
        println!(
            "landlock          {}",
            if probe.landlock_abi > 0 {
                format!("ABI {}", probe.landlock_abi)
            } else {
                "no".into()
            }
        );
        println!(
            "seccomp           {}",
            if probe.seccomp {
                probe.seccomp_actions.join(" ")
            } else {
                "no".into()
            }
        );
        let names = |v: Vec<&String>| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        if gpus.gpus.is_empty() {
            println!("gpus              none (no /dev/nvidiaN)");
        } else {
            println!(
                "gpus              {} ({}); control: {}; driver: {} libraries, tools: {}",
                gpus.gpus.len(),
                names(gpus.gpus.values().map(|n| &n.name).collect()),
                names(gpus.control.iter().map(|n| &n.name).collect()),
                driver.libraries.len(),
                driver
                    .tools
                    .iter()
                    .map(|t| t.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        match (&enforcement, &error) {
            (Some(e), _) => {
                println!("sandbox           works (ran /bin/true in fresh user/mount/pid/net/ipc/uts/cgroup namespaces)");
                println!("enforcement       wall={} memory={} cpu={} pids={} devices={} landlock={} seccomp={}", e.wall, e.memory, e.cpu, e.pids, e.devices, e.landlock, e.seccomp);
            }
            (None, Some(err)) => println!("sandbox           FAILS: {err}"),
            _ => {}
        }
    }
    if works {
        0
    } else {
        125
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_garbage() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in ["", "12Q", "M", "-1", "1.5G", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binds_files_and_env_parse() {
        assert_eq!(parse_bind("/a"), Ok(("/a".into(), None)));
        assert_eq!(parse_bind("/a:/b"), Ok(("/a".into(), Some("/b".into()))));
        assert!(parse_bind(":/b").is_err() && parse_bind("/a:").is_err());
        assert_eq!(
            parse_file("d.csv:in/d.csv"),
            Ok(("d.csv".into(), "in/d.csv".to_string()))
        );
        assert!(parse_file("d.csv").is_err());
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("NOEQUALS").is_err() && parse_env("=x").is_err());
        assert!(parse_secs("0").is_err() && parse_secs("abc").is_err());
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn scripts_run_by_extension_then_shebang() {
        assert!(script_command("a.py", b"print(1)").is_ok());
        assert!(script_command("a.sh", b"echo").is_ok());
        assert_eq!(script_command("tool", b"#!/bin/sh\necho").unwrap().1, 0o755);
        assert!(script_command("blob", b"\x7fELF").is_err());
    }
}
