//! Where the daemon listens: its Unix socket (created mode 0660, a stale one replaced, a live
//! one refused), TCP addresses, sockets passed by systemd (`LISTEN_FDS`), and who may talk to
//! it (peer credentials on the Unix socket, a bearer token on TCP).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// One listening socket and how its clients are checked.
#[derive(Debug)]
#[non_exhaustive]
pub enum Endpoint {
    /// Clients are checked by `SO_PEERCRED`. `remove`: the socket file to delete at shutdown
    /// (none for a socket systemd made).
    Unix {
        listener: std::os::unix::net::UnixListener,
        remove: Option<PathBuf>,
    },
    /// Clients must send `Authorization: Bearer TOKEN` when the daemon has a token.
    Tcp { listener: std::net::TcpListener },
}

impl Endpoint {
    /// How it is named in logs.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix { listener, .. } => format!(
                "unix:{}",
                listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "(unnamed)".into())
            ),
            Endpoint::Tcp { listener } => format!(
                "tcp:{}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// The default socket: `/run/rsandbox/rsandbox.sock` as root, `$XDG_RUNTIME_DIR/rsandbox.sock`
/// otherwise.
pub fn default_socket() -> PathBuf {
    if sys::ids().0 == 0 {
        PathBuf::from("/run/rsandbox/rsandbox.sock")
    } else {
        crate::paths::user_runtime_dir().join("rsandbox.sock")
    }
}

/// Binds the Unix socket at `path` with mode 0660 (group `group` when given). A socket file
/// nobody listens on is replaced; a live one, or a file that is not a socket, is refused.
pub fn bind_unix(path: &Path, group: Option<u32>) -> io::Result<Endpoint> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a daemon already listens on {}", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // Created with the umask's mode (no write for others: connect needs write), then narrowed.
    if let Some(g) = group {
        std::os::unix::fs::chown(path, None, Some(g))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(Endpoint::Unix {
        listener,
        remove: Some(path.to_path_buf()),
    })
}

pub fn bind_tcp(addr: SocketAddr) -> io::Result<Endpoint> {
    Ok(Endpoint::Tcp {
        listener: std::net::TcpListener::bind(addr)?,
    })
}

/// The sockets systemd passed (`LISTEN_PID` is this process, `LISTEN_FDS` counts from fd 3).
/// Empty when there are none. The variables are removed so no child sees them.
pub fn from_systemd() -> io::Result<Vec<Endpoint>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("LISTEN_FDS={fds:?} is not a number")))?;
    let mut out = Vec::new();
    for fd in 3..3 + n {
        let owned: OwnedFd = sys::host::inherited_fd(fd)?;
        match sys::host::socket_domain(owned.as_fd())? {
            libc::AF_UNIX => {
                let l = std::os::unix::net::UnixListener::from(owned);
                l.set_nonblocking(true)?;
                out.push(Endpoint::Unix {
                    listener: l,
                    remove: None,
                });
            }
            libc::AF_INET | libc::AF_INET6 => {
                let l = std::net::TcpListener::from(owned);
                l.set_nonblocking(true)?;
                out.push(Endpoint::Tcp { listener: l });
            }
            d => {
                return Err(io::Error::other(format!(
                    "passed fd {fd} is a socket of family {d}, not unix or tcp"
                )))
            }
        }
    }
    Ok(out)
}

/// Who may use the Unix socket: root, the daemon's own user, and members of `group`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Access {
    pub owner: u32,
    pub group: Option<u32>,
}

impl Access {
    pub(crate) fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 || uid == self.owner {
            return true;
        }
        let Some(g) = self.group else { return false };
        gid == g || pid.is_some_and(|p| supplementary_groups(p).contains(&g))
    }
}

/// The supplementary groups of a process (`Groups:` of /proc/PID/status).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// A group by number, or by name through the system's group database: `getent group NAME`
/// resolves through NSS as `getgrnam_r` does, so groups from LDAP or sssd work. rsandbox's own
/// binary is linked statically, and a static glibc cannot load NSS modules (`getgrnam_r` there
/// crashes), so it asks getent; without getent, /etc/group is read.
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let from_getent = std::process::Command::new("getent")
        .args(["group", name])
        .stderr(std::process::Stdio::null())
        .output();
    let (text, source) = match from_getent {
        // getent exits 2 for a name it does not know.
        Ok(o) if o.status.success() || o.status.code() == Some(2) => (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            "the group database",
        ),
        _ => (std::fs::read_to_string("/etc/group")?, "/etc/group"),
    };
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name))
                .then(|| f.nth(1).and_then(|g| g.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| io::Error::other(format!("no group named {name:?} in {source}")))
}

/// Compares a presented bearer token with ours in time independent of where they differ.
pub(crate) fn token_matches(presented: &[u8], ours: &[u8]) -> bool {
    if presented.len() != ours.len() {
        return false;
    }
    presented
        .iter()
        .zip(ours)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_number_and_through_the_group_database() {
        assert_eq!(group_id("4242").unwrap(), 4242);
        // Every Linux group database has root as gid 0.
        assert_eq!(group_id("root").unwrap(), 0);
        let e = group_id("no-such-group-rsandbox").unwrap_err().to_string();
        assert_eq!(
            e,
            "no group named \"no-such-group-rsandbox\" in the group database"
        );
    }

    #[test]
    fn access_by_owner_root_and_group() {
        let a = Access {
            owner: 1000,
            group: Some(50),
        };
        assert!(a.allows(0, 0, None) && a.allows(1000, 1000, None) && a.allows(7, 50, None));
        assert!(!a.allows(7, 7, None));
        assert!(!Access {
            owner: 1000,
            group: None
        }
        .allows(7, 50, None));
        assert!(token_matches(b"abc", b"abc") && !token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("root").unwrap(), 0);
    }
}
