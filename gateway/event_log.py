"""Per-task Server-Sent Events, resumable with ``Last-Event-ID``.

Every message the hub publishes for a task is numbered here (per task, 1, 2, 3...) and kept in a small
bounded log, so a client that reconnects with ``Last-Event-ID: n`` gets exactly the events after n.
SSE readers follow the log itself rather than a hub subscription: that way the live stream and the
replay carry the same ids. Payloads are the WebSocket's own strings; the SSE ``event:`` is their
``type``. Once a task is final its log is compacted to the final event, which is all a late client
needs. Previews are kept (a few) only while the task runs, and sent only to ``?previews=true``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from core.task import FINAL_STATUSES, Task
from events.hub import Published

PREVIEWS_KEPT = 4


@dataclass(slots=True)
class Entry:
    id: int
    type: str
    text: str


class TaskLog:
    """The numbered events of one task; ``changed`` wakes every reader on each new event."""

    def __init__(self, size: int) -> None:
        self.entries: deque[Entry] = deque(maxlen=size)
        self.last_id = 0
        self.changed = asyncio.Event()

    def append(self, kind: str, text: str, entry_id: int | None = None) -> None:
        """``entry_id``: the id the event has everywhere (cluster mode: from the Redis stream); default: the next."""
        if entry_id is not None and entry_id <= self.last_id:
            return  # seen already
        self.last_id = entry_id if entry_id is not None else self.last_id + 1
        if kind == "preview" and sum(1 for e in self.entries if e.type == "preview") >= PREVIEWS_KEPT:
            oldest = next(e for e in self.entries if e.type == "preview")
            self.entries.remove(oldest)
        self.entries.append(Entry(self.last_id, kind, text))
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def merge(self, found: Iterable[tuple[int, str, str]]) -> None:
        """(id, type, text) of events this log may have missed (cluster mode: a task's Redis stream, read by
        a replica that joined late), merged in id order; an event known already is kept as it is."""
        merged = {e.id: e for e in self.entries}
        for entry_id, kind, text in found:
            merged.setdefault(entry_id, Entry(entry_id, kind, text))
        ordered = [merged[k] for k in sorted(merged)]
        self.entries.clear()
        self.entries.extend(ordered[-(self.entries.maxlen or len(ordered)) :])
        if ordered:
            self.last_id = max(self.last_id, ordered[-1].id)

    def after(self, last_id: int) -> list[Entry]:
        return [e for e in self.entries if e.id > last_id]

    def compact(self) -> None:
        """Keep only the final task_update once the task has ended."""
        final = next((e for e in reversed(self.entries) if e.type == "task_update"), None)
        self.entries.clear()
        if final is not None:
            self.entries.append(final)


class EventLog:
    """Logs of the most recent tasks (bounded in tasks and in events per task).

    A finished task's log shrinks to the id of its final event (~0.1 kB instead of ~2.5 kB with its
    deque and Event): the final event's text is what ``final_text`` rebuilds from the task.
    """

    def __init__(self, events_per_task: int, max_tasks: int) -> None:
        self.events_per_task = events_per_task
        self.max_tasks = max_tasks
        self._logs: OrderedDict[str, TaskLog] = OrderedDict()
        self._final_ids: OrderedDict[str, int] = OrderedDict()  # finished task → id of its final event
        self.sse_listeners = 0
        # Cluster mode: the id of the event being tapped, the same on every replica (else numbered here).
        self.current_id: Callable[[], int | None] | None = None

    def tap(self, published: Published) -> None:
        """Hub tap: number every message of a task (its type comes with it, never parsed back)."""
        if published.task_id is None:
            return  # queue and backend updates belong to no task
        kind = published.kind
        task_id = published.task_id
        if self.current_id is None:
            self.log(task_id).append(kind, published.text)
            return
        # Cluster mode: the final status is known before the final update comes back through Redis, so the
        # log is compacted once that update is in it (not when the task observer hears of the end).
        log = self.log(task_id)
        log.append(kind, published.text, self.current_id())
        if kind == "task_update" and _ends(log):
            asyncio.get_running_loop().call_soon(self._compact, task_id)

    def log(self, task_id: str) -> TaskLog:
        found = self._logs.get(task_id)
        if found is None:
            final_id = self._final_ids.get(task_id)
            if final_id is not None:  # a finished task: a throwaway log that only knows its last id
                found = TaskLog(1)
                found.last_id = final_id
                return found
            found = self._logs[task_id] = TaskLog(self.events_per_task)
            while len(self._logs) > self.max_tasks:
                self._logs.popitem(last=False)
        return found

    def on_task(self, task: Task, change: str) -> None:
        """Task observer: compact a finished task's log right after its final event is published."""
        if change == "finished" and self.current_id is None:
            asyncio.get_running_loop().call_soon(self._compact, task.task_id)

    def _compact(self, task_id: str) -> None:
        found = self._logs.pop(task_id, None)
        if found is None:
            return
        if not found.entries or found.entries[-1].type != "task_update":
            found.compact()  # the final update is not the last event: keep a log, as it is
            self._logs[task_id] = found
            return
        self._final_ids[task_id] = found.last_id
        while len(self._final_ids) > self.max_tasks:
            self._final_ids.popitem(last=False)


def _ends(log: TaskLog) -> bool:
    """Whether the log holds the task's final update."""
    last = next((e for e in reversed(log.entries) if e.type == "task_update"), None)
    return last is not None and json.loads(last.text).get("status") in FINAL_STATUSES


def sse(entry_id: int | None, kind: str, text: str) -> str:
    head = f"id: {entry_id}\n" if entry_id is not None else ""
    return f"{head}event: {kind}\ndata: {text}\n\n"


def final_text(task: Task) -> str:
    """The final task_update as the manager publishes it, for tasks whose log is gone."""
    message = {"type": "task_update", **task.summary(), "outputs": task.outputs, "execution_time": task.execution_time}
    return json.dumps(message, separators=(",", ":"), default=str)


async def stream_task(
    events: EventLog, log: TaskLog, task: Task, last_id: int | None, previews: bool, keepalive: float
) -> AsyncIterator[str]:
    """``log``: the task's log as the route found it, when the request came. Looked up again when the stream
    starts, a task that ended in between had its log compacted away already: the lookup gave an empty log, and
    the stream ended after a keepalive without the final event. ``last_id``: the last event the client has, at
    most that log's last id (the route clamps an id from the future: a new event must not hide behind it)."""
    events.sse_listeners += 1
    try:
        yield "retry: 2000\n\n"
        if last_id is None:
            # A fresh client starts from where the task stands now (what a late WebSocket subscriber gets).
            if task.status.final:
                final = next((e for e in reversed(log.entries) if e.type == "task_update"), None)
                if final is None:
                    final = Entry(log.last_id, "task_update", final_text(task))
                yield sse(final.id, final.type, final.text)
                return
            snapshot = json.dumps({"type": "task_update", **task.summary()}, separators=(",", ":"), default=str)
            yield sse(log.last_id, "task_update", snapshot)
            last_id = log.last_id
        waited_final = False
        while True:
            for entry in log.after(last_id):
                last_id = entry.id
                if entry.type == "preview" and not previews:
                    continue
                yield sse(entry.id, entry.type, entry.text)
            if task.status.final and (_ends(log) or waited_final):
                return  # (cluster mode: the final update may follow the final status by a few ms)
            waited_final = task.status.final
            changed = log.changed
            try:
                await asyncio.wait_for(changed.wait(), keepalive)
            except TimeoutError:
                yield ": keepalive\n\n"
    finally:
        events.sse_listeners -= 1
