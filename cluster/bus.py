"""The ``EventBus`` of cluster mode: every message goes through a Redis stream that every replica reads.

A message published on any replica (its owner's WebSocket events, a status change) is appended to the
``events`` stream (and, for a task's own messages, to that task's stream under the same id, for SSE
resumption on any replica). Each replica's one reader hands every entry to its own ``EventHub``, whose
bounded, conflating queues serve its listeners: a listener on replica B hears a task of replica A in
the order it was published. Nothing is delivered locally before it is in Redis: what a listener sees,
every other replica's listeners see too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cluster.scripts import PUBLISH
from cluster.writer import Pipe, RedisWriter
from events.hub import EventHub, Published, Subscription, conflation_key, message_kind

TASK_STREAM_TTL = 24 * 3600  # a task's own stream outlives its end by a day (SSE resumption)
# Shed first while Redis is away (live views only: a newer one follows), never status changes.
_DROPPABLE = frozenset({"preview", "queue_update", "text"})


class ClusterBus:
    def __init__(self, hub: EventHub, writer: RedisWriter, prefix: str, stream_max: int, per_task: int) -> None:
        self.hub = hub
        self.writer = writer
        self.prefix = prefix
        self.stream = f"{prefix}events"
        self.stream_max = stream_max
        self.per_task = per_task
        # (lease key, holder) a message about this task needs: set by the cluster for the tasks driven here.
        self.fence: Callable[[str], tuple[str, str] | None] | None = None

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
        args += [key, status, *(fence or ("", ""))]  # the fence last: FENCE reads ARGV[#ARGV - 1], ARGV[#ARGV]

        def op(pipe: Pipe) -> None:
            pipe.eval(PUBLISH, 2, *keys, *args)

        self.writer.submit(op, droppable=kind in _DROPPABLE)

    # --- delivering: from the stream reader, to this replica's listeners ----------------------------
    def deliver(self, text: str, task_id: str | None, kind: str, key: str, status: str) -> None:
        """One entry of the stream, as ``publish`` wrote it (``key`` empty: not conflatable)."""
        self.hub.deliver(Published(text, task_id, kind), (key, status) if key else None)

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
