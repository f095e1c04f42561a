from __future__ import annotations

import asyncio

from core.waits import cancel_and_wait, until


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


async def test_cancel_and_wait_ends_a_loop_that_absorbs_a_cancel() -> None:
    absorbed = 0

    async def stubborn() -> None:
        nonlocal absorbed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:  # as a retrying loop does when the cancel comes back as a TimeoutError
                absorbed += 1
                if absorbed > 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], every=0.05), 2)
    assert task.cancelled() and absorbed == 3
