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
