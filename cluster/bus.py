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
from cluster.writer import RedisWriter
from events.hub import EventHub, Subscription

TASK_STREAM_TTL = 24 * 3600  # a task's own stream outlives its end by a day (SSE resumption)
_DROPPABLE = ('{"type":"preview"', '{"type":"queue_update"', '{"type":"text"')


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
        self.publish_text(json.dumps(message, separators=(",", ":"), default=str), task_id)

    def publish_text(self, text: str, task_id: str | None = None) -> None:
        head = text[:40]
        kind = head[9 : head.find('"', 9)] if head.startswith('{"type":"') else "message"
        # Previews are big and only worth seeing live: not kept in the task's stream for resumption.
        keep = 0 if kind == "preview" else 1
        keys = [self.stream, f"{self.prefix}ev:{task_id or ''}"]
        fence = self.fence(task_id) if self.fence is not None and task_id is not None else None
        args = [task_id or "", kind, text, self.stream_max, self.per_task, TASK_STREAM_TTL, keep, *(fence or ("", ""))]

        def op(pipe: Any) -> None:
            pipe.eval(PUBLISH, 2, *keys, *args)

        self.writer.submit(op, droppable=head.startswith(_DROPPABLE))

    # --- delivering: from the stream reader, to this replica's listeners ----------------------------
    def deliver(self, text: str, task_id: str | None) -> None:
        self.hub.publish_text(text, task_id)

    # --- listeners: this replica's own hub --------------------------------------------------------
    def subscribe(self, task_ids: set[str] | None = None) -> Subscription:
        return self.hub.subscribe(task_ids)

    def add_task(self, sub: Subscription, task_id: str) -> None:
        self.hub.add_task(sub, task_id)

    def unsubscribe(self, sub: Subscription) -> None:
        self.hub.unsubscribe(sub)

    def add_tap(self, tap: Callable[[str, str | None], None]) -> None:
        self.hub.add_tap(tap)

    @property
    def listeners(self) -> int:
        return self.hub.listeners

    @property
    def dropped_total(self) -> int:
        return self.hub.dropped_total
