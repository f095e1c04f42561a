"""Every write this replica makes to Redis, in order, batched into pipelines, retried while Redis is away.

Task records and events leave the event loop's hot path here: a caller queues an operation and goes
on (``submit``), or waits for it to be stored (``call``: a submission is only accepted once stored).
While Redis is unreachable the queue holds what is owed (bounded: the oldest droppable events, such
as previews and progress steps, go first) and the writer retries until Redis is back; ``ok`` says
which state it is in, for /api/health and the 503s.

The batches go out on one connection of the writer's own, up to ``IN_FLIGHT`` at a time without waiting
for the previous one's answer: Redis runs a connection's commands in the order they arrive and answers
in that order, so the order of the writes is kept, and a write queued while a batch is on its way (a
task's ``completed`` right behind its last events) leaves at once instead of a round trip later. When
the connection fails, every batch not answered yet goes back to the head of the queue, in order, and is
sent again (a write may then be applied twice, as a failed pipeline's always could).

Each batch is one MULTI/EXEC. Outside a transaction Redis serves the clients blocked on a stream after
each command, so every replica's stream reader woke on a batch's first XADD with that entry alone and
read the rest (a task's ``completed`` behind its record) one more round trip later; in a transaction it is
served once, after EXEC, with the whole batch. A command Redis refuses when it is queued (a malformed one:
none of ours) aborts its batch; an error at run time (a script's) is that command's alone, as before.
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
from redis.asyncio.connection import AbstractConnection
from redis.client import EMPTY_RESPONSE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.waits import cancel_and_wait

log = logging.getLogger("comfygate.cluster.writer")

Pipe = Pipeline  # what an op adds its commands to (one pipeline per batch, no transaction)
Op = Callable[[Pipe], Any]  # adds its commands to the pipeline
BATCH = 256
IN_FLIGHT = 4  # batches sent and not answered yet
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
        self._sent: deque[tuple[list[_Item], list[tuple[Any, Any]]]] = deque()  # (batch, its commands), in order
        self._wake = asyncio.Event()  # something to send, or room to send it
        self._answered = asyncio.Event()  # something was sent: the reader has answers to wait for
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Writes owed: queued, or sent and not answered yet."""
        return len(self._items) + self._unanswered()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="redis writer")
        return self._task

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (if Redis answers within ``timeout``), then stop."""
        if self._task is None:
            return
        if (self._items or self._sent) and self.ok:
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
        delay = 0.05
        while True:
            connection: AbstractConnection | None = None
            try:
                connection = await self.redis.connection_pool.get_connection()
                await connection.connect()
                delay = 0.05
                await self._pump(connection)
            except RETRY_ERRORS as exc:
                if self.ok:
                    log.warning(
                        "Redis unreachable (%s): holding %d write(s) until it is back",
                        exc,
                        len(self) + self._unanswered(),
                    )
                self.ok = False
                self._take_back()
                if connection is not None:
                    await connection.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                if connection is not None:
                    await self.redis.connection_pool.release(connection)

    async def _pump(self, connection: AbstractConnection) -> None:
        """Send batches and read their answers on ``connection`` until it fails."""
        sender = asyncio.create_task(self._send(connection), name="redis writer: send")
        try:
            await self._receive(connection, sender)
        finally:
            await cancel_and_wait([sender])

    async def _send(self, connection: AbstractConnection) -> None:
        while True:
            if not self._items or len(self._sent) >= IN_FLIGHT:
                if not self._items and not self._sent:
                    self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._next_batch()
            if not batch:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for item in batch:
                item.op(pipe)
            commands = list(pipe.command_stack)
            self._sent.append((batch, commands))  # (first: should the send fail, it is taken back with the rest)
            self._answered.set()
            if not connection.is_connected:  # closed under us: never on a new socket before what the old one lost
                raise RedisConnectionError("the writer's connection to Redis closed")
            packed = connection.pack_commands([("MULTI",), *(c for c, _ in commands), ("EXEC",)])
            await connection.send_packed_command(packed, check_health=False)

    async def _receive(self, connection: AbstractConnection, sender: asyncio.Task[None]) -> None:
        """The answers of the batches sent, in order; a failed sender ends this too."""
        while True:
            if not self._sent:
                self._answered.clear()
                waiting = asyncio.ensure_future(self._answered.wait())
                await asyncio.wait([waiting, sender], return_when=asyncio.FIRST_COMPLETED)
                if sender.done():
                    waiting.cancel()
                    sender.result()  # its error (a send that failed), raised here
                continue
            batch, commands = self._sent[0]
            results = await self._answers(connection, commands)
            self._sent.popleft()
            if not self.ok:
                log.info("Redis is back: writing what was held")
            self.ok = True
            self._settle(batch, results)
            self._wake.set()

    async def _answers(self, connection: AbstractConnection, commands: list[tuple[Any, Any]]) -> list[Any]:
        """A batch's results, in order: MULTI's OK, each command's QUEUED, then EXEC's array (each reply through
        redis-py's callback for its command, as a pipeline would; an error reply stays in its place)."""
        await connection.read_response()
        refused: ResponseError | None = None
        for _ in commands:
            try:
                await connection.read_response()
            except ResponseError as exc:  # refused when queued: EXEC aborts the batch
                refused = refused or exc
        try:
            replies = await connection.read_response()
        except ResponseError as exc:
            return [refused or exc] * len(commands)
        return [
            self._parsed(reply, command, options) for reply, (command, options) in zip(replies, commands, strict=True)
        ]

    def _parsed(self, reply: Any, command: Any, options: dict[str, Any]) -> Any:
        if isinstance(reply, ResponseError):
            return reply
        if EMPTY_RESPONSE in options:
            options.pop(EMPTY_RESPONSE)
        options.pop("keys", None)
        callback = self.redis.response_callbacks.get(command[0])
        return callback(reply, **options) if callback is not None else reply

    def _unanswered(self) -> int:
        return sum(len(batch) for batch, _ in self._sent)

    def _take_back(self) -> None:
        """The batches not answered go back to the head of the queue, in their order, to be sent again."""
        while self._sent:
            batch, _ = self._sent.pop()
            self._items.extendleft(reversed(batch))

    def _next_batch(self) -> list[_Item]:
        """Up to ``BATCH`` queued ops, oldest first, without those whose caller stopped waiting."""
        batch: list[_Item] = []
        while self._items and len(batch) < BATCH:
            item = self._items.popleft()
            if item.future is not None and item.future.done():
                continue  # its caller gave up before it was sent: it must not be stored after a 503
            batch.append(item)
        return batch

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
