"""Fan-out of task updates to every listener (WebSocket, SSE), each behind a bounded queue.

An event is serialised once and the same string is queued for every interested listener. A listener
that keeps up gets every message. One that falls behind (``conflate_after`` messages or more queued
for it) gets conflated state: a non-final ``task_update`` for a task whose previous ``task_update``
(same status) is still queued for that listener replaces it, and so does a ``queue_update`` of a
backend whose previous one is still queued. Never conflated: status changes, final updates, updates
carrying a progress ``log`` line (events, not state), and every other message. The replaced message is
removed and the new one goes to the end, so what a listener receives is always a subsequence of what
was published (the order per task is kept). A listener that keeps up with the conflated state is never
dropped, however slowly it reads; one whose queue still fills up has stopped reading: it is dropped
(its stream ends after what is queued) rather than allowed to grow memory or slow everyone else.

Senders take everything queued in one go (``Subscription.batches``): one wake-up per listener per
burst of messages instead of one per message. A subscription may also have a synchronous sink
(``attach_sink``): then the hub itself hands it everything queued, once per event-loop turn, for all
such listeners in one callback, with no task wake-up at all; the listener's task takes over only while
its sink is not ready (a full socket buffer), and gives back once it has caught up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.task import FINAL_STATUSES  # TaskStatus is a str Enum: "completed" in FINAL_STATUSES

log = logging.getLogger("comfygate.hub")

Key = str  # "t" + task_id or "q" + backend: a new str per publish, hashed once for every listener


@dataclass(frozen=True, slots=True)
class Published:
    """One published message as taps see it: its serialised text, its task (None: every listener), its type."""

    text: str
    task_id: str | None
    kind: str


def message_kind(message: Mapping[str, Any]) -> str:
    """The message's ``type`` (the SSE event name), ``message`` when it has none."""
    kind = message.get("type")
    return kind if isinstance(kind, str) and kind else "message"


def conflation_key(message: Mapping[str, Any]) -> tuple[Key, str] | None:
    """(key, status) for a message a newer one of the same key may replace; None if it must be kept.

    Read from the message itself before it is serialised: a non-final ``task_update`` of a task (by
    task id and status) or a ``queue_update`` of a backend.
    """
    kind = message.get("type")
    if kind == "task_update":
        task_id, status = message.get("task_id"), message.get("status")
        if not isinstance(task_id, str) or not isinstance(status, str) or status in FINAL_STATUSES:
            return None
        progress = message.get("progress")
        if "log" in message or (isinstance(progress, Mapping) and "log" in progress):
            return None  # a progress log line (a ViewComfy backend's) is an event of its own, not state
        return "t" + task_id, status
    if kind == "queue_update":
        backend = message.get("backend")
        return ("q" + backend, "") if isinstance(backend, str) else None
    return None


class _Entry:
    """A conflatable message: one per publish, shared by every listener's queue (hashed by identity)."""

    __slots__ = ("text", "key", "status")

    def __init__(self, text: str, key: Key, status: str) -> None:
        self.text = text
        self.key = key
        self.status = status


