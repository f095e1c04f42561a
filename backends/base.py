"""The Backend protocol every kind of backend fulfils, and the bookkeeping they share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

from core.task import Task, TaskStatus

log = logging.getLogger("comfygate.backend")


class TaskHost(Protocol):
    """What a backend may do to the tasks it runs (the task manager implements it).

    A ComfyUI backend only posts prompts: its WebSocket events reach the manager on their own. A backend
    without such events (ViewComfy) drives its task through these calls.
    """

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]: ...

    def mark_running(self, task: Task) -> None: ...

    def publish(self, task: Task) -> None: ...

    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None: ...

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None: ...

    def finish_interrupted(self, task: Task, reason: str) -> None: ...

    def backend_changed(self, backend: Backend) -> None: ...
    def partner_key(self, task: Task) -> str | None:
        """The Comfy.org key for partner API nodes this task runs with (memory only, never stored)."""
        ...


@runtime_checkable
class Backend(Protocol):
    """What the task manager needs of any backend (ComfyUI, ViewComfy, ...): routing, hand-over, cancel.

    No code outside a backend asks which kind it is; the differences are these members.
    """

    name: str
    kind: str  # shown to users and used as a routing filter they ask for; never switched on
    inflight: set[str]  # task ids handed to it and not final
    queue_remaining: int  # what it says is in its own queue
    # Remote and paid per run (ViewComfy): an unpinned task only goes here when no local backend can take it.
    remote: bool
    # A live health signal to wait on (ComfyUI's WebSocket): a task pinned to it is held while it is down.
    # Without one, a pinned submission is refused at once instead.
    live_health: bool

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

    async def hand_over(self, task: Task, host: TaskHost, extra_data: dict[str, Any] | None = None) -> None:
        """Give ``task`` to the backend; ComfyUI's refusal is raised. Returns once it is accepted.

        ``extra_data``: ComfyUI's per-prompt extra_data (e.g. a partner-node API key), never stored.
        """
        ...

    async def cancel(self, task: Task) -> str:
        """Stop ``task`` there: "deleted" (it never started), "interrupted", "gone" or "unreachable"."""
        ...

    async def probe(self) -> dict[str, Any] | None: ...


@runtime_checkable
class TakesOver(Protocol):
    """A backend each replica has its own client of (ViewComfy), whose tasks are driven by the replica that took
    them: ``take_over`` brings one whose replica stopped (``lost``) to its end from this replica."""

    async def take_over(self, task: Task, host: TaskHost, lost: str) -> None: ...

    async def leave(self, grace: float) -> set[str]:
        """Cluster mode, this replica stopping gracefully: the ids of the tasks it stopped following without
        ending them (a survivor adopts each and ends it with ``take_over``); the others may run on up to
        ``grace`` seconds first."""
        ...


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
