"""The ``EventBus`` of cluster mode: every message goes through a Redis stream that every replica reads.

A message published on any replica (its owner's WebSocket events, a status change) is appended to the
``events`` stream (and, for a task's own messages, to that task's stream under the same id, for SSE
resumption on any replica). Each replica's one reader hands every entry to its own ``EventHub``, whose
bounded, conflating queues serve its listeners: a listener on replica B hears a task of replica A in
the order it was published.

The publishing replica's own listeners hear its messages at once, not a Redis round trip later (issue 14's
added latency: ~2 ms of a task's completion went to the writer's pipeline and the stream's read on 2 cores):
the entry names its publisher, whose reader then hands it to the taps only (the SSE log, which numbers
events by their stream id). Only while that cannot go wrong: Redis answering and, for a task on a backend,
the lease surely ours (a write the fence refuses was never seen by anyone); otherwise the message waits for
the stream, and so do that task's next ones until it has been read, so that a listener never hears a
task's messages out of order.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cluster.scripts import PUBLISH
from cluster.writer import Pipe, RedisWriter
from events.hub import EventHub, Published, Subscription, conflation_key, message_kind

TASK_STREAM_TTL = 24 * 3600  # a task's own stream outlives its end by a day (SSE resumption)
# Shed first while Redis is away (live views only: a newer one follows), never status changes.
_DROPPABLE = frozenset({"preview", "queue_update", "text"})
_BEHIND_MAX = 10_000  # tasks whose messages wait for the stream (each until its last is read; refusals stay)


class ClusterBus:
    def __init__(
        self, hub: EventHub, writer: RedisWriter, prefix: str, stream_max: int, per_task: int, origin: str = ""
    ) -> None:
        self.hub = hub
        self.origin = origin  # this replica's incarnation: entries naming it were delivered here already
        self.writer = writer
        self.prefix = prefix
        self.stream = f"{prefix}events"
        self.stream_max = stream_max
        self.per_task = per_task
        # (lease key, holder) a message about this task needs: set by the cluster for the tasks driven here.
        self.fence: Callable[[str], tuple[str, str] | None] | None = None
        # Whether a message about this task (None: for everyone) can go to this replica's listeners at once.
        self.sure: Callable[[str | None], bool] = lambda task_id: True
        self._behind: OrderedDict[str, int] = OrderedDict()  # task id ("" for everyone) → its messages on the way

    # --- publishing: into Redis -----------------------------------------------------------------
    def publish(self, message: dict[str, Any], task_id: str | None = None) -> None:
        """Serialise once; the type and conflation key go with the text, so readers never decode it."""
        text = json.dumps(message, separators=(",", ":"), default=str)
        kind = message_kind(message)
        key, status = conflation_key(message) or ("", "")
        # Previews are big and only worth seeing live: not kept in the task's stream for resumption.
        keep = 0 if kind == "preview" else 1
        keys = [self.stream, f"{self.prefix}ev:{task_id or ''}"]
        fence = self.fence(task_id) if self.fence is not None and task_id is not None else None
        args: list[str | int] = [task_id or "", kind, text, self.stream_max, self.per_task, TASK_STREAM_TTL, keep]
        here = self._here(task_id or "")
        # the fence last: FENCE reads ARGV[#ARGV - 1], ARGV[#ARGV]
        args += [key, status, f"{'+' if here else '-'}{self.origin}" if self.origin else "", *(fence or ("", ""))]

        def op(pipe: Pipe) -> None:
            pipe.eval(PUBLISH, 2, *keys, *args)

        settled = None if here or not self.origin else self._unread(task_id or "")
        self.writer.submit(op, droppable=kind in _DROPPABLE, settled=settled)
        if here:
            self.hub.deliver(Published(text, task_id, kind), (key, status) if key else None, taps=False)

    def _here(self, task_id: str) -> bool:
        """Deliver to this replica's listeners now (True), or when read from the stream (counted in ``_behind``)."""
        if not self.origin:
            return False
        if task_id not in self._behind and self.writer.ok and self.sure(task_id or None):
            return True
        self._behind[task_id] = self._behind.get(task_id, 0) + 1
        if len(self._behind) > _BEHIND_MAX:
            self._behind.popitem(last=False)
        return False

    # --- delivering: from the stream reader, to this replica's listeners ----------------------------
    def deliver(self, text: str, task_id: str | None, kind: str, key: str, status: str, origin: str = "") -> None:
        """One entry of the stream, as ``publish`` wrote it (``key`` empty: not conflatable; ``origin``: its
        publisher's incarnation, after "+" when that replica gave it to its own listeners already, else "-")."""
        mine = bool(self.origin) and origin[1:] == self.origin
        if mine and origin[0] == "-":
            self._read_behind(task_id or "")
        self.hub.deliver(
            Published(text, task_id, kind), (key, status) if key else None, listeners=not mine or origin[0] != "+"
        )

    def _unread(self, task_id: str) -> Callable[[Any], None]:
        """A message that waits for the stream but will never be read there (shed, refused by the fence)."""

        def settled(result: Any) -> None:
            if result is None or isinstance(result, Exception):
                self._read_behind(task_id)

        return settled

    def _read_behind(self, task_id: str) -> None:
        waiting = self._behind.get(task_id)
        if waiting is None:
            return
        if waiting <= 1:
            del self._behind[task_id]
        else:
            self._behind[task_id] = waiting - 1

    # --- listeners: this replica's own hub --------------------------------------------------------
    def subscribe(self, task_ids: set[str] | None = None) -> Subscription:
        return self.hub.subscribe(task_ids)

    def add_task(self, sub: Subscription, task_id: str) -> None:
        self.hub.add_task(sub, task_id)

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)

    def add_tap(self, tap: Callable[[Published], None]) -> None:
        self.hub.add_tap(tap)

    @property
    def listeners(self) -> int:
        return self.hub.listeners

    @property
    def dropped_total(self) -> int:
        return self.hub.dropped_total
