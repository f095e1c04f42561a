"""CPU-bound request work (workflow conversion, validation, params) off the event loop, a few at once.

Why: converting or checking a big workflow takes time in proportion to its size; on the event loop it
would stall every WebSocket, SSE stream and health probe meanwhile. In a worker thread the loop keeps
its turn (the interpreter switches threads every few milliseconds), and the limiter keeps hostile
requests from taking every thread.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

T = TypeVar("T")
CPU_WORKERS = 2  # the work holds the GIL: more threads would not make it faster, only the loop slower
# An API-format workflow this small is converted and checked in ~10 µs a node (BENCHMARKS.md, issue 18):
# less than the hop to a worker thread and back costs the request (~0.3 ms), so it is done in place.
INLINE_NODES = 24

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = weakref.WeakKeyDictionary()


async def run_cpu(func: Callable[..., T], *args: Any, inline: bool = False, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in a worker thread, at most ``CPU_WORKERS`` at a time per event loop
    (``inline``: the caller knows the work is tiny, see ``INLINE_NODES``: run it here)."""
    if inline:
        return func(*args, **kwargs)
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(CPU_WORKERS)
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs), limiter=limiter)
