//! The HTTP proxy on `127.0.0.1:3128` inside: `CONNECT host:port` (HTTPS and any other TCP a
//! rule allows) and plain `http://` forwarding, one request per connection, never following a
//! redirect itself. A refusal is an HTTP answer whose body says why.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::relay::{self, Refusal};
use super::rules::Target;
use super::server::Ctx;
use crate::defaults::{EGRESS_HEADER_MAX, EGRESS_HEADER_TIMEOUT};

/// Serves one client connection.
pub(super) async fn serve(mut client: TcpStream, ctx: &Ctx) {
    let head = match timeout(EGRESS_HEADER_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(h)) => h,
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            let msg = format!("rsandbox: request header larger than {EGRESS_HEADER_MAX} bytes");
            return answer(&mut client, 431, "Request Header Fields Too Large", &msg).await;
        }
        Err(_) => {
            let msg = format!(
                "rsandbox: no complete request header within {}s",
                EGRESS_HEADER_TIMEOUT.as_secs()
            );
            return answer(&mut client, 408, "Request Timeout", &msg).await;
        }
    };
    let (request, extra) = head;
    let parsed = match parse(&request) {
        Ok(p) => p,
        Err(msg) => return answer(&mut client, 400, "Bad Request", &msg).await,
    };
    let mut upstream = match relay::open(&parsed.target, ctx).await {
        Ok(s) => s,
        Err(Refusal::Denied(msg)) => return answer(&mut client, 403, "Forbidden", &msg).await,
        Err(Refusal::Failed(msg)) => return answer(&mut client, 502, "Bad Gateway", &msg).await,
    };
    let sent = match &parsed.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
        }
        Some(head) => upstream.write_all(head).await,
    };
    if sent.is_err() || upstream.write_all(&extra).await.is_err() {
        return;
    }
    ctx.counters
        .up(extra.len() + parsed.forward.as_ref().map_or(0, |h| h.len()));
    relay::relay(client, upstream, ctx).await;
}

enum HeadError {
    Closed,
    TooLarge,
}

/// Reads until the blank line that ends the head; returns the head and whatever followed it.
async fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            if end > EGRESS_HEADER_MAX {
                return Err(HeadError::TooLarge);
            }
            let extra = buf.split_off(end);
            return Ok((buf, extra));
        }
        if buf.len() > EGRESS_HEADER_MAX {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A request the proxy will carry out.
#[derive(Debug, PartialEq)]
struct Parsed {
    target: Target,
    /// The head to send upstream (`None` for CONNECT, which sends nothing itself).
    forward: Option<Vec<u8>>,
}

/// Headers meant for the proxy, or about the client's connection to it.
const HOP_HEADERS: [&str; 5] = [
    "proxy-connection",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "host",
];

/// Reads a request head: `CONNECT authority` or `METHOD http://authority/path`.
fn parse(head: &[u8]) -> Result<Parsed, String> {
    let bad = || "rsandbox: not an HTTP proxy request".to_string();
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or_else(bad)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    if method == "CONNECT" {
        let target = Target::parse(uri, None)
            .map_err(|e| format!("rsandbox: bad CONNECT target {uri:?}: {e}"))?;
        return Ok(Parsed {
            target,
            forward: None,
        });
    }
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err("rsandbox: send https:// requests through CONNECT".to_string());
    }
    let Some(rest) = lower.starts_with("http://").then(|| &uri[7..]) else {
        return Err(format!(
            "rsandbox: {uri:?} is not an absolute http:// URL (this is a proxy)"
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("rsandbox: credentials in the URL are not forwarded".to_string());
    }
    let target = Target::parse(authority, Some(80))
        .map_err(|e| format!("rsandbox: bad host {authority:?}: {e}"))?;
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let mut out = format!("{method} {path} {version}\r\nHost: {authority}\r\n");
    for h in lines.filter(|l| !l.is_empty()) {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !HOP_HEADERS.contains(&name.as_str()) {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Parsed {
        target,
        forward: Some(out.into_bytes()),
    })
}

/// Writes a short plain-text answer and closes.
async fn answer(client: &mut TcpStream, code: u16, reason: &str, msg: &str) {
    let body = format!("{msg}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(body.as_bytes()).await;
    let _ = client.shutdown().await;
    // Closing with unread input would reset the connection and could discard the answer
    // before the client reads it: read what is left, for a moment, first.
    let mut sink = [0u8; 4096];
    let _ = timeout(std::time::Duration::from_secs(1), async {
        let mut left = 1usize << 20;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::rules::Host;

    #[test]
    fn connect_and_absolute_urls_parse() {
        let p =
            parse(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n").unwrap();
        assert_eq!(p.target.to_string(), "example.org:443");
        assert!(p.forward.is_none());
        let p = parse(b"GET http://Example.org:8080/a?b HTTP/1.1\r\nHost: evil\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(p.target.host, Host::Name("example.org".into()));
        assert_eq!(p.target.port, 8080);
        let fwd = String::from_utf8(p.forward.unwrap()).unwrap();
        assert_eq!(
            fwd,
            "GET /a?b HTTP/1.1\r\nHost: Example.org:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let p = parse(b"GET http://[::1]:81 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(p.target.to_string(), "[::1]:81");
        assert!(String::from_utf8(p.forward.unwrap())
            .unwrap()
            .starts_with("GET / HTTP/1.0\r\n"));
        assert_eq!(
            parse(b"GET http://a.org HTTP/1.1\r\n\r\n")
                .unwrap()
                .target
                .port,
            80
        );
    }

    #[test]
    fn garbage_gets_a_reason() {
        for (head, want) in [
            (
                &b"\x16\x03\x01\x02\x00\r\n\r\n"[..],
                "not an HTTP proxy request",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", "not an absolute http:// URL"),
            (b"GET https://a.org/ HTTP/1.1\r\n\r\n", "CONNECT"),
            (b"CONNECT a.org HTTP/1.1\r\n\r\n", "bad CONNECT target"),
            (b"CONNECT [::1 HTTP/1.1\r\n\r\n", "bad CONNECT target"),
            (b"GET http://u:p@a.org/ HTTP/1.1\r\n\r\n", "credentials"),
            (
                b"GET http://a.org/ SPDY/3\r\n\r\n",
                "not an HTTP proxy request",
            ),
            (
                b"G\xffT http://a.org/ HTTP/1.1\r\n\r\n",
                "not an HTTP proxy request",
            ),
        ] {
            let e = parse(head).unwrap_err();
            assert!(e.contains(want), "{head:?}: {e}");
        }
    }
}
