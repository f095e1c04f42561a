"""Telling the world about tasks: observers (store, webhooks, metrics) and listeners (the event bus).

``task_update`` is sent only when something a listener sees has changed: ComfyUI sends 3-4 events per
node (execution_cached, progress_state...) that change nothing a listener shows, each of which would
otherwise be fanned out to every listener.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from core.task import Task
from events.bus import EventBus

log = logging.getLogger("comfygate.tasks")

# An observer learns of every task change: "created" (accepted: queued at a backend, or pending in
# ComfyGate's own queue), "status" (a new status that is not final, e.g. pending → queued → running)
# and "finished" (final). Durable storage, webhooks and metrics hang off this.
Observer = Callable[[Task, str], None]


class Describable(Protocol):
    name: str

    def describe(self) -> dict[str, Any]: ...


class Updates:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.observers: list[Observer] = []
        self._last_update: dict[str, tuple[Any, ...]] = {}  # task id → what it last showed, unfinished only
        self._last_queue: dict[str, int] = {}  # backend name → last queue_remaining published

    def notify(self, task: Task, change: str) -> None:
        for observer in self.observers:
            try:
                observer(task, change)
            except Exception:
                log.exception("task observer %r failed on %s", observer, change)

    def task(self, task: Task, **more: Any) -> None:
        """A ``task_update`` with the task's summary (and ``more``: the final one carries outputs)."""
        if task.status.final:
            self._last_update.pop(task.task_id, None)
        elif not more:
            # Everything summary() shows; error by identity (it is replaced, never edited in place).
            seen = (task.status, task.backend, task.prompt_id, tuple(task.progress.items()), id(task.error))
            if self._last_update.get(task.task_id) == seen:
                return
            self._last_update[task.task_id] = seen
        self.bus.publish({"type": "task_update", **task.summary(), **more}, task.task_id)

    def message(self, message: dict[str, Any], task_id: str | None = None) -> None:
        """Another kind of message (node_output, preview, text), for one task's listeners or for all."""
        self.bus.publish(message, task_id)

    def backend(self, backend: Describable) -> None:
        self.bus.publish({"type": "backend_update", **backend.describe()})

    def queue(self, backend: str, remaining: int) -> None:
        if self._last_queue.get(backend) != remaining:
            self._last_queue[backend] = remaining
            self.bus.publish({"type": "queue_update", "backend": backend, "queue_remaining": remaining})

    def forget_queue(self, backend: str) -> None:
        """The next queue_update of ``backend`` goes out whatever its value (it reconnected)."""
        self._last_queue.pop(backend, None)
