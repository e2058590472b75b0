"""map_run of a few hundred programs: every report back, in order."""

import rsandbox


def test_map_run_hundreds(daemon) -> None:
    codes = [f"print({i} ** 2)" for i in range(300)]
    # Some items as dicts of run arguments, mixed in.
    codes[7] = {"code": "import sys; sys.exit(7)"}
    codes[11] = {"argv": ["/bin/echo", "eleven"]}
    with daemon.client("unix") as c:
        reports = c.map_run(codes, timeout=10, memory_mb=128, progress=True)
    assert len(reports) == 300
    for i, r in enumerate(reports):
        if i == 7:
            assert r.status == "exit" and r.exit_code == 7
        elif i == 11:
            assert r.stdout == "eleven\n"
        else:
            assert r.status == "ok" and r.stdout == f"{i * i}\n", (i, r)


async def test_async_map_run_hundreds(daemon) -> None:
    async with daemon.aclient("tcp") as c:
        reports = await c.map_run([f"print({i})" for i in range(100)], timeout=10)
    assert [r.stdout for r in reports] == [f"{i}\n" for i in range(100)]
