"""``GET /api/v2/jobs/{id}/events``: the job's live state as Server-Sent Events.

Each stream is a hub subscription to one task (the hub's bounded, conflating per-listener queue: a
slow reader costs a bounded amount of memory and never slows anyone else). Frames are built from the
task itself, not from the message that woke the stream, so a conflated or lost message loses nothing:
the next frame is the whole current state. Order: the snapshot on connect (``status``, ``progress``,
the latest ``preview``), then changes; at the end every ``output`` frame and only then the terminal
``status`` (the SDK stops reading at the terminal status). ``progress`` and ``preview`` are throttled to
~2/s; a comment line keeps the connection alive at most every 30 s (the SDK gives up after 45 s of
silence). How many streams may be open at once is ``v2_max_event_streams``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from api.v2 import view
from core.task import Task
from events.hub import Published

THROTTLE = 0.5
MAX_KEEPALIVE = 30.0
KEEPALIVE = b": keepalive\n\n"


def frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def preview_payload(message: dict[str, Any]) -> dict[str, Any] | None:
    """A hub ``preview`` message (a data URL) as the contract's PreviewEvent."""
    image = message.get("image")
    if not isinstance(image, str) or not image.startswith("data:"):
        return None
    header, _, payload = image.partition(",")
    return {
        "node_id": str(message.get("node") or ""),
        "content_type": header[5:].split(";", 1)[0] or "image/jpeg",
        "data_base64": payload,
    }


class Previews:
    """The most recent preview of each unfinished task (a hub tap), pushed to a stream on connect."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def tap(self, published: Published) -> None:
        task_id = published.task_id
        if task_id is None or published.kind != "preview":
            return
        payload = preview_payload(json.loads(published.text))
        if payload is None:
            return
        self._latest[task_id] = payload
        self._latest.move_to_end(task_id)
        while len(self._latest) > self.limit:
            self._latest.popitem(last=False)

    def forget(self, task: Task, change: str) -> None:
        if change == "finished":
            self._latest.pop(task.task_id, None)

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self._latest.get(task_id)


class JobStream:
    """One client's stream of one task. ``frames`` yields SSE bytes until the terminal status."""

    def __init__(
        self,
        services: Any,
        task_id: str,
        base: str,
        *,
        retention: float,
        keepalive: float,
        previews: Previews,
        queue_position: Any,
    ) -> None:
        self.services = services
        self.task_id = task_id
        self.base = base
        self.retention = retention
        self.keepalive = min(keepalive, MAX_KEEPALIVE)
        self.previews = previews
        self.queue_position = queue_position  # (task) -> int | None
        self._sent_status: tuple[str, int | None] | None = None
        self._sent_progress: dict[str, Any] | None = None
        self._progress_dirty = False
        self._progress_due = 0.0
        self._preview_due = 0.0
        self._pending_preview: dict[str, Any] | None = None

    def _task(self) -> Task | None:
        return self.services.store.get(self.task_id)

    def _status_frame(self, task: Task, force: bool = False) -> bytes | None:
        status = view.status_of(task)
        position = self.queue_position(task) if status == "queued" else None
        if not force and self._sent_status == (status, position):
            return None
        self._sent_status = (status, position)
        body: dict[str, Any] = {"status": status}
        if position is not None:
            body["queue_position"] = position
        return frame("status", body)

    def _progress_frame(self, task: Task, now: float) -> bytes | None:
        progress = view.progress_of(task)
        if progress is None or progress == self._sent_progress:
            self._progress_dirty = False
            return None
        if now < self._progress_due:
            self._progress_dirty = True  # sent when the throttle allows, even if nothing else happens
            return None
        self._progress_dirty = False
        self._sent_progress = progress
        self._progress_due = now + THROTTLE
        return frame("progress", progress)

    def _ending(self, task: Task) -> list[bytes]:
        """Every output, then the terminal status: the order the SDK needs to see the outputs."""
        expires = view.iso((task.finished_at or task.created_at) + self.retention)
        frames = [frame("output", out) for out in view.outputs_of(task, self.base, expires)]
        terminal = self._status_frame(task, force=True)
        assert terminal is not None
        frames.append(terminal)
        return frames

    async def frames(self) -> AsyncIterator[bytes]:
        hub = self.services.hub
        sub = hub.subscribe({self.task_id})  # before reading the task: nothing can slip in between
        try:
            task = self._task()
            if task is None:
                return
            if task.status.final:  # a late client: the outputs, then the terminal status, and the end
                for chunk in self._ending(task):
                    yield chunk
                return
            now = time.monotonic()
            yield self._status_frame(task, force=True) or b""
            progress = self._progress_frame(task, now)
            if progress:
                yield progress
            preview = self.previews.get(self.task_id)
            if preview is not None:
                self._preview_due = now + THROTTLE
                yield frame("preview", preview)
            async for chunk in self._live(sub):
                yield chunk
        finally:
            hub.unsubscribe(sub)

    def _wait(self, now: float, last_sent: float) -> float:
        """Seconds until something is due: a keepalive, or a throttled progress or preview."""
        wait = self.keepalive - (now - last_sent)
        if self._pending_preview is not None:
            wait = min(wait, self._preview_due - now + 0.01)
        if self._progress_dirty:
            wait = min(wait, self._progress_due - now + 0.01)
        return max(wait, 0.0)

    def _changes(self, task: Task, message: str | None, now: float) -> list[bytes]:
        """The frames for what changed since the last ones (status, progress, preview), throttled."""
        if message is not None and message.startswith('{"type":"preview"'):
            self._pending_preview = preview_payload(json.loads(message))
        out = [f for f in (self._status_frame(task), self._progress_frame(task, now)) if f]
        if self._pending_preview is not None and now >= self._preview_due:
            out.append(frame("preview", self._pending_preview))
            self._pending_preview = None
            self._preview_due = now + THROTTLE
        return out

    async def _live(self, sub: Any) -> AsyncIterator[bytes]:
        wakeups = Wakeups(sub)
        last_sent = time.monotonic()
        try:
            while True:
                message = await wakeups.next(self._wait(time.monotonic(), last_sent))
                task = self._task()
                if task is None:
                    return
                if task.status.final:
                    for chunk in self._ending(task):
                        yield chunk
                    return
                now = time.monotonic()
                out = self._changes(task, message, now)
                if not out and now - last_sent >= self.keepalive - 0.01:
                    out.append(KEEPALIVE)
                for chunk in out:
                    yield chunk
                if out:
                    last_sent = now
        finally:
            wakeups.close()


class Wakeups:
    """A stream's hub subscription read with a timeout, through one pending read (a timeout never
    loses a message). Once the hub has dropped the listener (it fell behind), it paces a poll instead."""

    def __init__(self, sub: Any) -> None:
        self._messages = aiter(sub)
        self._pending: asyncio.Future[str] | None = None
        self._dropped = False

    async def next(self, timeout: float) -> str | None:
        """The next message, or None after ``timeout`` s (or at a poll's pace once dropped)."""
        if self._dropped:
            await asyncio.sleep(min(max(timeout, 0.05), 0.25))
            return None
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._messages))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        try:
            return pending.result()
        except StopAsyncIteration:
            self._dropped = True
            return None

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
