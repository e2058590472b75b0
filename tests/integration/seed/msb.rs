//! microsandbox's SDK (0.1.8) against `POST /api/v1/rpc`.

use super::{run_client, seed_python, token_file};
use crate::server::Daemon;
use crate::util;

/// The REPL keeps state and echoes expressions; commands, metrics, stop; then the JSON-RPC
/// protocol's bad input by hand; the sessions are listed with their API and counted.
const SCRIPT: &str = r#"
import asyncio, json, sys, urllib.request, urllib.error
from microsandbox import PythonSandbox, NodeSandbox
URL = sys.argv[1]

def rpc(body, raw=None):
    req = urllib.request.Request(URL + "/api/v1/rpc", data=raw or json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

async def main():
    async with PythonSandbox.create(server_url=URL, namespace="t", name="one") as sb:
        e = await sb.run("x = 41\nx + 1\nNone\nprint('hi')")
        assert await e.output() == "42\nhi" and not e.has_error(), await e.output()
        e = await sb.run("x\n1/0")
        assert await e.output() == "41" and e.has_error(), await e.output()
        assert "ZeroDivisionError" in await e.error(), await e.error()
        c = await sb.command.run("echo", ["a", "b"])
        assert await c.output() == "a b" and c.exit_code == 0 and c.success
        c = await sb.command.run("sh", ["-c", "echo oops >&2; exit 3"])
        assert c.exit_code == 3 and not c.success and await c.error() == "oops"
        try:
            await sb.command.run("sleep", ["5"], timeout=1)
            raise AssertionError("a timeout must raise")
        except RuntimeError as err:
            assert "timed out after 1" in str(err), err
        await sb.run("open('data.txt', 'w').write('x' * 1000)")
        m = await sb.metrics.all()
        assert m["name"] == "one" and m["namespace"] == "t" and m["running"], m
        for k in ("cpu_usage", "memory_usage", "disk_usage"):
            assert isinstance(m[k], (int, float)), m
        assert m["disk_usage"] >= 1000, m
        # Starting it again changes nothing: the state is still there.
        again = PythonSandbox(server_url=URL, namespace="t", name="one")
        import aiohttp
        again._session = aiohttp.ClientSession()
        await again.start()
        assert await (await again.run("x")).output() == "41"
        await again._session.close()
        s, r = rpc({"jsonrpc": "2.0", "method": "sandbox.metrics.get", "params": {"namespace": "*"}, "id": 1})
        assert s == 200 and [x["name"] for x in r["result"]["sandboxes"]] == ["one"], r
        sessions = json.loads(urllib.request.urlopen(URL + "/v1/sessions").read())["sessions"]
        assert [x["api"] for x in sessions] == ["microsandbox"], sessions
        metrics = urllib.request.urlopen(URL + "/metrics").read().decode()
        assert 'rsandbox_sessions_by_api{api="microsandbox"} 1' in metrics, metrics
    # Stopped: the REPL of that sandbox is gone.
    s, r = rpc({"jsonrpc": "2.0", "method": "sandbox.repl.run", "params": {"namespace": "t", "sandbox": "one", "language": "python", "code": "1"}, "id": 2})
    assert s == 404 and r["error"]["code"] == -32602 and "not running" in r["error"]["message"], r
    # Node.js: a clear JSON-RPC error naming it.
    async with NodeSandbox.create(server_url=URL, namespace="t", name="node") as nb:
        try:
            await nb.run("1 + 1")
            raise AssertionError("nodejs must be refused")
        except RuntimeError as err:
            assert "nodejs" in str(err), err

asyncio.run(main())
s, r = urllib.request.urlopen(URL + "/api/v1/health").status, None
assert s == 200
s, r = rpc({"jsonrpc": "1.0", "method": "sandbox.stop", "id": 3})
assert s == 400 and r["error"]["code"] == -32600, r
s, r = rpc(None, raw=b"{not json")
assert s == 400 and r["error"]["code"] == -32700, r
s, r = rpc({"jsonrpc": "2.0", "method": "sandbox.nope", "params": {}, "id": 4})
assert s == 404 and r["error"]["code"] == -32601 and r["id"] == 4, r
for bad in ["../x", "", "a/b", "-x", "x" * 64]:
    s, r = rpc({"jsonrpc": "2.0", "method": "sandbox.start", "params": {"namespace": "t", "sandbox": bad}, "id": 5})
    assert s == 400 and r["error"]["code"] == -32602, (bad, r)
s, r = rpc({"jsonrpc": "2.0", "method": "sandbox.repl.run", "params": {"namespace": "t"}, "id": 6})
assert s == 400 and r["error"]["code"] == -32602, r
print("client ok")
"#;

#[test]
fn microsandbox_client_runs_repl_commands_and_metrics() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    run_client(&python, SCRIPT, &format!("http://{}", d.tcp.unwrap()), &[]);
}

/// With a token: the SDK sends `MSB_API_KEY` as a bearer token; without it, refused.
#[test]
fn microsandbox_client_sends_its_api_key_as_the_token() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = "msb-token-0123456789abcdef";
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &token_file(dir.path(), token),
    ]);
    let script = r#"
import asyncio, os, sys
from microsandbox import PythonSandbox
async def main():
    async with PythonSandbox.create(server_url=sys.argv[1], name="tok") as sb:
        assert await (await sb.run("6 * 7")).output() == "42"
    try:
        async with PythonSandbox.create(server_url=sys.argv[1], name="tok2", api_key="wrong") as sb:
            raise AssertionError("a wrong key must be refused")
    except RuntimeError as e:
        assert "bearer token" in str(e), e
asyncio.run(main())
print("client ok")
"#;
    run_client(
        &python,
        script,
        &format!("http://{}", d.tcp.unwrap()),
        &[("MSB_API_KEY", token)],
    );
}
