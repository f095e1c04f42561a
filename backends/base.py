"""The Backend protocol every kind of backend fulfils, and the bookkeeping they share."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("comfygate.backend")


@runtime_checkable
class Backend(Protocol):
    """What the task manager needs of any backend (ComfyUI, ViewComfy, ...) to route tasks to it.

    Optional extras the manager uses when present: ``probe()`` (periodic health check),
    ``refresh_object_info()`` (capabilities on connect) and ``execute(task, manager)`` (backends
    without a ComfyUI WebSocket drive their own tasks).
    """

    name: str
    kind: str
    inflight: set[str]

    @property
    def url(self) -> str: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def load(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def can_run(self, classes: set[str]) -> bool: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class BackendBase:
    """What every backend keeps the same way: its name, its task counts, its last failure, and ``describe()``."""

    name: str
    kind: str
    inflight: set[str]  # task ids handed to this backend and not final
    queue_remaining: int
    down_since: float | None
    last_error: str | None

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def healthy(self) -> bool:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The backend as /api/health and /ws show it: the fields every kind has, then its own."""
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "healthy": self.healthy,
            "queue_remaining": self.queue_remaining,
            "inflight": len(self.inflight),
            "down_since": self.down_since,
            "last_error": self.last_error,
            **self.describe_own(),
        }

    def describe_own(self) -> dict[str, Any]:
        """What only this kind of backend reports."""
        return {}
