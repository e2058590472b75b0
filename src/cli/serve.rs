//! `rsandbox serve`: options, listeners (socket activation first), access rules, the tokio
//! runtime, and SIGTERM/SIGINT as the shutdown signal. The daemon itself is `rsandbox::daemon`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use rsandbox::daemon::{self, listen, Endpoint};

#[derive(Args)]
#[command(
    after_help = "Endpoints: POST /v1/run, /v1/sessions (create, run, files, delete), GET \
/v1/health, GET /metrics, SandboxFusion's POST /run_code and GET /v1/ping, and Maze's \
/create_session, /execute/ID, /close/ID (api/openapi.yaml).\n\nExamples:\n  \
rsandbox serve\n  rsandbox serve --socket /tmp/rs.sock --group sandboxers\n  \
rsandbox serve --listen 127.0.0.1:8080 --no-auth       # a local SandboxFusion drop-in\n  \
curl --unix-socket /run/rsandbox/rsandbox.sock -d '{\"code\":\"print(1)\"}' http://x/v1/run"
)]
pub struct ServeArgs {
    /// Unix socket to listen on [default: /run/rsandbox/rsandbox.sock as root,
    /// $XDG_RUNTIME_DIR/rsandbox.sock otherwise]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also let members of this group use the Unix socket (owner and root always may).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Also listen on TCP (repeatable); needs --token-file, or --no-auth on loopback.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Vec<SocketAddr>,
    /// File holding the bearer token TCP clients must send (Authorization: Bearer TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve TCP without authentication: loopback addresses only (for SandboxFusion clients,
    /// which send no token).
    #[arg(long)]
    no_auth: bool,
    /// Runs at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    slots: Option<usize>,
    /// Requests that may wait for a slot; more get 503 [default: 64 per slot]
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// On SIGTERM, how long runs in flight may finish before they are cancelled.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "30")]
    grace: Duration,
    /// Largest wall timeout a request may ask for.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "300")]
    max_timeout: Duration,
    /// Largest memory limit a request may ask for, in MiB.
    #[arg(long, value_name = "MB", default_value = "4096")]
    max_memory: u64,
    /// Largest pids limit a request may ask for.
    #[arg(long, value_name = "N", default_value = "4096")]
    max_pids: u64,
    /// The most egress a request may ask for: none (none and loopback), allowlist (also
    /// limits.network "allowlist" with limits.allowed_hosts) or all (also "all").
    #[arg(long, value_name = "MODE", default_value = "none")]
    max_network: daemon::NetworkCap,
    /// Largest CPU quota a request may ask for [default: the number of cores]
    #[arg(long, value_name = "CPUS")]
    max_cpus: Option<f64>,
    /// How long a request for GPUs that exist but are held by other runs waits for them in the
    /// queue before it gets 503.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "300")]
    gpu_wait: Duration,
    /// Live sessions at most; more get 503.
    #[arg(long, value_name = "N", default_value = "256")]
    max_sessions: usize,
    /// Stateful contexts (interpreters keeping variables) per session at most; more get 503.
    #[arg(long, value_name = "N", default_value = "8")]
    max_contexts: usize,
    /// Memory the live sessions' limits may add up to, in MiB; a session that does not fit
    /// gets 503 [default: half of this host's memory]
    #[arg(long, value_name = "MB")]
    session_memory_mb: Option<u64>,
    /// A session with no run or file operation for this long ends (a request may ask for
    /// another idle_timeout, up to --max-session-lifetime).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "600")]
    session_idle_timeout: Duration,
    /// A session ends this long after it was created, busy or not (a request may ask for
    /// another lifetime, up to --max-session-lifetime).
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "3600")]
    session_lifetime: Duration,
    /// Largest idle timeout or lifetime a session may ask for.
    #[arg(long, value_name = "SECS", value_parser = super::parse_secs, default_value = "86400")]
    max_session_lifetime: Duration,
    /// Largest request body (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", value_parser = super::parse_size, default_value = "64M")]
    max_body: u64,
}

