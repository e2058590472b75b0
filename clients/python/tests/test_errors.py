"""Every error class from a real daemon: AuthError, InvalidRequest, Busy, SessionGone,
SandboxError (FileNotFound and ConnectionFailed too)."""

import os
import signal
import threading
import time

import pytest

import rsandbox


def test_tcp_without_the_token_is_auth_error(daemon) -> None:
    for token in ("", "wrong-token"):
        with rsandbox.Client(daemon.url, token=token) as c:
            with pytest.raises(rsandbox.AuthError) as e:
                c.run("print(1)")
            assert e.value.status == 401 and "bearer token" in e.value.message


async def test_async_auth_error(daemon) -> None:
    async with rsandbox.AsyncClient(daemon.url, token="wrong") as c:
        with pytest.raises(rsandbox.AuthError):
            await c.health()


def test_token_from_the_environment(daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSANDBOX_URL", daemon.url)
    monkeypatch.setenv("RSANDBOX_TOKEN", daemon.token)
    with rsandbox.Client() as c:
        assert c.run("print(2)").stdout == "2\n"


def test_malformed_and_oversized_requests(client: rsandbox.Client) -> None:
    with pytest.raises(rsandbox.InvalidRequest) as e:
        client.run("print(1)", files={"../escape": "x"})
    assert e.value.status == 422
    with pytest.raises(rsandbox.InvalidRequest) as e:
        client.run(argv=["/no/such/program"])
    assert e.value.stage == "exec"


def wait_running(c: rsandbox.Client, n: int) -> None:
    for _ in range(600):
        if c.health()["running"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError("the first run never started")


def test_busy_when_the_queue_is_full(busy_daemon) -> None:
    with busy_daemon.client("unix") as c:
        first = threading.Thread(target=c.run, args=("import time; time.sleep(3)",))
        first.start()
        try:
            wait_running(c, 1)
            with pytest.raises(rsandbox.Busy) as e:
                c.run("print(1)")
            assert e.value.status == 503 and e.value.retry_after >= 1
            assert "queue is full" in e.value.message
        finally:
            first.join()


def test_map_run_retries_503s_in_order(busy_daemon) -> None:
    with busy_daemon.client("unix") as c:
        reports = c.map_run([f"print({i} * 2)" for i in range(6)], concurrency=3, timeout=10)
    assert [r.stdout for r in reports] == [f"{i * 2}\n" for i in range(6)]


async def test_async_map_run_retries_503s(busy_daemon) -> None:
    async with busy_daemon.aclient("unix") as c:
        reports = await c.map_run([f"print({i})" for i in range(4)], concurrency=2)
    assert [r.stdout for r in reports] == [f"{i}\n" for i in range(4)]


def test_session_gone(client: rsandbox.Client) -> None:
    with pytest.raises(rsandbox.SessionGone) as e:
        client.session_from_id("0" * 32)
    assert e.value.status == 404
    s = client.session()
    s.close()
    with pytest.raises(rsandbox.SessionGone) as e:
        s.run("print(1)")
    assert e.value.status == 410 and e.value.reason == "deleted"
    with pytest.raises(rsandbox.SessionGone):
        s.files.read("x")
    s.close()  # ending an ended session is fine


def test_missing_file_is_file_not_found(client: rsandbox.Client) -> None:
    with client.session() as s:
        with pytest.raises(FileNotFoundError):
            s.files.read("nope.txt")
        with pytest.raises(rsandbox.InvalidRequest):
            s.files.read("../etc/passwd")


def test_connection_failed(tmp_path) -> None:
    with rsandbox.Client(str(tmp_path / "no.sock")) as c:
        with pytest.raises(rsandbox.ConnectionFailed):
            c.health()


def reaper_of(marker: str) -> int:
    """The host pid of the instance's pid 1: the parent of the background `sleep marker`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if argv[:2] == [b"sleep", marker.encode()]:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("PPid:"):
                            return int(line.split()[1])
        except OSError:
            continue
    raise AssertionError("the session's background process was not found")


def test_sandbox_error_when_the_instance_dies(client: rsandbox.Client) -> None:
    if os.getuid() != 0:
        pytest.skip("killing the session's reaper from the host needs root")
    with client.session() as s:
        marker = f"{1000 + os.getpid() % 1000}.{time.monotonic_ns() % 100000}"
        s.run(argv=["/bin/sh", "-c", f"sleep {marker} > /dev/null 2>&1 &"])
        os.kill(reaper_of(marker), signal.SIGKILL)
        time.sleep(0.5)
        with pytest.raises((rsandbox.SandboxError, rsandbox.SessionGone)) as e:
            s.run("print(1)")
        assert isinstance(e.value, rsandbox.SandboxError), e.value
        assert e.value.status == 500
