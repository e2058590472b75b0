//! The server in mini-redis's shape: accept loops per endpoint, one task per connection (at
//! most `MAX_CONNECTIONS`, each holding a semaphore permit), one shutdown signal every task
//! watches, and a drain that waits on those permits and on the run slots instead of polling.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::job::Sandboxes;
use super::listen::Endpoint;
use super::pool::Pool;
use super::router::{route, Peer};
use super::session::{self, Sessions};
use super::Config;

/// Connections open at once at most; past it new ones are closed at once (fds are finite).
const MAX_CONNECTIONS: usize = 4096;

/// How long cancelled runs get to end (their instances are destroyed before their slots are
/// released) before `serve` goes on without them.
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// What every connection shares.
pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) pool: Pool,
    pub(crate) sandboxes: Arc<Sandboxes>,
    pub(crate) sessions: Sessions,
    pub(crate) started: Instant,
    /// One permit per open connection, held by its task until it ends.
    connections: Arc<Semaphore>,
}

impl Ctx {
    fn new(config: Config) -> Ctx {
        Ctx {
            pool: Pool::new(config.slots.max(1), config.queue),
            sandboxes: Arc::new(Sandboxes::new(config.slots.max(1))),
            sessions: Sessions::new(config.sessions.clone()),
            config,
            started: Instant::now(),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Resolves once no connection is open: every permit is back.
    async fn connections_closed(&self) {
        let _ = self.connections.acquire_many(MAX_CONNECTIONS as u32).await;
    }
}

/// The shutdown signal as each task sees it (mini-redis's `Shutdown`): `recv` resolves once
/// shutdown has begun, at once if it already has.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) async fn recv(&mut self) {
        // The sender lives until `serve` returns; were it gone, that too means stop.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Serves one connection until it closes, or until shutdown lets its request in flight finish.
/// `_permit` counts it as open until then.
async fn connection<IO>(
    ctx: Arc<Ctx>,
    io: IO,
    peer: Peer,
    mut shutdown: Shutdown,
    _permit: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let c = ctx.clone();
        async move { Ok::<_, Infallible>(route(c, peer, req).await) }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let conn = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.recv() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

type Accepting<'a, T> = Pin<Box<dyn Future<Output = std::io::Result<T>> + Send + 'a>>;

/// The next accepted connection and its permit; `None` once shutdown begins. Accept errors
/// (EMFILE, ...) pause briefly; a connection past `MAX_CONNECTIONS` is closed at once.
async fn next_conn<'a, T>(
    ctx: &Ctx,
    shutdown: &mut Shutdown,
    mut accept: impl FnMut() -> Accepting<'a, T>,
) -> Option<(T, OwnedSemaphorePermit)> {
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = shutdown.recv() => return None,
        };
        match accepted {
            Ok(s) => match ctx.connections.clone().try_acquire_owned() {
                Ok(permit) => return Some((s, permit)),
                Err(_) => drop(s),
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Who a Unix-socket client is, by its peer credentials.
fn unix_peer(ctx: &Ctx, s: &tokio::net::UnixStream) -> Peer {
    let (allowed, uid) = match s.peer_cred() {
        Ok(c) => (ctx.config.access.allows(c.uid(), c.gid(), c.pid()), c.uid()),
        Err(_) => (false, u32::MAX),
    };
    if !allowed {
        eprintln!("rsandbox serve: refused uid {uid} on the unix socket (peer credentials)");
    }
    Peer::Unix { allowed, uid }
}

/// Accepts on `ep` until shutdown, one task per connection.
async fn accept_loop(ctx: Arc<Ctx>, ep: Endpoint, shutdown: Shutdown) {
    let mut stop_accepting = shutdown.clone();
    match ep {
        Endpoint::Unix { listener, .. } => {
            let _ = listener.set_nonblocking(true);
            let Ok(l) = tokio::net::UnixListener::from_std(listener) else {
                return;
            };
            while let Some(((s, _), permit)) =
                next_conn(&ctx, &mut stop_accepting, || Box::pin(l.accept())).await
            {
                let peer = unix_peer(&ctx, &s);
                tokio::spawn(connection(ctx.clone(), s, peer, shutdown.clone(), permit));
            }
        }
        Endpoint::Tcp { listener } => {
            let _ = listener.set_nonblocking(true);
            let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Some(((s, _), permit)) =
                next_conn(&ctx, &mut stop_accepting, || Box::pin(l.accept())).await
            {
                let _ = s.set_nodelay(true);
                let peer = Peer::Tcp;
                tokio::spawn(connection(ctx.clone(), s, peer, shutdown.clone(), permit));
            }
        }
    }
}

/// Serves `endpoints` until `shutdown` completes; then stops accepting, removes its socket
/// files, lets runs in flight finish for `config.grace`, cancels what is left, and returns
/// once every run's instance is gone.
pub async fn serve(
    endpoints: Vec<Endpoint>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let ctx = Arc::new(Ctx::new(config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Shutdown(stop_rx);
    let sockets = socket_files(&endpoints);
    let mut tasks = JoinSet::new();
    for ep in endpoints {
        tasks.spawn(accept_loop(ctx.clone(), ep, stop.clone()));
    }
    tasks.spawn(session::reaper(ctx.clone(), stop));
    shutdown.await;
    eprintln!(
        "rsandbox serve: shutting down: {} running, {} queued; waiting up to {:.0}s",
        ctx.pool.running(),
        ctx.pool.queued(),
        ctx.config.grace.as_secs_f64()
    );
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    for p in &sockets {
        let _ = std::fs::remove_file(p);
    }
    drain(&ctx).await;
    session::close_all(&ctx).await;
    let sandboxes = ctx.sandboxes.clone();
    let _ = tokio::task::spawn_blocking(move || sandboxes.close()).await;
    Ok(())
}

/// The socket files to remove at shutdown (none for sockets systemd made).
fn socket_files(endpoints: &[Endpoint]) -> Vec<PathBuf> {
    endpoints
        .iter()
        .filter_map(|ep| match ep {
            Endpoint::Unix { remove, .. } => remove.clone(),
            Endpoint::Tcp { .. } => None,
        })
        .collect()
}

/// Lets connections and runs in flight finish for the grace period, then cancels every run
/// and waits (bounded) until their instances are destroyed and their slots released.
async fn drain(ctx: &Ctx) {
    // Accepting has stopped: once no connection is open no new run can start, so waiting for
    // the connections and then for the slots is waiting for both at once.
    let idle = async {
        ctx.connections_closed().await;
        ctx.pool.idle().await;
    };
    if tokio::time::timeout(ctx.config.grace, idle).await.is_err() {
        eprintln!(
            "rsandbox serve: grace period over: cancelling {} runs",
            ctx.pool.running()
        );
    }
    ctx.pool.close_and_cancel();
    let _ = tokio::time::timeout(CANCEL_WAIT, ctx.pool.idle()).await;
}
