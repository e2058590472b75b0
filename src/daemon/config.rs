//! The daemon's settings: slots, queue, body size, grace period, the largest limits a request
//! may ask for, who may connect, and the limits on sessions.

use std::time::Duration;

use super::listen::Access;

/// The largest limits a request may ask for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Maxima {
    pub timeout: Duration,
    /// Bytes.
    pub memory: u64,
    pub pids: u64,
    pub cpus: f64,
    /// How long a request waits for GPUs held by other runs.
    pub gpu_wait: Duration,
    /// The egress a request may ask for (`none` still allows `loopback`).
    pub network: NetworkCap,
}

/// The most egress a daemon's requests may ask for (`rsandbox serve --max-network`), in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NetworkCap {
    /// `none` and `loopback` only.
    #[default]
    None,
    /// Also `allowlist`.
    Allowlist,
    /// Also `all`.
    All,
}

impl NetworkCap {
    /// The cap a network mode needs.
    pub fn of(net: &crate::Net) -> NetworkCap {
        match net {
            crate::Net::Allowlist(_) => NetworkCap::Allowlist,
            crate::Net::All => NetworkCap::All,
            _ => NetworkCap::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NetworkCap::None => "none",
            NetworkCap::Allowlist => "allowlist",
            NetworkCap::All => "all",
        }
    }
}

/// A `--max-network` value that is not one.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not none, allowlist or all")]
#[non_exhaustive]
pub struct NetworkCapError {
    pub value: String,
}

impl std::str::FromStr for NetworkCap {
    type Err = NetworkCapError;
    fn from_str(s: &str) -> Result<NetworkCap, NetworkCapError> {
        match s {
            "none" => Ok(NetworkCap::None),
            "allowlist" => Ok(NetworkCap::Allowlist),
            "all" => Ok(NetworkCap::All),
            _ => Err(NetworkCapError {
                value: s.to_string(),
            }),
        }
    }
}

impl Default for Maxima {
    fn default() -> Self {
        Maxima {
            timeout: crate::defaults::MAX_TIMEOUT,
            memory: crate::defaults::MAX_MEMORY,
            pids: crate::defaults::MAX_PIDS,
            cpus: cores() as f64,
            gpu_wait: Duration::from_secs(300),
            network: NetworkCap::None,
        }
    }
}

#[cfg(test)]
impl Maxima {
    /// 60 s, 1 GiB, 100 pids, 2 CPUs.
    pub(crate) fn for_tests() -> Maxima {
        Maxima {
            timeout: Duration::from_secs(60),
            memory: 1 << 30,
            pids: 100,
            cpus: 2.0,
            gpu_wait: Duration::from_secs(5),
            network: NetworkCap::All,
        }
    }
}

/// This host's CPUs.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The daemon's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Runs at once.
    pub slots: usize,
    /// Requests that may wait for a slot.
    pub queue: usize,
    pub max_body: usize,
    /// How long SIGTERM lets runs in flight finish.
    pub grace: Duration,
    pub max: Maxima,
    /// TCP clients must present this bearer token (None: TCP without authentication).
    pub token: Option<String>,
    pub access: Access,
    pub sessions: SessionConfig,
}

impl Default for Config {
    fn default() -> Self {
        let slots = cores();
        Config {
            slots,
            queue: slots * crate::defaults::QUEUE_PER_SLOT,
            max_body: crate::defaults::MAX_BODY,
            grace: crate::defaults::GRACE,
            max: Maxima::default(),
            token: None,
            access: Access {
                owner: crate::sys::ids().0,
                group: None,
            },
            sessions: SessionConfig::default(),
        }
    }
}

/// The daemon's limits on sessions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Live sessions at most.
    pub max: usize,
    /// Memory the live sessions' limits may add up to, in bytes.
    pub memory: u64,
    /// Default idle timeout (no run or file operation for this long ends a session).
    pub idle: Duration,
    /// Default lifetime.
    pub lifetime: Duration,
    /// Largest idle timeout or lifetime a request may ask for.
    pub max_lifetime: Duration,
    /// Stateful contexts per session at most (`--max-contexts`).
    pub max_contexts: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max: 256,
            memory: half_of_ram(),
            idle: Duration::from_secs(600),
            lifetime: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(86400),
            max_contexts: 8,
        }
    }
}

/// Half of this host's memory (`MemTotal`), or 4 GiB when it cannot be read.
fn half_of_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024 / 2)
}
