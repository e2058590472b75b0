//! The decision and the connection behind both proxies: check the target, resolve it, check
//! every address, connect to one that passed; then relay bytes both ways, counted, until
//! either side ends or the connection idles out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::rules::{closed, Host, Target};
use super::server::Ctx;
use crate::defaults::{EGRESS_CONNECT_TIMEOUT, EGRESS_IDLE_TIMEOUT};

/// Why no connection was made.
pub(super) enum Refusal {
    /// The rules refuse it (HTTP 403, SOCKS "not allowed by ruleset").
    Denied(String),
    /// Allowed, but the name did not resolve or no address answered (HTTP 502, SOCKS "host
    /// unreachable").
    Failed(String),
}

/// Checks `target` and connects to it, counting the decision.
pub(super) async fn open(target: &Target, ctx: &Ctx) -> Result<TcpStream, Refusal> {
    let r = decide(target, ctx).await;
    match &r {
        Err(Refusal::Denied(_)) => ctx.counters.denied(),
        Ok(_) | Err(Refusal::Failed(_)) => ctx.counters.allowed(),
    }
    let addrs = r?;
    connect(&addrs)
        .await
        .map_err(|e| Refusal::Failed(format!("rsandbox: cannot connect to {target}: {e}")))
}

/// The addresses `target` may be reached at, in the resolver's order (which puts IPv6 first
/// only where it is routed).
async fn decide(target: &Target, ctx: &Ctx) -> Result<Vec<SocketAddr>, Refusal> {
    let denied = || Refusal::Denied(format!("rsandbox: {target} is not in the allowlist"));
    let own = ctx.own_addresses();
    match &target.host {
        Host::Ip(ip) => {
            let addr = SocketAddr::new(*ip, target.port);
            if ctx.allow.address(addr, &own, false) {
                Ok(vec![addr])
            } else {
                Err(denied())
            }
        }
        Host::Name(name) => {
            if !ctx.allow.name(name, target.port) {
                return Err(denied());
            }
            let resolved = timeout(
                EGRESS_CONNECT_TIMEOUT,
                tokio::net::lookup_host((name.as_str(), target.port)),
            )
            .await
            .map_err(|_| Refusal::Failed(format!("rsandbox: resolving {name} timed out")))?
            .map_err(|e| Refusal::Failed(format!("rsandbox: cannot resolve {name}: {e}")))?;
            let mut ok = Vec::new();
            let mut shut = None;
            for a in resolved {
                if ctx.allow.address(a, &own, true) {
                    ok.push(a);
                } else {
                    shut = shut.or(Some(a));
                }
            }
            match (ok.is_empty(), shut) {
                (true, Some(a)) => Err(Refusal::Denied(format!(
                    "rsandbox: {target} is not in the allowlist: it resolves to {} ({}), which only a rule naming that address and port opens",
                    a.ip(),
                    closed(a.ip(), &own).unwrap_or("closed")
                ))),
                (true, None) => Err(Refusal::Failed(format!(
                    "rsandbox: {name} has no address"
                ))),
                _ => Ok(ok),
            }
        }
    }
}

/// Tries each address in turn (an IPv6 answer that cannot be routed fails at once and the
/// IPv4 one is next).
async fn connect(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addrs {
        match timeout(EGRESS_CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::from(std::io::ErrorKind::TimedOut),
        }
    }
    Err(last)
}

/// Relays between the client (inside) and the upstream until both directions end, either
/// fails, or nothing moves for the idle timeout. Bytes are counted as they are read, before
/// they are written on, so a report taken after the program read them includes them.
pub(super) async fn relay(client: TcpStream, upstream: TcpStream, ctx: &Ctx) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    ctx.counters.up(n);
                    last.store(start.elapsed().as_millis() as u64, Relaxed);
                    if uw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = uw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    ctx.counters.down(n);
                    last.store(start.elapsed().as_millis() as u64, Relaxed);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = cw.shutdown().await;
    };
    let idle = async {
        loop {
            let since = Duration::from_millis(last.load(Relaxed));
            let quiet = start.elapsed().saturating_sub(since);
            if quiet >= EGRESS_IDLE_TIMEOUT {
                return;
            }
            tokio::time::sleep(EGRESS_IDLE_TIMEOUT - quiet).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = idle => {}
    }
}