fn endpoints(a: &ServeArgs) -> anyhow::Result<(Vec<Endpoint>, daemon::Config)> {
    let mut config = daemon::Config::default();
    if let Some(g) = &a.group {
        config.access.group = Some(listen::group_id(g).with_context(|| format!("--group {g}"))?);
    }
    if let Some(s) = a.slots {
        if s == 0 {
            bail!("--slots must be at least 1");
        }
        config.slots = s;
        config.queue = s * rsandbox::defaults::QUEUE_PER_SLOT;
    }
    if let Some(q) = a.queue {
        config.queue = q;
    }
    config.grace = a.grace;
    config.max_body =
        usize::try_from(a.max_body).map_err(|_| anyhow!("--max-body is too large"))?;
    config.max.timeout = a.max_timeout;
    config.max.gpu_wait = a.gpu_wait;
    config.max.memory = a
        .max_memory
        .checked_mul(1 << 20)
        .filter(|m| *m >= 8 << 20)
        .ok_or_else(|| anyhow!("--max-memory must be 8..2^44 MiB"))?;
    config.max.pids = a.max_pids.max(1);
    config.max.network = a.max_network;
    let sessions = &mut config.sessions;
    sessions.max = a.max_sessions;
    sessions.max_contexts = a.max_contexts;
    if let Some(m) = a.session_memory_mb {
        sessions.memory = m
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("--session-memory-mb is too large"))?;
    }
    sessions.max_lifetime = a.max_session_lifetime;
    if a.session_idle_timeout > a.max_session_lifetime
        || a.session_lifetime > a.max_session_lifetime
    {
        bail!(
            "--session-idle-timeout and --session-lifetime must not exceed --max-session-lifetime"
        );
    }
    (sessions.idle, sessions.lifetime) = (a.session_idle_timeout, a.session_lifetime);
    if let Some(c) = a.max_cpus {
        if !(c >= 0.01 && c <= daemon::cores() as f64) {
            bail!("--max-cpus {c} is outside 0.01..={}", daemon::cores());
        }
        config.max.cpus = c;
    }

    // Refused before anything is bound.
    if a.token_file.is_none() {
        if !a.listen.is_empty() && !a.no_auth {
            bail!("TCP needs --token-file FILE, or --no-auth on a loopback address");
        }
        if let Some(bad) = a.listen.iter().find(|t| !t.ip().is_loopback()) {
            bail!(
                "refusing --no-auth on {bad}: without a token only loopback addresses are allowed"
            );
        }
    }
    let mut eps = listen::from_systemd().context("taking the sockets systemd passed")?;
    if eps.is_empty() || a.socket.is_some() {
        let path = a.socket.clone().unwrap_or_else(listen::default_socket);
        eps.push(
            listen::bind_unix(&path, config.access.group)
                .with_context(|| format!("listening on {}", path.display()))?,
        );
    }
    for addr in &a.listen {
        eps.push(listen::bind_tcp(*addr).with_context(|| format!("listening on {addr}"))?);
    }
    let tcp: Vec<SocketAddr> = eps
        .iter()
        .filter_map(|e| match e {
            Endpoint::Tcp { listener } => listener.local_addr().ok(),
            _ => None,
        })
        .collect();
    if let Some(f) = &a.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading --token-file {}", f.display()))?;
        let t = t.trim();
        if t.len() < 16 {
            bail!("the token in {} is shorter than 16 characters", f.display());
        }
        config.token = Some(t.to_string());
    } else if !tcp.is_empty() {
        if !a.no_auth {
            bail!("TCP needs --token-file FILE, or --no-auth on a loopback address");
        }
        if let Some(bad) = tcp.iter().find(|t| !t.ip().is_loopback()) {
            bail!(
                "refusing --no-auth on {bad}: without a token only loopback addresses are allowed"
            );
        }
        for t in &tcp {
            eprintln!("rsandbox serve: WARNING: tcp:{t} has no authentication (--no-auth): every local user can run code through it");
        }
    }
    Ok((eps, config))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (inside the
/// runtime), not when the future is first polled, so a signal right after "ready" is caught.
fn terminated() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs the daemon; returns the exit code.
pub fn serve(a: &ServeArgs) -> i32 {
    // Before any thread: under systemd (Delegate=yes, cgroup v2) the daemon starts alone in the
    // root of its subtree, where instances' cgroups cannot get controllers while it sits there;
    // the cgroup setup moves it into a leaf of its own (`rsandbox-supervisor-PID`).
    if let Err(e) = rsandbox::cgroup_setup() {
        eprintln!("rsandbox serve: WARNING: cgroups cannot be used ({e}); limits fall back to rlimits and the watchdog");
    }
    // Still one thread: every instance is cloned from this small process, not from the
    // multi-threaded daemon (see `rsandbox::fork_server`). Without it they are cloned directly.
    if let Err(e) = rsandbox::fork_server::start() {
        eprintln!(
            "rsandbox serve: WARNING: no fork server ({e}); instances are cloned from the daemon"
        );
    }
    // The first build checks the host and runs the janitor: leftovers of a daemon that was
    // SIGKILLed are removed here, before anything is accepted.
    if let Err(e) = rsandbox::Sandbox::builder().build() {
        eprintln!("rsandbox serve: this host cannot run sandboxes: {e}");
        return 125;
    }
    let (eps, config) = match endpoints(a) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("rsandbox serve: {e:#}");
            return 125;
        }
    };
    for e in &eps {
        eprintln!("rsandbox serve: listening on {}", e.describe());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(daemon::cores().min(4))
        .max_blocking_threads(config.slots + 16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rsandbox serve: starting the runtime: {e}");
            return 125;
        }
    };
    let shutdown = {
        let _in_runtime = rt.enter();
        match terminated() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("rsandbox serve: installing the SIGTERM handler: {e}");
                return 125;
            }
        }
    };
    eprintln!(
        "rsandbox serve: ready ({} slots, queue {}, pid {})",
        config.slots,
        config.queue,
        std::process::id()
    );
    let served = rt.block_on(daemon::serve(eps, config, shutdown));
    rsandbox::fork_server::stop();
    match served {
        Ok(()) => {
            eprintln!("rsandbox serve: stopped");
            0
        }
        Err(e) => {
            eprintln!("rsandbox serve: {e}");
            1
        }
    }
}
