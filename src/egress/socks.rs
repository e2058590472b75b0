//! The SOCKS5 proxy on `127.0.0.1:1080` inside (RFC 1928): no authentication, `CONNECT` only,
//! names resolved by the proxy (`socks5h://`). A refusal is a SOCKS reply code.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::relay::{self, Refusal};
use super::rules::{Host, Target};
use super::server::Ctx;
use crate::defaults::EGRESS_HEADER_TIMEOUT;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const REP_OK: u8 = 0;
const REP_FAILURE: u8 = 1;
const REP_NOT_ALLOWED: u8 = 2;
const REP_HOST_UNREACHABLE: u8 = 4;
const REP_CMD_UNSUPPORTED: u8 = 7;
const REP_ATYP_UNSUPPORTED: u8 = 8;

/// Serves one client connection.
pub(super) async fn serve(mut client: TcpStream, ctx: &Ctx) {
    let target = match timeout(EGRESS_HEADER_TIMEOUT, handshake(&mut client)).await {
        Ok(Ok(t)) => t,
        Ok(Err(Some(code))) => return reply(&mut client, code).await,
        Ok(Err(None)) | Err(_) => return,
    };
    match relay::open(&target, ctx).await {
        Ok(upstream) => {
            reply(&mut client, REP_OK).await;
            relay::relay(client, upstream, ctx).await;
        }
        Err(Refusal::Denied(_)) => reply(&mut client, REP_NOT_ALLOWED).await,
        Err(Refusal::Failed(_)) => reply(&mut client, REP_HOST_UNREACHABLE).await,
    }
}

/// The method negotiation and the request: the target, or the reply code to refuse with
/// (`None`: not SOCKS5 at all, or gone; the connection is just closed).
async fn handshake(c: &mut TcpStream) -> Result<Target, Option<u8>> {
    let mut hello = [0u8; 2];
    c.read_exact(&mut hello).await.map_err(|_| None)?;
    if hello[0] != VERSION || hello[1] == 0 {
        return Err(None);
    }
    let mut methods = vec![0u8; hello[1] as usize];
    c.read_exact(&mut methods).await.map_err(|_| None)?;
    let method = if methods.contains(&NO_AUTH) {
        NO_AUTH
    } else {
        NO_METHOD
    };
    c.write_all(&[VERSION, method]).await.map_err(|_| None)?;
    if method == NO_METHOD {
        return Err(None);
    }
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await.map_err(|_| None)?;
    if req[0] != VERSION {
        return Err(None);
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await.map_err(|_| None)?;
            Ok(Host::Ip(std::net::Ipv4Addr::from(a).into()))
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await.map_err(|_| None)?;
            Ok(Host::Ip(std::net::Ipv6Addr::from(a).into()))
        }
        3 => {
            let mut len = [0u8; 1];
            c.read_exact(&mut len).await.map_err(|_| None)?;
            let mut name = vec![0u8; len[0] as usize];
            c.read_exact(&mut name).await.map_err(|_| None)?;
            String::from_utf8(name).map_err(|_| Some(REP_FAILURE))
        }
        .map(Host::Name),
        _ => return Err(Some(REP_ATYP_UNSUPPORTED)),
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port).await.map_err(|_| None)?;
    let port = u16::from_be_bytes(port);
    if req[1] != CMD_CONNECT {
        return Err(Some(REP_CMD_UNSUPPORTED));
    }
    match host? {
        Host::Ip(ip) => Ok(Target {
            host: Host::Ip(ip),
            port,
        }),
        // A name the rules could never match (not a DNS name) is refused like any other.
        Host::Name(n) => Target::from_name(&n, port).map_err(|_| Some(REP_NOT_ALLOWED)),
    }
}

/// A reply with an empty bound address.
async fn reply(c: &mut TcpStream, code: u8) {
    let _ = c.write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]).await;
    if code != REP_OK {
        let _ = c.shutdown().await;
    }
}
