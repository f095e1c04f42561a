"""The cluster's event bus against a real redis-server: the publishing replica's listeners hear its messages at
once, every replica's listeners hear each message once and in order, and the taps (the SSE log) get stream ids."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.cluster_procs import RedisServer
from cluster.bus import ClusterBus
from cluster.replies import Fields, field
from cluster.stream import StreamReader
from cluster.writer import RedisWriter
from events.hub import EventHub, Subscription


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class Replica:
    """What a replica's bus is made of: a writer, a stream reader and a hub with one listener and one tap."""

    def __init__(self, url: str, origin: str) -> None:
        self.redis = Redis.from_url(url)
        self.reading = Redis.from_url(url)
        self.writer = RedisWriter(self.redis)
        self.hub = EventHub(queue_size=1000)
        self.bus = ClusterBus(self.hub, self.writer, "t:", 10_000, 100, origin=origin)
        self.reader = StreamReader(self.reading, "t:events", self._entry, block_ms=200)
        self.listener: Subscription = self.hub.subscribe()
        self.heard: list[dict[str, Any]] = []
        self.tapped: list[tuple[str, dict[str, Any]]] = []  # (stream id, message)
        self.current = ""
        self.hub.add_tap(lambda p: self.tapped.append((self.current, json.loads(p.text))))
        self._tasks: list[asyncio.Task[None]] = []

    def _entry(self, entry_id: str, fields: Fields) -> None:
        self.current = entry_id
        task_id = field(fields, b"t") or None
        self.bus.deliver(field(fields, b"d"), task_id, field(fields, b"k"), "", "", field(fields, b"o"))

    async def __aenter__(self) -> Replica:
        self.reader.last_id = "$"
        self.writer.start()
        self._tasks.append(asyncio.create_task(self.reader.run()))
        await asyncio.wait_for(self.reader.connected.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.writer.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def listen(self) -> list[int]:
        """What the listener was given so far (its queue taken), as the numbers of the messages."""
        self.heard += [json.loads(t) for t in self.listener.take()]
        return [m["n"] for m in self.heard]


def message(n: int) -> dict[str, Any]:
    return {"type": "progress", "task_id": "t1", "n": n}


async def until(check: Any, timeout: float = 5.0) -> None:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.01)


async def test_the_publisher_hears_at_once_and_everyone_hears_once_in_order(redis_server: RedisServer) -> None:
    async with Replica(redis_server.url, "a/1") as a, Replica(redis_server.url, "b/1") as b:
        for n in range(50):
            a.bus.publish(message(n), "t1")
        assert a.listen() == list(range(50))  # at once: before anything was written or read back
        assert b.listen() == [] and a.tapped == []
        await until(lambda: len(b.listen()) == 50 and len(a.tapped) == 50)
        assert b.listen() == list(range(50))
        assert a.listen() == list(range(50))  # not a second time from the stream
        # The taps (the SSE log) got every message from the stream, with its id, in order, on both replicas.
        assert [m["n"] for _, m in a.tapped] == list(range(50))
        assert [i for i, _ in a.tapped] == [i for i, _ in b.tapped] and all(i for i, _ in a.tapped)


async def test_a_task_not_surely_ours_waits_for_the_stream_and_so_do_its_next_messages(
    redis_server: RedisServer,
) -> None:
    async with Replica(redis_server.url, "a/1") as a:
        for n in range(5):
            a.bus.publish(message(n), "t1")
        a.bus.sure = lambda task_id: False
        a.bus.publish(message(5), "t1")  # the lease is not surely ours: through the stream
        a.bus.sure = lambda task_id: True
        for n in range(6, 10):
            a.bus.publish(message(n), "t1")  # behind it, whatever ``sure`` says now
        a.bus.publish({"type": "status", "n": 100})  # another key is not held up
        assert a.listen() == [0, 1, 2, 3, 4, 100]
        await until(lambda: len(a.listen()) == 11)
        assert a.listen() == [0, 1, 2, 3, 4, 100, 5, 6, 7, 8, 9]
        a.bus.publish(message(10), "t1")  # all read: at once again
        assert a.listen()[-1] == 10


async def test_a_message_the_fence_refuses_does_not_hold_its_task_back(redis_server: RedisServer) -> None:
    async with Replica(redis_server.url, "a/1") as a:
        await a.redis.set("t:lease:b1", "another replica")
        a.bus.fence = lambda task_id: ("t:lease:b1", "a")
        a.bus.sure = lambda task_id: False
        a.bus.publish(message(0), "t1")  # refused in Redis: nobody hears it
        a.bus.fence = None
        a.bus.sure = lambda task_id: True
        a.bus.publish(message(1), "t1")  # waits for the stream behind the refused one...
        assert a.listen() == []
        await until(lambda: a.listen() == [1])
        a.bus.publish(message(2), "t1")  # ...which is not waited for any more
        assert a.listen() == [1, 2]


async def test_while_redis_is_away_the_publisher_hears_in_order_once_it_is_back(redis_server: RedisServer) -> None:
    async with Replica(redis_server.url, "a/1") as a, Replica(redis_server.url, "b/1") as b:
        a.bus.publish(message(0), "t1")
        assert a.listen() == [0]
        await until(lambda: b.listen() == [0])
        await asyncio.to_thread(redis_server.stop)
        a.bus.publish(message(1), "t1")  # heard at once: the writer does not know yet
        await until(lambda: not a.writer.ok)
        for n in range(2, 6):
            a.bus.publish(message(n), "t1")  # held with the writes, heard when read back
        assert a.listen() == [0, 1]
        await asyncio.to_thread(redis_server.start)
        await until(lambda: b.listen() == list(range(6)), timeout=15)
        await until(lambda: a.listen() == list(range(6)))
        await asyncio.sleep(0.2)
        assert a.listen() == list(range(6)) and b.listen() == list(range(6))
