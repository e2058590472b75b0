"""The asyncio client: the same methods, awaited.

    python3 examples/python/async_client.py
"""
import asyncio

import rsandbox


async def main() -> None:
    async with rsandbox.AsyncClient() as client:
        reports = await asyncio.gather(*(client.run(f"print({i} ** 2)") for i in range(5)))
        print([r.stdout.strip() for r in reports])
        async with client.session() as s:
            await s.execute("total = 0")
            for i in range(3):
                await s.execute(f"total += {i}")
            print((await s.execute("total")).text)
            async for ev in s.execute_stream("print('streamed')"):
                print(ev.type, ev.text or "")


asyncio.run(main())
