"""Poll instead of sleeping for a few milliseconds after a request leaves for a ComfyUI server.

Why (issue 18, traced with time marks on this kind of 2-vCPU machine, ComfyUI beside ComfyGate): a process
asleep in epoll is woken on the CPU of whoever woke it. ComfyUI answers ``POST /prompt`` and goes straight
on executing the prompt it accepted, on that CPU; ComfyGate, woken behind it, read the answer 1.2-1.5 ms
after it was sent, where a direct client read its own after 0.17 ms. Polling for the few milliseconds an
answer takes (``POST /prompt`` 3-5 ms, ``/view`` ~5 ms) keeps ComfyGate running on its own CPU: it reads the
answer at once, and the same for ComfyUI's events and the client's next request that follow.

What it costs: a core kept busy for at most ``window`` after each request to a backend, never while a long
workflow runs. Each turn yields the CPU (``sched_yield``, the GIL released), so a process or a ComfyGate
thread that needs this CPU runs at once: the poll only takes a core nobody else wants. Without the yield,
ComfyGate's own worker threads (reading an output from ComfyUI's folder) waited for the poll's time slice.
A job handed to the loop's executor ends the poll (``ThreadsFirst``), and so do several turns in a row spent
off the CPU (every CPU wanted: a sleeping process is woken sooner there than a yielding one).
``COMFYUI_BUSY_POLL_MS=0`` turns it off, e.g. where CPU time is billed or shared.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_yield_cpu = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
# A turn of the poll in which the loop's thread was off the CPU this long (wall time minus its CPU time: not
# work the loop did) means the yield gave the CPU away. Once is ComfyUI's burst of work on this CPU (what the
# yield is for); several turns in a row mean every CPU is wanted: the poll ends, and the loop sleeps and is
# woken as usual. (Ending at the first such turn, or when off the CPU half the time, lost most of the gain.)
CONTENDED_S = 0.001
CONTENDED_TURNS = 3
BACKOFF_S = 1.0  # ... and none starts for this long: on a busy machine each first yield would cost a time slice


class BusyPoll:
    """One per process (its backends share it): one polling task at most, whatever the requests in flight."""

    def __init__(self, window_s: float) -> None:
        self.window = window_s
        self._until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._calm_at = 0.0  # no poll starts before this loop time (the last one met contention)

    @property
    def polling(self) -> bool:
        return self._task is not None

    def expect_answer(self) -> None:
        """A request just left for a backend: poll until ``window`` from now (on the running loop)."""
        if self.window <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._until = now + self.window
        if self._task is None and now >= self._calm_at:
            self._task = loop.create_task(self._poll(loop), name="busy-poll")

    def stand_back(self) -> None:
        """End the poll at its next turn (it may start again with the next request)."""
        self._until = 0.0

    async def _poll(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            last, cpu = loop.time(), time.thread_time()
            given_away = 0  # turns in a row in which the CPU went to others
            while last < self._until:
                _yield_cpu()
                await asyncio.sleep(0)  # one loop turn: whatever arrived is read now
                now, now_cpu = loop.time(), time.thread_time()
                given_away = given_away + 1 if (now - last) - (now_cpu - cpu) > CONTENDED_S else 0
                if given_away >= CONTENDED_TURNS:
                    self._calm_at = now + BACKOFF_S  # no CPU to spare: polling buys nothing now
                    break
                last, cpu = now, now_cpu
        finally:
            self._task = None


class ThreadsFirst(ThreadPoolExecutor):
    """The loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``): a job handed to
    it ends the poll. On a machine with no CPU to spare, the thread was woken on the poll's CPU and waited for
    the scheduler's next tick (4 ms) behind it, yield or not; with the poll ended the loop sleeps and the
    thread runs at once. (Threads started elsewhere, e.g. anyio's, are not seen: the yield is what they get.)"""

    def __init__(self, poll: BusyPoll) -> None:
        super().__init__(thread_name_prefix="comfygate")
        self.poll = poll

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        self.poll.stand_back()
        return super().submit(fn, *args, **kwargs)
