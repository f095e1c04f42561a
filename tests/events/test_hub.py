"""The fan-out: serialise once, bounded conflating queues, stopped listeners dropped, filters respected."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import events.hub as hub_module
import gateway.event_log as event_log_module
from events.hub import EventHub, Published, conflation_key
from gateway.event_log import EventLog


def update(task_id: str, status: str, percent: float = 0.0, **more: Any) -> dict[str, Any]:
    """A task_update shaped like TaskManager's: type, then task.summary(), then extras."""
    return {
        "type": "task_update",
        "task_id": task_id,
        "prompt_id": f"p-{task_id}",
        "status": status,
        "backend": "b0",
        "progress": {"percent": percent},
        "error": None,
        **more,
    }


def texts(sub: Any) -> list[dict[str, Any]]:
    return [json.loads(t) for t in sub.take()]


async def test_every_listener_gets_the_same_serialised_message() -> None:
    hub = EventHub(queue_size=10)
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish({"type": "task_update", "task_id": "t1"}, "t1")
    (text_a,), (text_b,) = a.take(), b.take()
    assert text_a is text_b  # one json.dumps for all listeners
    assert json.loads(text_a)["task_id"] == "t1"


async def test_task_filter_and_broadcasts() -> None:
    hub = EventHub(queue_size=10)
    only_t1 = hub.subscribe({"t1"})
    hub.publish({"n": 1}, "t2")
    hub.publish({"n": 2}, "t1")
    hub.publish({"n": 3})  # queue/backend updates reach filtered listeners too
    assert [m["n"] for m in texts(only_t1)] == [2, 3]
    hub.add_task(only_t1, "t2")
    hub.publish({"n": 4}, "t2")
    assert [m["n"] for m in texts(only_t1)] == [4]
    assert hub.listeners == 1
    hub.unsubscribe(only_t1)
    assert hub.listeners == 0 and hub._by_task == {}


async def test_stopped_listener_is_dropped_and_its_stream_ends() -> None:
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
    assert slow.qsize() <= 3  # never grew past its bound
    assert [m async for m in slow] != []  # what was queued is delivered, then the stream ends
    assert hub.dropped_total == 1
    fast.close()
    await asyncio.wait_for(reader, 1)
    assert [json.loads(t)["n"] for t in received] == list(range(10))


def test_conflation_keys_come_from_the_message_not_its_text() -> None:
    assert conflation_key(update("t1", "running", 5)) == ("tt1", "running")
    assert conflation_key(update("t1", "completed", outputs={})) is None
    assert conflation_key({"type": "queue_update", "backend": "b0", "queue_remaining": 3}) == ("qb0", "")
    assert conflation_key({"type": "node_output", "task_id": "t1"}) is None
    assert conflation_key({"type": "task_update", "n": 1}) is None  # other shapes are never conflated
    assert conflation_key(update("t1", "running", progress={"percent": 5, "log": "step 1"})) is None
    # Key order and unusual ids do not matter any more (a regex over the JSON text required both).
    assert conflation_key({"status": "running", "type": "task_update", "task_id": 'a"b\\c'}) == ('ta"b\\c', "running")


async def test_the_hub_never_parses_what_it_serialised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task id, kind and status travel with the message: taps and conflation read no JSON text back."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads called on a published message")

    hub = EventHub(queue_size=100, conflate_after=0)
    tapped: list[Published] = []
    hub.add_tap(tapped.append)
    events = EventLog(events_per_task=16, max_tasks=4)
    hub.add_tap(events.tap)
    sub = hub.subscribe()
    monkeypatch.setattr(hub_module.json, "loads", refuse)
    monkeypatch.setattr(event_log_module.json, "loads", refuse)
    odd = 't"1'
    hub.publish({"task_id": odd, "type": "task_update", "status": "running", "progress": {"percent": 1}}, odd)
    hub.publish({"task_id": odd, "type": "task_update", "status": "running", "progress": {"percent": 2}}, odd)
    hub.publish({"task_id": odd, "node": "9", "type": "node_output"}, odd)
    hub.publish({"type": "queue_update", "backend": "b0"})
    monkeypatch.undo()
    assert [(p.kind, p.task_id) for p in tapped] == [
        ("task_update", odd),
        ("task_update", odd),
        ("node_output", odd),
        ("queue_update", None),
    ]
    logged = [(e.id, e.type) for e in events.log(odd).entries]
    assert logged == [(1, "task_update"), (2, "task_update"), (3, "node_output")]
    got = [json.loads(t) for t in sub.take()]
    assert [(m["type"], (m.get("progress") or {}).get("percent")) for m in got] == [
        ("task_update", 2),  # the first running update was replaced by the second
        ("node_output", None),
        ("queue_update", None),
    ]
    assert sub.conflated == 1


