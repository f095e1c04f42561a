"""The ``EventBus`` seam: how task updates reach listeners. Today ``EventHub`` (in-process, bounded and
conflating queues); a bus shared by several replicas keeps an ``EventHub`` for its own listeners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from events.hub import Published, Subscription


class EventBus(Protocol):
    def publish(self, message: dict[str, Any], task_id: str | None = None) -> None:
        """Send to every listener of ``task_id`` (None: to every listener)."""
        ...

    def subscribe(self, task_ids: set[str] | None = None) -> Subscription: ...

    def add_task(self, sub: Subscription, task_id: str) -> None: ...

    def unsubscribe(self, sub: Subscription) -> None: ...

    def add_tap(self, tap: Callable[[Published], None]) -> None:
        """Called with every published message (the per-task SSE log hangs off this)."""
        ...

    @property
    def listeners(self) -> int: ...

    @property
    def dropped_total(self) -> int:
        """Listeners dropped so far for not reading (a metric)."""
        ...
