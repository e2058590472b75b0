"""What needs no daemon: targets, request bodies, answers with unknown or missing fields, and
the mapping of HTTP errors to exceptions."""

import os
import warnings

import httpx
import pytest

import rsandbox
from rsandbox import _core as C


def test_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSANDBOX_URL", raising=False)
    assert C.resolve_target("/tmp/x.sock").uds == "/tmp/x.sock"
    assert C.resolve_target("unix:/tmp/x.sock").uds == "/tmp/x.sock"
    t = C.resolve_target("http://127.0.0.1:8080/")
    assert t.uds is None and t.base_url == "http://127.0.0.1:8080"
    assert C.resolve_target(None).uds == rsandbox.default_socket()
    monkeypatch.setenv("RSANDBOX_URL", "http://h:1")
    assert C.resolve_target(None).base_url == "http://h:1"
    with pytest.raises(ValueError):
        C.resolve_target("ftp://x")


def test_default_socket_matches_the_daemons(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    if os.getuid() == 0:
        assert rsandbox.default_socket() == "/run/rsandbox/rsandbox.sock"
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        assert rsandbox.default_socket() == str(tmp_path / "rsandbox.sock")
        monkeypatch.setenv("XDG_RUNTIME_DIR", "/")  # not ours: the daemon falls back too
        assert rsandbox.default_socket() == f"/tmp/rsandbox-{os.getuid()}/rsandbox.sock"


def test_report_tolerates_unknown_and_missing_fields() -> None:
    r = rsandbox.Report.from_json(
        {"status": "ok", "exit_code": 0, "stdout": "hi\n", "a_field_from_the_future": 1,
         "files": {"a": "aGk="}, "compile": {"status": "ok", "new": True}}
    )
    assert r.status == "ok" and r.stdout == "hi\n" and r.files == {"a": b"hi"}
    assert r.preloaded is None and r.network is None and r.node_id is None
    assert r.compile is not None and r.compile.status == "ok"
    assert rsandbox.Report.from_json({"stdout": None, "stdout_b64": "/w=="}).stdout_data == b"\xff"
    e = rsandbox.Execution.from_json({"status": "error", "error": {"name": "E", "value": "v", "traceback": "t", "x": 1}, "y": 2})
    assert e.error == rsandbox.CellError("E", "v", "t") and e.results == []


def test_run_bodies() -> None:
    b = C.run_body("print(1)", stdin=b"\x00", files={"a.txt": "x", "b.bin": b"\x01"}, timeout=3,
                   gpus=[0, 1], allowed_hosts=["example.org"], network="allowlist")
    assert b["stdin_b64"] == "AA==" and b["files"][1] == {"path": "b.bin", "content_b64": "AQ=="}
    assert b["limits"] == {"timeout": 3, "gpu_devices": [0, 1], "allowed_hosts": ["example.org"], "network": "allowlist"}
    assert "language" not in C.run_body(argv=["true"])
    with pytest.raises(ValueError):
        C.run_body("x", argv=["y"])
    # A run's HTTP timeout is never shorter than the run.
    assert C.run_timeout({"code": "1", "limits": {"timeout": 250}}, 60) > 250
    assert C.run_timeout({"code": "1", "language": "cpp", "limits": {"timeout": 100, "compile_timeout": 100}}, 1) > 200


def answer(code: int, body, **headers) -> httpx.Response:
    return httpx.Response(code, json=body, headers=headers)


@pytest.mark.parametrize(
    "code,body,cls",
    [
        (401, {"error": {"status": 401, "stage": "access", "message": "token"}}, rsandbox.AuthError),
        (403, {"error": {"status": 403, "stage": "access", "message": "uid"}}, rsandbox.AuthError),
        (400, {"error": {"message": "bad json"}}, rsandbox.InvalidRequest),
        (413, {"error": {"message": "too big"}}, rsandbox.InvalidRequest),
        (422, {"error": {"message": "limits.memory_mb above"}}, rsandbox.InvalidRequest),
        (503, {"error": {"message": "queue full"}}, rsandbox.Busy),
        (404, {"error": {"stage": "session", "message": "no session"}}, rsandbox.SessionGone),
        (410, {"error": {"stage": "session", "reason": "deleted", "message": "ended"}}, rsandbox.SessionGone),
        (404, {"error": {"stage": "files", "message": "no such file"}}, rsandbox.FileNotFound),
        (500, {"error": {"stage": "host", "message": "boom"}}, rsandbox.SandboxError),
    ],
)
def test_errors_by_status(code, body, cls) -> None:
    with pytest.raises(cls) as e:
        C.raise_for(answer(code, body, **{"Retry-After": "2"}), session=False)
    assert isinstance(e.value, rsandbox.Error) and e.value.status == code
    assert body["error"]["message"] in str(e.value)
    if cls is rsandbox.Busy:
        assert e.value.retry_after == 2


def test_version_mismatch_warns() -> None:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        C.check_version({"version": "0.0.0-other"})
        C.check_version({"version": rsandbox.__version__})
    assert len(w) == 1 and issubclass(w[0].category, rsandbox.VersionWarning)
