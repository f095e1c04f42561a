"""Every write this replica makes to Redis, in order, batched into pipelines, retried while Redis is away.

Task records and events leave the event loop's hot path here: a caller queues an operation and goes
on (``submit``), or waits for it to be stored (``call``: a submission is only accepted once stored).
While Redis is unreachable the queue holds what is owed (bounded: the oldest droppable events, such
as previews and progress steps, go first) and the writer retries until Redis is back; ``ok`` says
which state it is in, for /api/health and the 503s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.waits import cancel_and_wait

log = logging.getLogger("comfygate.cluster.writer")

Pipe = Pipeline  # what an op adds its commands to (one pipeline per batch, no transaction)
Op = Callable[[Pipe], Any]  # adds its commands to the pipeline
BATCH = 256
RETRY_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class _Item:
    __slots__ = ("op", "future", "droppable", "count")

    def __init__(self, op: Op, future: asyncio.Future[Any] | None, droppable: bool, count: int) -> None:
        self.op = op
        self.future = future
        self.droppable = droppable
        self.count = count  # commands the op adds to the pipeline (its results are that many)


class RedisWriter:
    def __init__(self, redis: Redis, limit: int = 50_000) -> None:
        self.redis = redis
        self.limit = limit
        self.ok = True
        self.dropped = 0
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="redis writer")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (if Redis answers within ``timeout``), then stop."""
        if self._task is None:
            return
        if self._items and self.ok:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        await cancel_and_wait([self._task])

    def submit(self, op: Op, *, droppable: bool = False, count: int = 1) -> None:
        self._items.append(_Item(op, None, droppable, count))
        if len(self._items) > self.limit:
            self._shed()
        self._wake.set()

    async def call(self, op: Op, *, count: int = 1, timeout: float = 5.0) -> Any:
        """Queue ``op`` and wait for its result (the last command's); a timeout cancels it if not yet sent."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(op, future, False, count))
        self._wake.set()
        return await asyncio.wait_for(future, timeout)

    def _shed(self) -> None:
        kept: deque[_Item] = deque()
        excess = len(self._items) - self.limit
        for item in self._items:
            if excess > 0 and item.droppable:
                excess -= 1
                self.dropped += 1
                continue
            kept.append(item)
        self._items = kept

    async def _run(self) -> None:
        while True:
            if not self._items:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._next_batch()
            if batch:
                self._settle(*await self._execute(batch))

    def _next_batch(self) -> list[_Item]:
        """Up to ``BATCH`` queued ops, oldest first, without those whose caller stopped waiting."""
        batch: list[_Item] = []
        while self._items and len(batch) < BATCH:
            item = self._items.popleft()
            if item.future is not None and item.future.done():
                continue  # its caller gave up before it was sent: it must not be stored after a 503
            batch.append(item)
        return batch

    async def _execute(self, batch: list[_Item]) -> tuple[list[_Item], list[Any]]:
        """Send ``batch`` as one pipeline, again and again while Redis is unreachable: (what was sent, results)."""
        delay = 0.05
        while True:
            # A caller that gave up while Redis was away must not be written after all (it answered 503).
            batch = [item for item in batch if item.future is None or not item.future.done()]
            if not batch:
                return [], []
            try:
                pipe = self.redis.pipeline(transaction=False)
                for item in batch:
                    item.op(pipe)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            except RETRY_ERRORS as exc:
                if self.ok:
                    log.warning(
                        "Redis unreachable (%s): holding %d write(s) until it is back", exc, len(self) + len(batch)
                    )
                self.ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if not self.ok:
                log.info("Redis is back: writing what was held")
            self.ok = True
            return batch, results

    @staticmethod
    def _settle(batch: list[_Item], results: list[Any]) -> None:
        """Each op's result (that of its last command) to whoever waits for it; refusals are logged."""
        index = 0
        for item in batch:
            result = results[index + item.count - 1]
            index += item.count
            if isinstance(result, Exception):
                log.error("Redis refused a write: %s", result)
                if item.future is not None and not item.future.done():
                    item.future.set_exception(result)
            elif item.future is not None and not item.future.done():
                item.future.set_result(result)
