//! The package index pip is configured with (its URL read from pip at test time, never written
//! here): HTTPS to it through CONNECT, `pip download` inside a run, and a raw connection to its
//! address that bypasses the proxy. Needs the feature `pip-index`: this machine reaching it.

use rsandbox::{Command, Net};

use crate::util;

/// pip's index: its URL, and the hosts it and its files are served from.
struct Index {
    url: String,
    /// Whether the URL came from the configuration (then it is passed on as PIP_INDEX_URL).
    configured: bool,
    host: String,
    files_host: String,
    /// The index host's first address, as this host resolves it.
    addr: String,
}

/// Reads pip's index from pip (PIP_INDEX_URL, `pip config list`, else pip's own default and
/// its file host) and checks that this machine reaches it: `None`, with a SKIP line, if not.
fn index() -> Option<Index> {
    const FIND: &str = r#"
import os, socket, subprocess, sys, urllib.parse, urllib.request
url = os.environ.get('PIP_INDEX_URL', '')
configured = bool(url)
if not url:
    out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout
    for line in out.splitlines():
        k, _, v = line.partition('=')
        if k.endswith('index-url'):
            url, configured = v.strip().strip("'\""), True
files = None
if not url:
    from pip._internal.models.index import PyPI
    url, files = PyPI.simple_url, PyPI.file_storage_domain
host = urllib.parse.urlparse(url).hostname
addr = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)[0][4][0]
urllib.request.urlopen(url.rstrip('/') + '/six/', timeout=20).read()
print(url, int(configured), host, files or host, addr)
"#;
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", FIND])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<&str> = out.split_whitespace().collect();
    if !o.status.success() || f.len() != 5 {
        let why = format!(
            "this machine does not reach pip's index: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        util::missing("pip-index", &why);
        return None;
    }
    Some(Index {
        url: f[0].to_string(),
        configured: f[1] == "1",
        host: f[2].to_string(),
        files_host: f[3].to_string(),
        addr: f[4].to_string(),
    })
}

/// HTTPS to the index through CONNECT (urllib, as pip's requests does) works when its host is
/// allowed, and fails with the proxy's 403 when it is not.
#[test]
fn egress_https_to_the_index_through_connect() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(ix) = index() else { return };
    let code = "import os, urllib.request\n\
                try:\n\
                \x20   r = urllib.request.urlopen(os.environ['INDEX'].rstrip('/') + '/six/', timeout=60)\n\
                \x20   print(r.status, b'six' in r.read())\n\
                except Exception as e:\n\
                \x20   print('failed', e)";
    let cmd = Command::python(code).env("INDEX", ix.url.clone());
    let allowed = util::builder()
        .timeout(util::allow(90.0))
        .net(Net::allowlist([ix.host.as_str()]).unwrap())
        .build()
        .unwrap();
    let o = allowed.run(&cmd).unwrap();
    assert_eq!(util::stdout(&o), "200 True\n", "{o:?}");
    let n = o.network.unwrap();
    assert!(n.allowed >= 1 && n.bytes_down > 0, "{n:?}");
    let other = util::builder()
        .net(Net::allowlist(["127.0.0.1:9"]).unwrap())
        .build()
        .unwrap();
    let o = other.run(&cmd).unwrap();
    let out = util::stdout(&o);
    assert!(out.starts_with("failed") && out.contains("403"), "{out}");
    assert_eq!(o.network.unwrap().denied, 1);
}

/// `python3 -m pip download --no-deps six` inside a run, with the index's hosts allowed.
#[test]
fn egress_pip_download_works_inside_a_run() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(ix) = index() else { return };
    let hosts = [ix.host.as_str(), ix.files_host.as_str()];
    let sb = util::builder()
        .timeout(util::allow(180.0))
        .memory(1 << 30)
        .net(Net::allowlist(hosts).unwrap())
        .build()
        .unwrap();
    let mut cmd = Command::new("/bin/sh").args([
        "-c",
        "/usr/bin/python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check -q -d dl six && ls dl",
    ]);
    if ix.configured {
        cmd = cmd.env("PIP_INDEX_URL", ix.url.clone());
    }
    let o = sb.run(&cmd).unwrap();
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert!(util::stdout(&o).starts_with("six-"), "{o:?}");
}

/// Bypassing the proxy gets nowhere: a direct connection to the index's address (resolved on
/// the host) has no route, and the instance resolves no names itself; through the proxy, under
/// `all`, the same index answers.
#[test]
fn egress_a_raw_connection_to_the_index_fails() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(ix) = index() else { return };
    let sb = util::builder()
        .timeout(util::allow(90.0))
        .net(Net::All)
        .build()
        .unwrap();
    let code = "import errno, os, socket, urllib.request\n\
                try:\n\
                \x20   socket.create_connection((os.environ['ADDR'], 443), timeout=10); print('connected')\n\
                except OSError as e:\n\
                \x20   print(errno.errorcode.get(e.errno, e))\n\
                try:\n\
                \x20   socket.getaddrinfo(os.environ['HOST'], 443); print('resolved')\n\
                except OSError as e:\n\
                \x20   print('no-dns')\n\
                print(urllib.request.urlopen(os.environ['INDEX'].rstrip('/') + '/six/', timeout=60).status)";
    let cmd = Command::python(code)
        .env("ADDR", ix.addr.clone())
        .env("HOST", ix.host.clone())
        .env("INDEX", ix.url.clone());
    let o = sb.run(&cmd).unwrap();
    assert_eq!(util::stdout(&o), "ENETUNREACH\nno-dns\n200\n", "{o:?}");
}
