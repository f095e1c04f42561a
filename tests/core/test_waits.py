from __future__ import annotations

import asyncio

from core.waits import until


async def test_until_wakes_on_each_change_and_gives_up_at_the_deadline() -> None:
    changed = asyncio.Event()
    seen: list[int] = []

    async def count() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            seen.append(i)
            changed.set()

    counting = asyncio.create_task(count())
    assert await until(lambda: len(seen) == 3, changed, timeout=5)
    await counting
    assert not await until(lambda: len(seen) == 4, changed, timeout=0.05)  # nothing changes any more
    assert await until(lambda: True, changed, timeout=0)