class Subscription:
    def __init__(self, hub: EventHub, task_ids: set[str] | None, maxsize: int, conflate_after: int = 0) -> None:
        self.hub = hub
        self.task_ids = task_ids  # None: everything
        self.maxsize = maxsize
        self.conflate_after = conflate_after  # conflate only while at least this many messages are queued
        self.dropped = False  # no more messages will be queued (dropped, closed or unsubscribed)
        self.conflated = 0  # messages replaced by a newer one before being sent
        self._items: deque[str | _Entry] = deque()  # in publish order; replaced entries stay, in _dead
        self._live = 0  # queued messages, replaced ones not counted
        self._latest: dict[Key, _Entry] = {}  # the queued conflatable message of each key
        self._dead: set[_Entry] = set()  # queued entries a newer one replaced
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # the reader sees the end of the stream once the queue is empty
        self._sink: Callable[[list[str]], None] | None = None
        self._sink_ready: Callable[[], bool] | None = None
        self._deferred = False  # the sink was not ready: the reading task delivers until it catches up
        self._scheduled = False  # in the hub's list for its next flush

    def qsize(self) -> int:
        return self._live

    def offer(self, text: str, entry: _Entry | None = None) -> None:
        if self.dropped:
            return
        if entry is not None and self._live >= self.conflate_after:  # behind: the latest state wins
            old = self._latest.get(entry.key)
            if old is not None and old.status == entry.status:
                self._dead.add(old)  # replaced: the newer state goes to the end, after what it followed
                self.conflated += 1
                self._live -= 1
            self._latest[entry.key] = entry
            self._items.append(entry)
            if len(self._dead) > self.maxsize + 16:
                self._compact()
        else:  # keeping up (or not conflatable): no bookkeeping beyond the queue itself
            self._items.append(text)
        self._live += 1
        if self._live > self.maxsize:
            self.drop()
            return
        if self._sink is None or self._deferred:
            self._wake()
        elif not self._scheduled:
            self._scheduled = True
            self.hub._schedule(self)

    def attach_sink(self, sink: Callable[[list[str]], None], ready: Callable[[], bool]) -> None:
        """Deliver synchronously from now on: ``sink(batch)`` once per loop turn while ``ready()``."""
        self._sink, self._sink_ready = sink, ready
        if self._live:
            self._wake()  # what was queued before goes out through the reading task

    def _flush(self) -> None:
        """Called by the hub, once per loop turn in which something was queued."""
        self._scheduled = False
        if not self._live or self._deferred or self._sink is None:
            return
        if self._sink_ready is not None and not self._sink_ready():
            self._deferred = True
            self._wake()
            return
        try:
            self._sink(self.take())
        except Exception:  # the connection is gone: end the stream; the reading task cleans up
            self.close()

    def _compact(self) -> None:
        dead = self._dead
        self._items = deque(i for i in self._items if type(i) is str or i not in dead)
        dead.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> list[str]:
        """Everything queued, oldest first (empties the queue)."""
        items = self._items
        if not items:
            return []
        self._items = deque()
        self._latest.clear()
        self._live = 0
        dead = self._dead
        out: list[str] = []
        append = out.append
        for item in items:
            if isinstance(item, str):  # exact str: CPython's fast path, as cheap as type() is
                append(item)
            elif item not in dead:
                append(item.text)
        dead.clear()
        return out

    def drop(self) -> None:
        """The listener stopped reading: end its stream after what is already queued."""
        if not self.dropped:
            self.close()
            self.hub.dropped_total += 1
            log.warning("dropped a listener whose queue of %d messages was full", self.maxsize)

    def close(self) -> None:
        """Stop delivering; the reader sees the end of the stream after what is already queued."""
        self.dropped = True
        self._ended = True
        self.hub._remove(self)
        while self._live > self.maxsize:  # a dropped queue keeps its bound
            item = self._items.popleft()
            if type(item) is str or item not in self._dead:
                self._live -= 1
        self._wake()

    async def batches(self) -> AsyncIterator[list[str]]:
        """Everything queued since the last batch, as soon as there is something; ends when closed."""
        loop = asyncio.get_running_loop()
        while True:
            batch = self.take()
            if batch:
                self._deferred = True  # the sink must not overtake a batch this task is still sending
                yield batch
                continue
            if self._ended:
                return
            self._deferred = False  # caught up: the sink, if any, delivers again
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    async def __aiter__(self) -> AsyncIterator[str]:
        async for batch in self.batches():
            for text in batch:
                yield text


