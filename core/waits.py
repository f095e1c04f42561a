"""Waiting for a condition that an ``asyncio.Event`` announces changes of, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(done: Callable[[], bool], changed: asyncio.Event, timeout: float) -> bool:
    """Wait until ``done()`` holds, looked at again each time ``changed`` is set (whoever changes what ``done``
    reads sets it), at most ``timeout`` s; returns whether it holds."""
    deadline = time.monotonic() + timeout
    while not done():
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
        except TimeoutError:
            return done()
    return True


async def cancel_and_wait(tasks: list[asyncio.Task[object]] | list[asyncio.Task[None]], every: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every ``every`` s those still running.

    Once is not always enough: on Python 3.11 a cancel that arrives as a call's own ``asyncio.timeout``
    expires comes back as that call's ``TimeoutError``, which a loop that retries on errors absorbs (a
    cluster replica's stop then waited forever; see cluster/lease.py)."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=every)
        pending = [t for t in pending if not t.done()]
    for task in tasks:  # retrieved: never "exception was never retrieved"
        if not task.cancelled():
            task.exception()