async def test_progress_updates_conflate_status_changes_and_finals_do_not() -> None:
    hub = EventHub(queue_size=100, conflate_after=0)
    sub = hub.subscribe()
    hub.publish(update("t1", "queued"), "t1")
    hub.publish(update("t1", "running", 0), "t1")
    hub.publish(update("t2", "running", 0), "t2")
    for percent in (10, 20, 30):
        hub.publish(update("t1", "running", percent), "t1")
    hub.publish({"type": "node_output", "task_id": "t1", "node": "9"}, "t1")
    hub.publish(update("t1", "running", 90), "t1")
    hub.publish(update("t1", "completed", 100, outputs={"9": ["a.png"]}), "t1")
    hub.publish(update("t2", "running", 50), "t2")
    got = [(m["type"], m.get("task_id"), m.get("status"), (m.get("progress") or {}).get("percent")) for m in texts(sub)]
    assert got == [
        ("task_update", "t1", "queued", 0.0),  # a status change is never replaced
        ("node_output", "t1", None, None),
        ("task_update", "t1", "running", 90),  # 0, 10, 20, 30 replaced by the latest; after the node output
        ("task_update", "t1", "completed", 100),  # the final update, with its outputs
        ("task_update", "t2", "running", 50),  # replaced 0, and went to the end
    ]
    assert sub.conflated == 5
    assert sub.qsize() == 0


async def test_a_listener_that_keeps_up_gets_every_progress_step() -> None:
    hub = EventHub(queue_size=100, conflate_after=4)
    sub = hub.subscribe()
    for percent in range(4):  # below the threshold: one task's burst of steps is delivered whole
        hub.publish(update("t1", "running", percent), "t1")
    assert [m["progress"]["percent"] for m in texts(sub)] == [0, 1, 2, 3]
    for percent in range(10):  # behind: from the 4th queued message on, the latest state replaces
        hub.publish(update("t1", "running", percent), "t1")
    assert [m["progress"]["percent"] for m in texts(sub)] == [0, 1, 2, 3, 9]
    assert sub.conflated == 5


async def test_conflation_keeps_publish_order() -> None:
    """A replaced update's successor goes to the end: delivery is always a subsequence of publication."""
    hub = EventHub(queue_size=100, conflate_after=0)
    sub = hub.subscribe()
    published = [
        update("t1", "running", 10),
        {"type": "node_output", "task_id": "t1", "node": "3"},
        update("t1", "running", 20),
        {"type": "queue_update", "backend": "b0", "queue_remaining": 2},
        update("t2", "running", 5),
        {"type": "queue_update", "backend": "b0", "queue_remaining": 1},
        update("t1", "running", 30),
    ]
    for message in published:
        hub.publish(message, message.get("task_id"))
    got = texts(sub)
    positions = [published.index(m) for m in got]
    assert positions == sorted(positions)
    assert got == [published[i] for i in (1, 4, 5, 6)]  # 10 and 20 replaced by 30, queue 2 by queue 1


