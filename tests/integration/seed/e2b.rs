//! E2B's code interpreter (2.11.5) in debug mode against `/execute` and `/contexts`.

use super::{run_client, seed_python, token_file};
use crate::server::Daemon;
use crate::util;

/// State, results, streaming callbacks, errors, contexts apart, restart and delete, and the
/// protocol's bad input by hand; the debug sandbox is a session listed with its API.
const SCRIPT: &str = r#"
import json, sys, urllib.request, urllib.error
from e2b_code_interpreter import Sandbox
URL = sys.argv[1]
sb = Sandbox.create()
ex = sb.run_code("z = 5\nprint('p')\nz * 2")
assert "".join(ex.logs.stdout) == "p\n" and ex.text == "10" and ex.error is None, ex
seen = []
ex = sb.run_code("print('a'); z + 1", on_stdout=lambda m: seen.append(m.line))
assert "".join(seen) == "a\n" and ex.text == "6", (seen, ex)
ex = sb.run_code("class H:\n    def _repr_html_(self): return '<b>h</b>'\nH()")
assert ex.results[0].html == "<b>h</b>" and ex.results[0].is_main_result, ex.results
ex = sb.run_code("1/0")
assert ex.error.name == "ZeroDivisionError" and "1/0" in ex.error.traceback, ex.error
assert sb.run_code("import os; os.environ['K']", envs={"K": "v"}).text == "'v'"
ctx = sb.create_code_context()
assert ctx.language == "python"
assert sb.run_code("'z' in globals()", context=ctx).text == "False"
sb.run_code("w = 1", context=ctx)
ids = [c.id for c in sb.list_code_contexts()]
assert ctx.id in ids, ids
sb.restart_code_context(ctx)
assert sb.run_code("'w' in globals()", context=ctx).text == "False"
sb.remove_code_context(ctx)
try:
    sb.remove_code_context(ctx)
    raise AssertionError("deleting twice must be refused")
except Exception as e:
    assert type(e).__name__ == "NotFoundException", e
try:
    sb.run_code("1", context=ctx)
    raise AssertionError("an unknown context must be refused")
except Exception as e:
    assert "not found" in str(e), e
sessions = json.loads(urllib.request.urlopen(URL + "/v1/sessions").read())["sessions"]
assert [x["api"] for x in sessions] == ["e2b"], sessions

def post(path, body, headers):
    req = urllib.request.Request(URL + path, data=body, headers=headers)
    try:
        r = urllib.request.urlopen(req)
        return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
H = {"E2b-Sandbox-Id": "debug_sandbox_id", "Content-Type": "application/json"}
s, b = post("/execute", json.dumps({"code": "1", "context_id": "x", "language": "python"}).encode(), H)
assert s == 400 and b"not both" in b, (s, b)
s, b = post("/execute", b"{malformed", H)
assert s == 400, (s, b)
s, b = post("/execute", json.dumps({"code": "1"}).encode(), {"Content-Type": "application/json"})
assert s == 400 and b"E2b-Sandbox-Id" in b, (s, b)
s, b = post("/execute", json.dumps({"code": "1"}).encode(), dict(H, **{"E2b-Sandbox-Id": "../x"}))
assert s == 400, (s, b)
s, b = post("/execute", json.dumps({"code": "1", "language": "r"}).encode(), H)
assert s == 400 and b"not offered" in b, (s, b)
s, b = post("/contexts/nope/restart", b"", H)
assert s == 404, (s, b)
assert urllib.request.urlopen(URL + "/health").read() == b"OK"
print("client ok")
"#;

#[test]
fn e2b_client_runs_cells_in_contexts() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let d = Daemon::start(&["--listen", "127.0.0.1:0", "--no-auth"]);
    let url = format!("http://{}", d.tcp.unwrap());
    run_client(
        &python,
        SCRIPT,
        &url,
        &[("E2B_DEBUG", "true"), ("E2B_SANDBOX_URL", &url)],
    );
}

/// The debug-mode client sends no token: a daemon with one refuses it (E2B is served on
/// loopback with --no-auth only, as the README says).
#[test]
fn e2b_client_without_a_token_is_refused_by_a_daemon_with_one() {
    let _g = util::shared();
    if !util::require("userns") {
        return;
    }
    let Some(python) = seed_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &token_file(dir.path(), "e2b-token-0123456789abcdef"),
    ]);
    let url = format!("http://{}", d.tcp.unwrap());
    let script = r#"
from e2b_code_interpreter import Sandbox
try:
    Sandbox.create().run_code("1")
    raise AssertionError("a daemon with a token must refuse a client without it")
except Exception as e:
    assert "401" in str(e) or "bearer" in str(e), repr(e)
print("client ok")
"#;
    run_client(
        &python,
        script,
        &url,
        &[("E2B_DEBUG", "true"), ("E2B_SANDBOX_URL", &url)],
    );
}
