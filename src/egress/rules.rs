//! Egress rules as data: allowlist patterns, the destinations a client names, and the closed
//! address ranges. Pure: no I/O here (the host's own addresses are passed in), so every
//! decision is unit-tested.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Ports a host-name pattern without a port allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// One allowlist pattern, parsed (`"example.org".parse::<Rule>()`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// `example.org` (ports 80 and 443) or `example.org:8443`: this exact name.
    Host { name: String, port: Option<u16> },
    /// `*.example.org`: any name under `example.org`, not `example.org` itself.
    Subdomains { suffix: String, port: Option<u16> },
    /// `127.0.0.1:8080`, `[::1]:8080`: this address and port, closed ranges included.
    Addr(SocketAddr),
}

/// A pattern that is not a rule, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowlist pattern {pattern:?}: {reason}")]
#[non_exhaustive]
pub struct RuleError {
    pub pattern: String,
    pub reason: &'static str,
}

impl std::str::FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Rule, RuleError> {
        let err = |reason| RuleError {
            pattern: s.to_string(),
            reason,
        };
        let p = s.trim();
        if p.is_empty() {
            return Err(err("empty pattern"));
        }
        if p.contains("://") || p.contains('@') {
            return Err(err("a pattern is a host (and port), not a URL"));
        }
        if p.contains('/') {
            return Err(err(
                "CIDR ranges and paths are not patterns; name a host, or an address with a port",
            ));
        }
        if p == "*" || p.starts_with("*:") {
            return Err(err(
                "`*` alone would allow every host: that is the `all` network mode",
            ));
        }
        let (host, port) = split_host_port(p).map_err(err)?;
        match host {
            Host::Ip(ip) => match port {
                Some(port) => Ok(Rule::Addr(SocketAddr::new(ip, port))),
                None => Err(err("an address needs a port (127.0.0.1:8080, [::1]:8080)")),
            },
            Host::Name(name) => match name.strip_prefix("*.") {
                Some(suffix) => {
                    check_name(suffix).map_err(err)?;
                    Ok(Rule::Subdomains {
                        suffix: suffix.to_string(),
                        port,
                    })
                }
                None => {
                    check_name(&name).map_err(err)?;
                    Ok(Rule::Host { name, port })
                }
            },
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, name, port) = match self {
            Rule::Addr(a) => return write!(f, "{a}"),
            Rule::Host { name, port } => ("", name, port),
            Rule::Subdomains { suffix, port } => ("*.", suffix, port),
        };
        write!(f, "{prefix}{name}")?;
        match port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rule, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A destination's host as a client names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// Lower case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

/// A destination a client asked for (`CONNECT host:port`, a SOCKS request, an absolute URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(n) => write!(f, "{n}:{}", self.port),
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
        }
    }
}

impl Target {
    /// `host:port` or `[v6]:port`, as in `CONNECT` (`default_port` when there is no port).
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<Target, &'static str> {
        let (host, port) = split_host_port(s)?;
        if let Host::Name(n) = &host {
            check_name(n)?;
        }
        let port = port.or(default_port).ok_or("no port")?;
        Ok(Target { host, port })
    }

    /// A host name from a SOCKS request, or an address in text form.
    pub fn from_name(name: &str, port: u16) -> Result<Target, &'static str> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Target {
                host: Host::Ip(ip),
                port,
            });
        }
        let n = lower_name(name);
        check_name(&n)?;
        Ok(Target {
            host: Host::Name(n),
            port,
        })
    }
}

fn lower_name(s: &str) -> String {
    s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase()
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, `v4`, `v4:port`.
fn split_host_port(p: &str) -> Result<(Host, Option<u16>), &'static str> {
    let port_of = |s: &str| match s.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
        Ok(p) => Ok(p),
    };
    if let Some(rest) = p.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or("an unclosed `[`")?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| "not an IPv6 address in brackets")?;
        let port = match after {
            "" => None,
            a => Some(port_of(a.strip_prefix(':').ok_or("text after `]`")?)?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    if p.matches(':').count() > 1 {
        return Err("an IPv6 address goes in brackets with a port: [::1]:8080");
    }
    let (host, port) = match p.rsplit_once(':') {
        Some((h, port)) => (h, Some(port_of(port)?)),
        None => (p, None),
    };
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok((Host::Ip(IpAddr::V4(ip)), port));
    }
    Ok((Host::Name(lower_name(host)), port))
}

