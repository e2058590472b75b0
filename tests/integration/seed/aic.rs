//! AI Computer's client (0.3.4) against `/api/v1/sandbox/...`.

use super::{seed_python, token_file};
use crate::server::Daemon;
use crate::util;

/// State across cells, results as JSON, errors beside the output, streaming, shell commands,
/// files in and out of /workspace, and paths that leave it.
const SCRIPT: &str = r#"
import asyncio, json, os, sys, urllib.request, urllib.error
from ai_computer import SandboxClient
URL = sys.argv[1]
MARK = sys.argv[2]

async def main():
    c = SandboxClient(base_url=URL)
    r = await c.setup()
    assert r.success, r.error
    r = await c.execute_code("y = {'a': [1, None]}\ny")
    assert r.success and r.data["result"] == {"a": [1, None]}, r.data
    assert r.data["sandbox_id"] == c.sandbox_id
    r = await c.execute_code("print('out'); y['a'][0] + 1")
    assert r.data["output"] == "out\n" and r.data["result"] == 2, r.data
    r = await c.execute_code("object()")
    assert r.data["result"].startswith("<object"), r.data
    r = await c.execute_code("print('before'); 1/0")
    assert r.success, r.error  # a cell that raises is still 200
    assert r.data["output"] == "before\n" and r.data["error"]["name"] == "ZeroDivisionError", r.data
    r = await c.execute_code("import time; time.sleep(30)", timeout=1)
    assert r.data["error"]["name"] in ("KeyboardInterrupt", "TimeoutError"), r.data
    assert (await c.execute_code("y['a'][0]")).data["result"] == 1  # state survives
    r = await c.code.execute("import os; os.environ['K']", environment={"K": "v"})
    assert r.data["result"] == "v", r.data
    evs = [(e.type, e.data) async for e in c.execute_code_stream("print(1)\nprint(2, file=__import__('sys').stderr)\n1/0")]
    assert evs[-1] == ("completed", ""), evs
    types = [t for t, _ in evs]
    assert "stdout" in types and "stderr" in types and "error" in types, evs
    r = await c.execute_shell("echo", ["x", "y"])
    assert r.data["output"] == "x y\n" and r.data["exit_code"] == 0, r.data
    r = await c.execute_shell("exit 4")
    assert r.data["exit_code"] == 4, r.data
    up = await c.upload_bytes(b"hello", "f.txt")
    assert up.success and up.size == 5 and up.path == "/workspace/f.txt", up
    assert await c.download_bytes("/workspace/f.txt") == b"hello"
    up = await c.upload_bytes(b"print('from file'); 7", "s.py")
    r = await c.execute_code("open('/home/sandbox/s.py').read()")
    assert "from file" in r.data["result"], r.data
    # execute_file checks the path from inside the sandbox, where the work dir is /home/sandbox.
    evs = [(e.type, e.data) async for e in c.code.execute_file_stream("/home/sandbox/s.py")]
    assert ("stdout", "from file\n") in evs and evs[-1][0] == "completed", evs
    # Paths that leave the work dir: refused, nothing written outside.
    for bad in ["/workspace/../../" + MARK.lstrip("/"), "/etc", "/tmp"]:
        up = await c.upload_bytes(b"pwned", "x", destination=bad)
        assert not up.success, (bad, up)
    got = await c.download_bytes("/workspace/../../etc/passwd")
    assert not isinstance(got, bytes) and "not allowed" in got.error, got
    got = await c.download_bytes("/etc/passwd")
    assert not isinstance(got, bytes), got
    # Encoded twice by the client; encoded once more here: still decoded before the check.
    q = urllib.request.quote(urllib.request.quote("/workspace/%2e%2e/%2e%2e/etc/passwd"))
    req = urllib.request.Request(f"{URL}/api/v1/sandbox/{c.sandbox_id}/files?path={q}")
    try:
        urllib.request.urlopen(req)
        raise AssertionError("an encoded .. must be refused")
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code
    sessions = json.loads(urllib.request.urlopen(URL + "/v1/sessions").read())["sessions"]
    assert [x["api"] for x in sessions] == ["ai-computer"], sessions
    r = await c.cleanup()
    assert r.success, r.error
    req = urllib.request.Request(f"{URL}/api/v1/sandbox/nope/status")
    try:
        urllib.request.urlopen(req)
        raise AssertionError("an unknown sandbox must be refused")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e.code

asyncio.run(main())
assert not os.path.exists(MARK)
print("client ok")
"#;

#[test]
fn ai_computer_client_runs_code_shell_and_files() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let mark = outside.path().join("pwned");
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    let url = format!("http://{}", d.tcp.unwrap());
    let out = crate::util::output_within(
        std::process::Command::new(&python).args(["-c", SCRIPT, &url, mark.to_str().unwrap()]),
        crate::util::allow(180.0),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("client ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mark.exists());
}

/// With a token: the client's `token=` is the bearer token; `/dev/token` is not served.
#[test]
fn ai_computer_client_uses_the_daemons_token() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "aic-token-0123456789abcdef";
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &token_file(dir.path(), token),
    ]);
    let script = r#"
import asyncio, sys
from ai_computer import SandboxClient
async def main():
    c = SandboxClient(base_url=sys.argv[1], token=sys.argv[2])
    assert (await c.setup()).success
    assert (await c.execute_code("6 * 7")).data["result"] == 42
    assert (await c.cleanup()).success
    r = await SandboxClient(base_url=sys.argv[1]).setup()
    assert not r.success and "bearer token" in r.error, r
    r = await SandboxClient(base_url=sys.argv[1], token="wrong").setup()
    assert not r.success, r
asyncio.run(main())
print("client ok")
"#;
    let out = crate::util::output_within(
        std::process::Command::new(&python).args([
            "-c",
            script,
            &format!("http://{}", d.tcp.unwrap()),
            token,
        ]),
        crate::util::allow(180.0),
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("client ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
