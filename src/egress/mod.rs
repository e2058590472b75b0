//! Egress: an instance's way out through rsandbox's own proxy, for networks `allowlist` and
//! `all`.
//!
//! The instance keeps its own network namespace with only loopback up. Its reaper creates two
//! listening sockets there (`127.0.0.1:3128`, HTTP; `127.0.0.1:1080`, SOCKS5) and hands them to
//! the supervisor with its ready reply; the proxy here accepts on them from the host's side, so
//! nothing crosses between the namespaces but accepted connections, and no helper process runs
//! inside. The proxy resolves names itself, checks each name against the rules and each
//! resolved address against the closed ranges (`rules.rs`), and connects to exactly the
//! address it checked.
//!
//! Layer: below `instance`, which owns one `Proxy` per instance (it ends with it), above
//! `spawn` (it takes the listeners the reaper made) and `outcome` (its figures are the report's
//! `network`). `rules` and `stats` are plain data and atomics, always built; the proxy itself
//! (`server`, `http`, `socks`, `relay`) runs on tokio behind the `egress` cargo feature.

pub mod rules;
mod stats;

#[cfg(feature = "egress")]
mod http;
#[cfg(feature = "egress")]
mod relay;
#[cfg(feature = "egress")]
mod server;
#[cfg(feature = "egress")]
mod socks;

pub use rules::{Allow, Rule, RuleError};
#[cfg(feature = "egress")]
pub(crate) use server::Proxy;
pub use stats::totals;
