"""The per-task SSE log and stream (gateway/event_log.py), in process: the order of a task's end and a stream."""

from __future__ import annotations

import asyncio
import json

from core.task import Task, TaskStatus
from events.hub import Published
from gateway.event_log import EventLog, TaskLog, stream_task


def _publish(events: EventLog, task: Task) -> None:
    text = json.dumps({"type": "task_update", **task.summary()})
    events.tap(Published(text, task.task_id, "task_update"))


async def _stream(events: EventLog, log: TaskLog, task: Task, last_id: int | None) -> list[str]:
    return [chunk async for chunk in stream_task(events, log, task, last_id, previews=False, keepalive=0.3)]


async def test_a_stream_that_starts_after_its_task_ended_and_was_compacted_still_gets_the_end() -> None:
    """The route looks the log up while the task runs; the task ends and its log is compacted away before the
    stream's first step (a StreamingResponse starts its generator later): the stream still sends the final
    update and ends, instead of a keepalive and nothing."""
    events = EventLog(256, 100)
    task = Task(task_id="t1", workflow={}, prompt_id="p1", status=TaskStatus.RUNNING)
    _publish(events, task)
    log = events.log(task.task_id)  # what the route found, Last-Event-ID 0
    task.status = TaskStatus.COMPLETED
    _publish(events, task)
    events.on_task(task, "finished")
    await asyncio.sleep(0)  # the compaction on_task schedules
    assert events.log(task.task_id) is not log  # gone from the logs: a lookup now gives a log without entries
    chunks = await _stream(events, log, task, 0)
    assert not any(chunk.startswith(":") for chunk in chunks), chunks  # no keepalive: it did not wait
    finals = [json.loads(c.split("data: ", 1)[1]) for c in chunks if c.startswith("id:")]
    assert [f["status"] for f in finals] == ["running", "completed"]


async def test_a_stream_of_a_running_task_follows_it_to_the_end() -> None:
    events = EventLog(256, 100)
    task = Task(task_id="t2", workflow={}, prompt_id="p2", status=TaskStatus.RUNNING)
    _publish(events, task)
    log = events.log(task.task_id)
    streaming = asyncio.create_task(_stream(events, log, task, None))
    await asyncio.sleep(0.05)
    task.status = TaskStatus.FAILED
    _publish(events, task)
    chunks = await asyncio.wait_for(streaming, 5)
    assert chunks[0] == "retry: 2000\n\n" and '"status":"failed"' in chunks[-1].replace(" ", "")
