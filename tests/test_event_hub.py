"""The fan-out: serialise once, bounded queues, slow listeners dropped, filters respected."""

from __future__ import annotations

import asyncio
import json

from event_hub import EventHub


async def test_every_listener_gets_the_same_serialised_message() -> None:
    hub = EventHub(queue_size=10)
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish({"type": "task_update", "task_id": "t1"}, "t1")
    text_a, text_b = a.queue.get_nowait(), b.queue.get_nowait()
    assert text_a is text_b  # one json.dumps for all listeners
    assert json.loads(text_a)["task_id"] == "t1"


async def test_task_filter_and_broadcasts() -> None:
    hub = EventHub(queue_size=10)
    only_t1 = hub.subscribe({"t1"})
    hub.publish({"n": 1}, "t2")
    hub.publish({"n": 2}, "t1")
    hub.publish({"n": 3})  # queue/backend updates reach filtered listeners too
    got = [json.loads(only_t1.queue.get_nowait())["n"] for _ in range(only_t1.queue.qsize())]
    assert got == [2, 3]
    hub.add_task(only_t1, "t2")
    hub.publish({"n": 4}, "t2")
    assert json.loads(only_t1.queue.get_nowait())["n"] == 4


async def test_slow_listener_is_dropped_and_its_stream_ends() -> None:
    hub = EventHub(queue_size=3)
    slow, fast = hub.subscribe(), hub.subscribe()
    received: list[str] = []

    async def drain() -> None:
        async for text in fast:
            received.append(text)

    reader = asyncio.create_task(drain())
    for i in range(10):
        hub.publish({"n": i})
        await asyncio.sleep(0)
    assert slow.dropped and not fast.dropped
    assert hub.listeners == 1
    assert slow.queue.qsize() <= 3  # never grew past its bound
    assert [m async for m in slow] != []  # what was queued is delivered, then the stream ends
    assert hub.dropped_total == 1
    fast.close()
    await asyncio.wait_for(reader, 1)
    assert [json.loads(t)["n"] for t in received] == list(range(10))
