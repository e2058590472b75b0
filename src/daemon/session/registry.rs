//! The registry of every session: live sessions by id, the places and memory reserved for
//! sessions being created (the daemon's maxima), tombstones so that an ended session answers
//! 410 with its reason, expiry, and the sessions' figures for `/metrics`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Ended, Remains, Session};
use crate::daemon::job::Sandboxes;
use crate::daemon::SessionConfig;
use crate::Error;

/// What an id names.
pub(crate) enum Lookup {
    Live(Arc<Session>),
    Gone(Ended),
    Unknown,
}

/// No room for another session (503); the text is the client's message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Full {
    #[error("the daemon holds its maximum of {max} sessions (--max-sessions); delete one or retry later")]
    Sessions { max: usize },
    #[error("the sessions' memory is spoken for: {reserved_mib} MiB of {limit_mib} MiB (--session-memory-mb) are reserved, {wanted_mib} MiB more do not fit")]
    Memory {
        reserved_mib: u64,
        limit_mib: u64,
        wanted_mib: u64,
    },
}

/// Why a session could not be created.
pub(crate) enum Refusal {
    /// The daemon holds its maximum of sessions or of session memory (503).
    Full(Full),
    Engine(Error),
}

/// Ended sessions remembered for 410 answers: at most this many, for at most `TOMBSTONE_TTL`.
const TOMBSTONES: usize = 4096;
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Registry {
    live: HashMap<String, Arc<Session>>,
    /// Sessions being created (they count against the maximum).
    pending: usize,
    /// Memory limits of the live and pending sessions, together.
    reserved: u64,
    gone: HashMap<String, Ended>,
    gone_order: VecDeque<(String, Instant)>,
}

impl Registry {
    /// Remembers that `id` ended (`why`), forgetting the oldest tombstones past the limits.
    fn bury(&mut self, id: &str, why: Ended) {
        let now = Instant::now();
        while self.gone_order.len() >= TOMBSTONES
            || self
                .gone_order
                .front()
                .is_some_and(|(_, t)| now - *t > TOMBSTONE_TTL)
        {
            if let Some((old, _)) = self.gone_order.pop_front() {
                self.gone.remove(&old);
            }
        }
        self.gone.insert(id.to_string(), why);
        self.gone_order.push_back((id.to_string(), now));
    }
}

/// Every session of the daemon.
pub(crate) struct Sessions {
    pub(crate) config: SessionConfig,
    reg: Mutex<Registry>,
    /// Sessions' sandboxes by policy (no warm pools: their instances are created on request).
    pub(super) sandboxes: Sandboxes,
}

/// A reserved place for a session being created; released on drop unless the session was
/// registered.
pub(super) struct Reservation<'a> {
    sessions: &'a Sessions,
    memory: u64,
    armed: bool,
}

impl Reservation<'_> {
    /// Registers the session in the place reserved for it.
    pub(super) fn register(mut self, s: Arc<Session>) {
        let mut r = self.sessions.lock();
        r.pending -= 1;
        r.live.insert(s.id.clone(), s);
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut r = self.sessions.lock();
            r.pending -= 1;
            r.reserved -= self.memory;
        }
    }
}

impl Sessions {
    pub(crate) fn new(config: SessionConfig) -> Sessions {
        Sessions {
            config,
            reg: Mutex::new(Registry::default()),
            sandboxes: Sandboxes::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a place and `memory` for a session being created.
    pub(super) fn reserve(&self, memory: u64) -> Result<Reservation<'_>, Full> {
        let mut r = self.lock();
        if r.live.len() + r.pending >= self.config.max {
            return Err(Full::Sessions {
                max: self.config.max,
            });
        }
        if r.reserved + memory > self.config.memory {
            return Err(Full::Memory {
                reserved_mib: r.reserved >> 20,
                limit_mib: self.config.memory >> 20,
                wanted_mib: memory >> 20,
            });
        }
        r.pending += 1;
        r.reserved += memory;
        Ok(Reservation {
            sessions: self,
            memory,
            armed: true,
        })
    }

    pub(crate) fn lookup(&self, id: &str) -> Lookup {
        let r = self.lock();
        match (r.live.get(id), r.gone.get(id)) {
            (Some(s), _) => Lookup::Live(s.clone()),
            (None, Some(why)) => Lookup::Gone(*why),
            (None, None) => Lookup::Unknown,
        }
    }

    /// Removes a live session from the registry (remembering why) and ends it; returns its
    /// instance for the caller to drop on a blocking thread (None: it was not live).
    pub(super) fn remove(&self, id: &str, why: Ended) -> Option<Remains> {
        let s = {
            let mut r = self.lock();
            let s = r.live.remove(id)?;
            r.reserved -= s.spec.policy.memory;
            r.bury(id, why);
            s
        };
        Some(s.end())
    }

    /// The live sessions, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<Arc<Session>> = self.lock().live.values().cloned().collect();
        v.sort_by_key(|s| s.created);
        v
    }