class EventHub:
    def __init__(self, queue_size: int = 1000, conflate_after: int = 32) -> None:
        self.queue_size = queue_size
        # A listener with fewer messages queued gets every progress step (one task's whole burst of
        # updates stays below it); past it, it is behind, and gets the latest state instead.
        self.conflate_after = conflate_after
        # Dicts as ordered sets; ``_everyone`` (all unfiltered and filtered subscriptions, for broadcasts)
        # and ``_unfiltered`` are copied into tuples only when they change, not on every publish.
        self._all: dict[Subscription, None] = {}
        self._filtered: dict[Subscription, None] = {}
        self._by_task: dict[str, dict[Subscription, None]] = {}
        self._all_tuple: tuple[Subscription, ...] | None = ()
        self._everyone_tuple: tuple[Subscription, ...] | None = ()
        self.dropped_total = 0
        self._dirty: list[Subscription] = []  # subscriptions with a sink and something queued
        # Taps see every message synchronously, in order, before any listener: the SSE event log
        # (task_events) numbers them there so a resumed stream replays exactly what it missed.
        self.taps: list[Callable[[Published], None]] = []

    def add_tap(self, tap: Callable[[Published], None]) -> None:
        self.taps.append(tap)

    @property
    def listeners(self) -> int:
        return len(self._all) + len(self._filtered)

    def _changed(self) -> None:
        self._all_tuple = self._everyone_tuple = None

    def subscribe(self, task_ids: set[str] | None = None) -> Subscription:
        sub = Subscription(self, set(task_ids) if task_ids else None, self.queue_size, self.conflate_after)
        if sub.task_ids is None:
            self._all[sub] = None
        else:
            self._filtered[sub] = None
            for task_id in sub.task_ids:
                self._by_task.setdefault(task_id, {})[sub] = None
        self._changed()
        return sub

    def add_task(self, sub: Subscription, task_id: str) -> None:
        """Widen a task-filtered subscription by one task."""
        if sub.task_ids is None or sub.dropped:
            return
        sub.task_ids.add(task_id)
        self._by_task.setdefault(task_id, {})[sub] = None

    def unsubscribe(self, sub: Subscription) -> None:
        sub.dropped = True
        sub._ended = True
        self._remove(sub)
        sub._wake()

    def _remove(self, sub: Subscription) -> None:
        if sub.task_ids is None:
            if self._all.pop(sub, 0) is None:
                self._changed()
            return
        if self._filtered.pop(sub, 0) is None:
            self._changed()
        for task_id in sub.task_ids:
            subs = self._by_task.get(task_id)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self._by_task[task_id]

    def _schedule(self, sub: Subscription) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush)
        self._dirty.append(sub)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sub in dirty:
            sub._flush()

    def publish(self, message: dict[str, Any], task_id: str | None = None) -> None:
        """Serialise once, queue everywhere. ``task_id=None`` means a message for every listener.

        The type and the conflation key are read from the dict before it is serialised, never parsed back.
        """
        text = json.dumps(message, separators=(",", ":"), default=str)
        self.deliver(Published(text, task_id, message_kind(message)), conflation_key(message))

    def deliver(self, published: Published, found: tuple[Key, str] | None) -> None:
        """Queue a message serialised elsewhere, with what ``publish`` reads from its dict: its envelope and
        its ``conflation_key`` (cluster mode: read back from the Redis stream, where they travel with it)."""
        for tap in self.taps:
            try:
                tap(published)
            except Exception:
                log.exception("event hub tap %r failed", tap)
        text, task_id = published.text, published.task_id
        entry = _Entry(text, *found) if found is not None else None
        # Tuples: offering can drop a subscription, which edits the dicts.
        if task_id is None:
            targets = self._everyone_tuple
            if targets is None:
                targets = self._everyone_tuple = (*self._all, *self._filtered)
        else:
            targets = self._all_tuple
            if targets is None:
                targets = self._all_tuple = tuple(self._all)
            subs = self._by_task.get(task_id)
            if subs:
                targets = (*targets, *subs)
        for sub in targets:
            sub.offer(text, entry)
