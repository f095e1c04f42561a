"""Background jobs and per-task timers: what the manager's parts start and what shutdown must stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("comfygate.tasks")


class Jobs:
    """Background coroutines, tracked so shutdown can wait for them and their errors are logged."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        job = asyncio.create_task(coro, name=name)
        self._running.add(job)
        job.add_done_callback(self._done)
        return job

    def _done(self, job: asyncio.Task[Any]) -> None:
        self._running.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("background job %s failed", job.get_name(), exc_info=job.exception())

    async def stop(self) -> None:
        for job in list(self._running):
            job.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


class Timers:
    """One timer per task (its timeout), replaced when re-armed, cancelled when the task ends."""

    def __init__(self) -> None:
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def arm(self, task_id: str, delay: float, callback: Callable[[str], None]) -> None:
        old = self._handles.pop(task_id, None)
        if old is not None:
            old.cancel()
        self._handles[task_id] = asyncio.get_running_loop().call_later(delay, self._fire, task_id, callback)

    def _fire(self, task_id: str, callback: Callable[[str], None]) -> None:
        self._handles.pop(task_id, None)
        callback(task_id)

    def cancel(self, task_id: str) -> None:
        handle = self._handles.pop(task_id, None)
        if handle is not None:
            handle.cancel()

    def stop(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)