    /// The live session of `api` known by `name` (a compatible API's own name for it).
    pub(crate) fn by_name(&self, api: &str, name: &str) -> Option<Arc<Session>> {
        self.lock()
            .live
            .values()
            .find(|s| s.spec.api == api && s.spec.name.as_deref() == Some(name))
            .cloned()
    }

    /// `(live sessions, reserved memory)`.
    pub(crate) fn figures(&self) -> (usize, u64) {
        let r = self.lock();
        (r.live.len(), r.reserved)
    }

    /// Ends every session whose idle timeout or lifetime has passed.
    pub(super) fn reap(&self) -> Vec<(String, Ended, Option<Remains>)> {
        let now = Instant::now();
        let expired: Vec<(String, Ended)> = self
            .lock()
            .live
            .values()
            .filter_map(|s| s.expired(now).map(|why| (s.id.clone(), why)))
            .collect();
        expired
            .into_iter()
            .map(|(id, why)| {
                let inst = self.remove(&id, why);
                (id, why, inst)
            })
            .collect()
    }

    /// The Prometheus text of the sessions' figures.
    pub(crate) fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let (n, reserved) = self.figures();
        let _ = writeln!(out, "# HELP rsandbox_sessions Live sessions.\n# TYPE rsandbox_sessions gauge\nrsandbox_sessions {n}");
        let mut by_api = std::collections::BTreeMap::new();
        for s in self.lock().live.values() {
            *by_api.entry(s.spec.api).or_insert(0usize) += 1;
        }
        let _ = writeln!(out, "# HELP rsandbox_sessions_by_api Live sessions by the API that created them.\n# TYPE rsandbox_sessions_by_api gauge");
        for (api, n) in by_api {
            let _ = writeln!(out, "rsandbox_sessions_by_api{{api=\"{api}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP rsandbox_sessions_max Live sessions allowed (--max-sessions).\n# TYPE rsandbox_sessions_max gauge\nrsandbox_sessions_max {}", self.config.max);
        let _ = writeln!(out, "# HELP rsandbox_session_memory_reserved_bytes Memory limits of the live sessions, together (of --session-memory-mb).\n# TYPE rsandbox_session_memory_reserved_bytes gauge\nrsandbox_session_memory_reserved_bytes {reserved}");
    }
}

/// A new session id: 128 random bits in hex.
pub(super) fn new_id() -> Result<String, Error> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::Io {
            what: "reading",
            path: Some("/dev/urandom".into()),
            source: e,
        })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_messages_keep_their_text() {
        assert_eq!(
            Full::Sessions { max: 3 }.to_string(),
            "the daemon holds its maximum of 3 sessions (--max-sessions); delete one or retry later"
        );
        assert_eq!(
            Full::Memory {
                reserved_mib: 512,
                limit_mib: 1024,
                wanted_mib: 600
            }
            .to_string(),
            "the sessions' memory is spoken for: 512 MiB of 1024 MiB (--session-memory-mb) are reserved, 600 MiB more do not fit"
        );
    }

    #[test]
    fn reservations_count_against_the_maxima_until_dropped() {
        let mut config = SessionConfig::default();
        (config.max, config.memory) = (1, 100 << 20);
        let sessions = Sessions::new(config);
        assert!(matches!(
            sessions.reserve(200 << 20).err(),
            Some(Full::Memory { .. })
        ));
        let held = sessions.reserve(50 << 20).unwrap();
        assert_eq!(sessions.figures(), (0, 50 << 20));
        assert!(matches!(
            sessions.reserve(1).err(),
            Some(Full::Sessions { max: 1 })
        ));
        drop(held);
        assert_eq!(sessions.figures(), (0, 0));
        assert!(sessions.reserve(1).is_ok());
    }
}
