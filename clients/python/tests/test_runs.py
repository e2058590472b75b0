"""One-shot runs against a real daemon, over the Unix socket and over TCP with a token."""

import pytest

import rsandbox


def test_run_reports_every_field(client: rsandbox.Client) -> None:
    r = client.run("import sys; print(sys.stdin.read().upper())", stdin="hello", timeout=10, memory_mb=256)
    assert r.status == "ok" and r.ok and r.exit_code == 0, r
    assert r.stdout == "HELLO\n" and r.stderr == ""
    assert r.stdout_bytes == 6 and r.stdout_truncated is False
    assert r.limits_hit == [] and r.wall_ms > 0 and r.cpu_ms is not None
    assert isinstance(r.enforcement, dict) and "memory" in r.enforcement
    assert r.network is None  # no proxy ran
    assert r.stage == "run" and r.queued_ms is not None and r.node_id is None


def test_failures_are_reports_not_exceptions(client: rsandbox.Client) -> None:
    r = client.run("import sys; sys.exit(3)")
    assert r.status == "exit" and r.exit_code == 3
    r = client.run("import time; time.sleep(30)", timeout=1)
    assert r.status == "timeout" and "wall" in r.limits_hit
    r = client.run("raise ValueError('nope')")
    assert r.status == "exit" and "ValueError: nope" in r.stderr


def test_files_fetch_env_argv_and_binary_io(client: rsandbox.Client) -> None:
    r = client.run(
        argv=["/bin/sh", "-c", "cat in.txt > out.txt; printf '%s' \"$GREETING\" >> out.txt; cat blob.bin"],
        files={"in.txt": "1 2 3\n", "blob.bin": b"\xff\x00\xfe"},
        fetch=["out.txt", "missing.txt"],
        env={"GREETING": "hi"},
    )
    assert r.status == "ok", r
    assert r.files == {"out.txt": b"1 2 3\nhi"}
    assert "missing.txt" in r.files_refused
    assert r.stdout is None and r.stdout_data == b"\xff\x00\xfe"
    r = client.run("import sys; sys.stdout.write(repr(sys.stdin.buffer.read()))", stdin=b"\x01\x02")
    assert r.stdout == "b'\\x01\\x02'"


def test_loopback_network_and_bash(client: rsandbox.Client) -> None:
    r = client.run("echo $((6 * 7))", language="bash", network="loopback")
    assert r.stdout == "42\n", r


def test_limits_above_the_maxima_are_invalid(client: rsandbox.Client) -> None:
    for kw, word in [
        ({"memory_mb": 100000}, "memory_mb"),
        ({"timeout": 100000}, "timeout"),
        ({"pids": 100000}, "pids"),
        ({"cpus": 100000}, "cpus"),
        ({"network": "all"}, "network"),
        ({"allowed_hosts": ["example.org"]}, "maximum"),
        ({"seccomp": "none"}, "seccomp"),
        ({"language": "cobol"}, "cobol"),
    ]:
        with pytest.raises(rsandbox.InvalidRequest) as e:
            client.run("print(1)", **kw)
        assert e.value.status == 422 and word in e.value.message, (kw, e.value)


def test_health_and_version(client: rsandbox.Client) -> None:
    h = client.health()
    assert h["status"] in ("ok", "degraded") and h["version"] == rsandbox.__version__
    assert h["maxima"]["memory_mb"] == 1024