/// A DNS name: labels of letters, digits, `-` and `_`, not all-numeric at the end (a resolver
/// would read `127.1` or `2130706433` as an address).
fn check_name(n: &str) -> Result<(), &'static str> {
    if n.is_empty() || n.len() > 253 {
        return Err("a host name is 1 to 253 characters");
    }
    if n.contains('*') {
        return Err("`*` may only start a pattern, as `*.example.org`");
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a host name's labels are 1 to 63 characters");
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !label.chars().all(ok) || label.starts_with('-') || label.ends_with('-') {
            return Err("a host name has letters, digits, `-` and `_` only");
        }
    }
    if n.rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("not a host name, and not a dotted IPv4 address either");
    }
    Ok(())
}

/// What an instance may reach: any open destination (`all`), or what the rules name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allow {
    pub any: bool,
    pub rules: Vec<Rule>,
}

impl Allow {
    /// Whether a host name on `port` may be resolved and connected to (its addresses are
    /// checked afterwards, each with [`Allow::address`]).
    pub fn name(&self, name: &str, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| match p {
            Some(p) => *p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        self.any
            || self.rules.iter().any(|r| match r {
                Rule::Host { name: n, port: p } => n == name && port_ok(p),
                Rule::Subdomains { suffix, port: p } => {
                    name.len() > suffix.len() + 1
                        && name.ends_with(suffix.as_str())
                        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                        && port_ok(p)
                }
                Rule::Addr(_) => false,
            })
    }

    /// Whether `addr` may be connected to: an exact rule always; otherwise never an address
    /// in the closed set; otherwise when a name that resolved to it was allowed
    /// (`name_allowed`), or under `all`.
    pub fn address(&self, addr: SocketAddr, own: &[IpAddr], name_allowed: bool) -> bool {
        let ip = canonical(addr.ip());
        let exact = self.rules.iter().any(|r| match r {
            Rule::Addr(a) => canonical(a.ip()) == ip && a.port() == addr.port(),
            _ => false,
        });
        exact || (closed(ip, own).is_none() && (name_allowed || self.any))
    }
}

/// The address itself for an IPv4-mapped IPv6 address (`::ffff:127.0.0.1` reaches 127.0.0.1).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Why `ip` is in the closed set (loopback, private, CGNAT, ULA, link-local, multicast,
/// unspecified, broadcast, or one of the host's own addresses `own`), or `None`.
pub fn closed(ip: IpAddr, own: &[IpAddr]) -> Option<&'static str> {
    let ip = canonical(ip);
    let fixed = match ip {
        IpAddr::V4(v4) => closed_v4(v4),
        IpAddr::V6(v6) => closed_v6(v6),
    };
    fixed.or_else(|| {
        own.iter()
            .any(|o| canonical(*o) == ip)
            .then_some("an address of this host")
    })
}

fn closed_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        // 0.0.0.0/8: connect(2) to 0.0.0.0 reaches the host's own loopback.
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private (RFC 1918)",
        (172, 16..=31) => "private (RFC 1918)",
        (100, 64..=127) => "shared (CGNAT, 100.64.0.0/10)",
        (169, 254) => "link-local",
        (224..=239, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        _ => return None,
    })
}

fn closed_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address a gateway or the kernel would reach: IPv4-compatible
    // (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    let embedded = match s {
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            Some(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32))
        }
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from(((hi as u32) << 16) | lo as u32)),
        _ => None,
    };
    if let Some(r) = embedded.and_then(closed_v4) {
        return Some(r);
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "unique local (ULA)",
        0xfe80..=0xfebf => "link-local",
        0xff00..=0xffff => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
