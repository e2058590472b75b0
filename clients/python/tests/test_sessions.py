"""Sessions, their files and stateful execution (whole and streamed), blocking client."""

import os

import pytest

import rsandbox


def test_session_runs_share_files_and_limits(client: rsandbox.Client) -> None:
    with client.session(memory_mb=256, pids=64, network="loopback", env={"A": "1"}, idle_timeout=120) as s:
        assert any(i.id == s.id for i in client.sessions())
        info = s.info()
        assert info.limits["memory_mb"] == 256 and info.limits["network"] == "loopback"
        assert s.run("open('kept.txt', 'w').write('state')").ok
        r = s.run("import os; print(open('kept.txt').read(), os.environ['A'])", timeout=5)
        assert r.stdout == "state 1\n", r
        assert s.run(argv=["/bin/sh", "-c", "exit 4"]).exit_code == 4
        u = s.usage()
        assert u["cpu_ms"] >= 0 and u["source"]
        again = client.session_from_id(s.id)
        assert again.run("print(open('kept.txt').read())").stdout == "state\n"
        with pytest.raises(rsandbox.InvalidRequest):
            s.run("print(1)", memory_mb=64)  # the session fixed its limits
    assert all(i.id != s.id for i in client.sessions())


def test_files(client: rsandbox.Client, tmp_path) -> None:
    with client.session() as s:
        s.files.write("sub/dir/a.txt", "hello")
        s.files.write("tool.sh", b"#!/bin/sh\necho tool\n", mode=0o755)
        s.files.write("odd name %.bin", b"\x00\xff")
        assert s.files.read("sub/dir/a.txt") == b"hello"
        assert s.files.read("odd name %.bin") == b"\x00\xff"
        names = {f.name: f for f in s.files.list()}
        assert names["sub"].type == "dir" and names["tool.sh"].mode == 0o755
        assert names["tool.sh"].size == len(b"#!/bin/sh\necho tool\n") and names["tool.sh"].type == "file"
        assert [f.name for f in s.files.list("sub/dir")] == ["a.txt"]
        assert s.run(argv=["./tool.sh"]).stdout == "tool\n"
        host = tmp_path / "up.py"
        host.write_text("print('uploaded')\n")
        os.chmod(host, 0o600)
        s.files.upload(host)
        s.files.upload(host, "deep/copy.py")
        assert s.run(argv=["python3", "deep/copy.py"]).stdout == "uploaded\n"
        assert {f.name: f.mode for f in s.files.list()}["up.py"] == 0o600
        s.files.download("sub/dir/a.txt", tmp_path / "down.txt")
        assert (tmp_path / "down.txt").read_bytes() == b"hello"
        s.files.remove("sub/dir/a.txt")
        assert s.files.list("sub/dir") == []
        with pytest.raises(rsandbox.FileNotFound):
            s.files.remove("sub/dir/a.txt")


def test_execute_keeps_state_and_reports_results(client: rsandbox.Client) -> None:
    with client.session() as s:
        e = s.execute("x = 41\nprint('set')")
        assert e.status == "ok" and e.stdout == "set\n" and e.text is None
        e = s.execute("x + 1")
        assert e.status == "ok" and e.text == "42" and e.results[0].main
        assert e.results[0].data["text/plain"] == "42" and e.execution_count == 2
        e = s.execute("1 / 0")
        assert e.status == "error" and e.error.name == "ZeroDivisionError"
        assert "1 / 0" in e.error.traceback
        assert s.execute("x").text == "41"  # an exception does not end the context
        e = s.execute("import time\ntime.sleep(30)", timeout=1)
        assert e.status == "timeout"
        assert s.execute("x").text == "41"


def test_contexts_are_apart(client: rsandbox.Client) -> None:
    with client.session() as s:
        a = s.contexts.create(ipython=False)
        b = s.contexts.create()
        s.execute("v = 'a'", context=a)
        s.execute("v = 'b'", context=b)
        assert s.execute("v", context=a).text == "'a'"
        assert s.execute("v", context=b).context_id == b
        assert {c.id for c in s.contexts.list()} >= {a, b}
        assert s.contexts.interrupt(a) == "idle"
        s.contexts.restart(a)
        assert s.execute("v", context=a).status == "error"
        s.contexts.delete(b)
        with pytest.raises(rsandbox.SessionGone) as e:
            s.execute("v", context=b)
        assert e.value.status == 410
        with pytest.raises(rsandbox.SessionGone):
            s.execute("v", context="no-such-context")
        with pytest.raises(rsandbox.InvalidRequest):
            s.execute("1", timeout=100000)


def test_execute_stream(client: rsandbox.Client) -> None:
    with client.session() as s:
        code = "import sys\nprint('one', flush=True)\nsys.stderr.write('two\\n')\nsys.stdout.buffer.write(b'\\xff\\n')\n7 * 6"
        events = list(s.execute_stream(code))
        kinds = [e.type for e in events]
        assert kinds[-1] == "end" and "keepalive" not in kinds
        out = b"".join(e.raw for e in events if e.type == "stdout")
        assert out == b"one\n\xff\n"
        assert "".join(e.text for e in events if e.type == "stderr") == "two\n"
        assert [e.result.data["text/plain"] for e in events if e.type == "result"] == ["42"]
        assert events[-1].execution.text == "42" and events[-1].execution.status == "ok"
        err = [e for e in s.execute_stream("raise KeyError('k')") if e.type == "error"]
        assert err[0].error.name == "KeyError"


def test_stream_arrives_before_the_cell_ends(client: rsandbox.Client) -> None:
    with client.session() as s:
        stream = s.execute_stream("import time\nprint('early', flush=True)\ntime.sleep(2)\nprint('late')")
        first = next(stream)
        # The first line is here while the cell still sleeps: the context is busy.
        assert first.type == "stdout" and first.text.startswith("early")
        assert any(c.busy for c in s.contexts.list())
        rest = list(stream)
        assert rest[-1].type == "end"
