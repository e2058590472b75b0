"""The asyncio client against a real daemon: runs, limits, sessions, files, stateful
execution and streaming, over the Unix socket and TCP."""

import asyncio

import pytest

import rsandbox


async def test_run_and_limits(aclient: rsandbox.AsyncClient) -> None:
    r = await aclient.run("print(sum(range(10)))", timeout=10, memory_mb=128, cpus=0.5, pids=32)
    assert r.status == "ok" and r.stdout == "45\n"
    r = await aclient.run(argv=["/bin/sh", "-c", "kill -9 $$"])
    assert r.status == "signal" and r.signal == 9
    with pytest.raises(rsandbox.InvalidRequest) as e:
        await aclient.run("print(1)", memory_mb=100000)
    assert "memory_mb" in e.value.message


async def test_concurrent_runs(aclient: rsandbox.AsyncClient) -> None:
    rs = await asyncio.gather(*(aclient.run(f"print({i})") for i in range(6)))
    assert [r.stdout for r in rs] == [f"{i}\n" for i in range(6)]


async def test_session_files_and_execute(aclient: rsandbox.AsyncClient, tmp_path) -> None:
    async with aclient.session(memory_mb=256) as s:
        await s.files.write("data/x.txt", "abc")
        assert await s.files.read("data/x.txt") == b"abc"
        assert [f.name for f in await s.files.list("data")] == ["x.txt"]
        (tmp_path / "h.txt").write_bytes(b"host")
        await s.files.upload(tmp_path / "h.txt", "h.txt")
        await s.files.download("h.txt", tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_bytes() == b"host"
        await s.files.remove("h.txt")
        r = await s.run("print(open('data/x.txt').read())")
        assert r.stdout == "abc\n"
        await s.execute("n = 10")
        e = await s.execute("n * 2")
        assert e.text == "20" and e.status == "ok"
        cid = await s.contexts.create(ipython=False)
        assert (await s.execute("'n' in dir()", context=cid)).text == "False"
        assert any(c.id == cid for c in await s.contexts.list())
        assert await s.contexts.interrupt(cid) == "idle"
        await s.contexts.restart(cid)
        await s.contexts.delete(cid)
        assert (await s.usage())["cpu_ms"] >= 0
        again = await aclient.session_from_id(s.id)
        assert (await again.info()).id == s.id
        sid = s.id
    with pytest.raises(rsandbox.SessionGone) as err:
        await s.run("print(1)")
    assert err.value.reason == "deleted"
    assert all(i.id != sid for i in await aclient.sessions())


async def test_awaited_session_and_stream(aclient: rsandbox.AsyncClient) -> None:
    s = await aclient.session()
    try:
        events = []
        async for ev in s.execute_stream("for i in range(3): print(i, flush=True)\n'done'"):
            events.append(ev)
        out = "".join(e.text for e in events if e.type == "stdout")
        assert out == "0\n1\n2\n"
        assert events[-1].type == "end" and events[-1].execution.text == "'done'"
    finally:
        await s.close()
    with pytest.raises(rsandbox.SessionGone):
        await aclient.session_from_id(s.id)


async def test_session_gone_and_missing_files(aclient: rsandbox.AsyncClient) -> None:
    with pytest.raises(rsandbox.SessionGone):
        await aclient.session_from_id("f" * 32)
    async with aclient.session() as s:
        with pytest.raises(rsandbox.FileNotFound):
            await s.files.read("missing")