async def test_slow_reader_keeping_up_with_conflated_state_is_not_dropped() -> None:
    """Many progress updates of a few tasks, a reader that takes a batch now and then: no drop."""
    hub = EventHub(queue_size=5, conflate_after=0)
    slow = hub.subscribe()
    seen: list[dict[str, Any]] = []
    for round_ in range(50):
        for percent in range(20):  # 20 updates per task between two reads, 3 tasks, queue of 5
            for task in ("t1", "t2", "t3"):
                hub.publish(update(task, "running", percent + round_), task)
            hub.publish({"type": "queue_update", "backend": "b0", "queue_remaining": percent}, None)
        seen += texts(slow)
    assert not slow.dropped and hub.dropped_total == 0
    assert slow.qsize() == 0
    last = {m["task_id"]: m["progress"]["percent"] for m in seen if m["type"] == "task_update"}
    assert last == {"t1": 68, "t2": 68, "t3": 68}  # the latest state always arrives
    assert len(slow._items) == 0


async def test_listener_that_stops_reading_is_still_dropped_with_conflation() -> None:
    hub = EventHub(queue_size=5, conflate_after=0)
    stopped = hub.subscribe()
    for i in range(5):  # status changes and distinct tasks cannot be conflated
        hub.publish(update(f"t{i}", "queued"), f"t{i}")
    assert not stopped.dropped
    hub.publish(update("t0", "queued"), "t0")  # same state again replaces the queued one
    assert not stopped.dropped and stopped.qsize() == 5
    hub.publish(update("t9", "queued"), "t9")
    assert stopped.dropped and hub.dropped_total == 1 and hub.listeners == 0
    assert stopped.qsize() <= 5
    assert len([m async for m in stopped]) == 5  # what was queued is delivered, then the stream ends


async def test_holes_do_not_grow_a_stopped_listeners_memory() -> None:
    hub = EventHub(queue_size=4, conflate_after=0)
    sub = hub.subscribe()
    for percent in range(10_000):
        hub.publish(update("t1", "running", percent), "t1")
    assert not sub.dropped and sub.qsize() == 1
    assert len(sub._items) <= 4 + 16 + 2
    assert [m["progress"]["percent"] for m in texts(sub)] == [9999]


async def test_batches_wake_once_per_burst_and_end_on_unsubscribe() -> None:
    hub = EventHub(queue_size=100)
    sub = hub.subscribe()
    batches: list[list[str]] = []

    async def read() -> None:
        async for batch in sub.batches():
            batches.append(batch)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    for i in range(5):
        hub.publish({"n": i})
    await asyncio.sleep(0)
    hub.publish({"n": 5})
    await asyncio.sleep(0)
    hub.unsubscribe(sub)
    await asyncio.wait_for(reader, 1)
    assert [[json.loads(t)["n"] for t in b] for b in batches] == [[0, 1, 2, 3, 4], [5]]


async def test_a_sink_gets_one_batch_per_loop_turn_and_the_task_takes_over_while_it_is_not_ready() -> None:
    hub = EventHub(queue_size=100)
    sub = hub.subscribe()
    written: list[list[int]] = []
    ready = True
    sub.attach_sink(lambda batch: written.append([json.loads(t)["n"] for t in batch]), lambda: ready)
    sent: list[list[int]] = []

    async def task() -> None:  # what routes_ws runs beside the sink
        async for batch in sub.batches():
            sent.append([json.loads(t)["n"] for t in batch])

    reader = asyncio.create_task(task())
    await asyncio.sleep(0)
    for n in range(3):
        hub.publish({"n": n})
    assert written == []  # delivered at the end of the loop turn, all at once
    await asyncio.sleep(0)
    assert written == [[0, 1, 2]] and sent == []
    ready = False  # a full socket buffer: the reading task sends (and may wait) instead
    hub.publish({"n": 3})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sent == [[3]] and written == [[0, 1, 2]]
    ready = True
    await asyncio.sleep(0)
    hub.publish({"n": 4})  # caught up: back to the sink
    await asyncio.sleep(0)
    assert written == [[0, 1, 2], [4]] and sent == [[3]]

    def gone(batch: list[str]) -> None:
        raise ConnectionResetError

    sub.attach_sink(gone, lambda: True)
    hub.publish({"n": 5})
    await asyncio.sleep(0)
    assert sub.dropped and hub.listeners == 0  # a failed write ends the stream
    await asyncio.wait_for(reader, 1)
