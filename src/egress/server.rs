//! One instance's proxy: the accept loop over its two listening sockets, the connection bound,
//! and its end (dropping the `Proxy` ends the loop and every connection it started).

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use super::rules::Allow;
use super::stats::Counters;
use crate::outcome::NetworkStats;

/// What every connection of one proxy shares.
pub(super) struct Ctx {
    pub allow: Allow,
    pub counters: Arc<Counters>,
}

impl Ctx {
    /// The host's own addresses, read for each decision (they may change while a session
    /// lives); none when they cannot be read, which leaves the fixed closed ranges.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        crate::sys::host::interface_addresses().unwrap_or_default()
    }
}

/// A running proxy; dropping it stops it.
pub(crate) struct Proxy {
    counters: Arc<Counters>,
    _stop: oneshot::Sender<()>,
}

/// The process's proxy runtime: two worker threads, started with the first proxy and kept.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rsandbox-egress")
        .enable_io()
        .enable_time()
        .build()?;
    // A concurrent first call may have won; its runtime serves, ours is dropped unused (not in
    // an async context: callers are the library's synchronous paths).
    Ok(RT.get_or_init(|| rt))
}

impl Proxy {
    /// Starts serving on the instance's listening sockets (HTTP, SOCKS5).
    pub fn start(
        http: OwnedFd,
        socks: OwnedFd,
        allow: Allow,
        max_conns: usize,
    ) -> io::Result<Proxy> {
        let rt = runtime()?;
        let _enter = rt.enter();
        let listener = |fd: OwnedFd| {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        let (http, socks) = (listener(http)?, listener(socks)?);
        let counters = Arc::new(Counters::default());
        let ctx = Arc::new(Ctx {
            allow,
            counters: counters.clone(),
        });
        let (stop, stopped) = oneshot::channel();
        rt.spawn(serve(http, socks, ctx, max_conns.max(1), stopped));
        Ok(Proxy {
            counters,
            _stop: stop,
        })
    }

    /// The figures so far.
    pub fn stats(&self) -> NetworkStats {
        self.counters.snapshot()
    }
}

/// Which listener a connection came from.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Socks,
}

/// Accepts until the `Proxy` is dropped; then drops the connection set, which aborts every
/// connection still open.
async fn serve(
    http: TcpListener,
    socks: TcpListener,
    ctx: Arc<Ctx>,
    max_conns: usize,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(max_conns));
    let mut conns = JoinSet::new();
    loop {
        let (accepted, kind) = tokio::select! {
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = http.accept() => (a, Kind::Http),
            a = socks.accept() => (a, Kind::Socks),
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            // EMFILE and the like: pause rather than spin.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse_busy(&stream, kind, max_conns);
            continue;
        };
        let ctx = ctx.clone();
        conns.spawn(async move {
            let _permit = permit;
            match kind {
                Kind::Http => super::http::serve(stream, &ctx).await,
                Kind::Socks => super::socks::serve(stream, &ctx).await,
            }
        });
    }
}

/// Answers a connection over the bound without waiting on it (one non-blocking write), so a
/// flood costs the proxy no task per connection.
fn refuse_busy(stream: &TcpStream, kind: Kind, max: usize) {
    match kind {
        Kind::Http => {
            let body = format!("rsandbox: too many proxy connections (at most {max} at once)\n");
            let _ = stream.try_write(
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        // "No acceptable methods": the client sees a refusal, not a hang.
        Kind::Socks => {
            let _ = stream.try_write(&[5, 0xff]);
        }
    }
}
