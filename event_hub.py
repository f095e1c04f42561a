"""Fan-out of task updates to every listener (WebSocket, SSE), each behind a bounded queue.

An event is serialised once and the same string is queued for every interested listener. A listener
whose queue is full has stopped reading: it is dropped (its queue closed) rather than allowed to
grow memory or slow everyone else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("comfygate.hub")

_CLOSED = None  # sentinel put into a dropped subscriber's queue


class Subscription:
    def __init__(self, hub: EventHub, task_ids: set[str] | None, maxsize: int) -> None:
        self.hub = hub
        self.task_ids = task_ids  # None: everything
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)
        self.dropped = False

    def wants(self, task_id: str | None) -> bool:
        return self.task_ids is None or task_id is None or task_id in self.task_ids

    def offer(self, message: str) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.drop()

    def drop(self) -> None:
        """The listener stopped reading: end its stream after what is already queued."""
        if not self.dropped:
            self.close()
            self.hub.dropped_total += 1
            log.warning("dropped a listener whose queue of %d messages was full", self.queue.maxsize)

    def close(self) -> None:
        """Stop delivering; the reader sees the end of the stream after what is already queued."""
        self.dropped = True
        self.hub._remove(self)
        while True:  # make room for the end marker
            try:
                self.queue.put_nowait(_CLOSED)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            message = await self.queue.get()
            if message is _CLOSED:
                return
            yield message


class EventHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._all: set[Subscription] = set()
        self._by_task: dict[str, set[Subscription]] = {}
        self.dropped_total = 0
        # Taps see every message synchronously, in order, before any listener: the SSE event log
        # (task_events) numbers them there so a resumed stream replays exactly what it missed.
        self.taps: list[Callable[[str, str | None], None]] = []

    def add_tap(self, tap: Callable[[str, str | None], None]) -> None:
        self.taps.append(tap)

    @property
    def listeners(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_task.values())

    def subscribe(self, task_ids: set[str] | None = None) -> Subscription:
        sub = Subscription(self, set(task_ids) if task_ids else None, self.queue_size)
        if sub.task_ids is None:
            self._all.add(sub)
        else:
            for task_id in sub.task_ids:
                self._by_task.setdefault(task_id, set()).add(sub)
        return sub

    def add_task(self, sub: Subscription, task_id: str) -> None:
        """Widen a task-filtered subscription by one task."""
        if sub.task_ids is None or sub.dropped:
            return
        sub.task_ids.add(task_id)
        self._by_task.setdefault(task_id, set()).add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        sub.dropped = True
        self._remove(sub)

    def _remove(self, sub: Subscription) -> None:
        if sub.task_ids is None:
            self._all.discard(sub)
        else:
            for task_id in sub.task_ids:
                subs = self._by_task.get(task_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_task[task_id]

    def publish(self, message: dict[str, Any], task_id: str | None = None) -> None:
        """Serialise once, queue everywhere. ``task_id=None`` means a message for every listener."""
        text = json.dumps(message, separators=(",", ":"), default=str)
        self.publish_text(text, task_id)

    def publish_text(self, text: str, task_id: str | None = None) -> None:
        for tap in self.taps:
            try:
                tap(text, task_id)
            except Exception:
                log.exception("event hub tap %r failed", tap)
        for sub in tuple(self._all):
            sub.offer(text)
        if task_id is None:
            targets: set[Subscription] = set()
            for subs in self._by_task.values():
                targets |= subs
        else:
            targets = self._by_task.get(task_id, set())
        for sub in tuple(targets):
            sub.offer(text)
