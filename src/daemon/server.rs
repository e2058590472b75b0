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
    /// The sessions made through the Jupyter API, as kernels.
    pub(crate) kernels: super::jupyter::Kernels,
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
            kernels: Default::default(),
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
    // Upgrades: a Jupyter kernel's websocket takes the connection over.
    let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;
    use tokio::sync::oneshot;

    use super::*;

    /// A daemon on a socket in a temp dir (grace `grace`), and what stops it.
    fn start(
        grace: Duration,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let ep = super::super::listen::bind_unix(&path, None).unwrap();
        let config = Config {
            grace,
            ..Config::default()
        };
        let (tx, rx) = oneshot::channel();
        let served = tokio::spawn(serve(vec![ep], config, async {
            let _ = rx.await;
        }));
        (dir, path, tx, served)
    }

    /// Sends a request and reads its answer up to the end of the body.
    async fn ping(s: &mut UnixStream) -> String {
        s.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\"pong\"") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    /// An idle keep-alive connection does not hold shutdown up: it is closed, the socket file
    /// removed, and `serve` returns well within the grace period.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_idle_connections_and_removes_the_socket() {
        let (_dir, path, stop, served) = start(Duration::from_secs(30));
        let mut idle = UnixStream::connect(&path).await.unwrap();
        assert!(ping(&mut idle).await.starts_with("HTTP/1.1 200"));
        let t = Instant::now();
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(!path.exists());
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
    }

    /// A connection in the middle of a request holds the drain for the grace period, no longer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_in_flight_holds_shutdown_for_the_grace_period_only() {
        let grace = Duration::from_millis(300);
        let (_dir, path, stop, served) = start(grace);
        let mut busy = UnixStream::connect(&path).await.unwrap();
        // Headers begun, never finished.
        busy.write_all(b"POST /v1/run HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        let took = t.elapsed();
        assert!(took >= grace, "{took:?}");
        assert!(took < grace + Duration::from_secs(5), "{took:?}");
    }

    /// Connections past the limit are closed at once; their permits come back when they end.
    #[tokio::test(flavor = "current_thread")]
    async fn connection_permits_bound_and_count_open_connections() {
        let ctx = Ctx::new(Config::default());
        let permits: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| ctx.connections.clone().try_acquire_owned().unwrap())
            .collect();
        assert!(ctx.connections.clone().try_acquire_owned().is_err());
        let mut closed = Box::pin(ctx.connections_closed());
        assert!(futures_poll(&mut closed).is_none());
        drop(permits);
        assert!(futures_poll(&mut closed).is_some());
    }

    /// Polls a future once.
    fn futures_poll<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(Noop));
        let mut cx = std::task::Context::from_waker(&waker);
        match Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
