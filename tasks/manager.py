"""Turns submissions into tracked tasks and keeps them true to what ComfyUI does.

Events from every backend's WebSocket update their task; a reconnect is followed by a reconciliation
through ``/queue`` and ``/history`` because ComfyUI does not replay what a client missed. Outputs are
streamed to ``outputs/`` before a task is called completed.

Several backends form a pool: a task goes to the healthy backend with the least unfinished work that
has every node class of its workflow (or to the one it is pinned to). When none can take it now, the
task waits in ComfyGate's own queue (status ``pending``, bounded by ``max_pending_tasks``) and a
dispatcher hands it out as soon as a backend frees up or comes back. Tasks whose WebSocket messages go
to another client id (those recovered after a restart of ComfyGate) are followed by polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from backends.comfyui import ComfyUIBackend
from config import Settings
from core.errors import NotFound, PromptRejected
from core.task import Task
from events.hub import EventHub
from tasks.endings import EndingsMixin
from tasks.memory_store import TaskStore
from tasks.pool import PoolMixin
from tasks.progress import ProgressMixin
from tasks.recovery import RecoveryMixin
from tasks.submission import SubmissionMixin

if TYPE_CHECKING:
    from backends.viewcomfy.backend import ViewComfyBackend

log = logging.getLogger("comfygate.tasks")

# An observer learns of every task change: "created" (accepted: queued at a backend, or pending in
# ComfyGate's own queue), "status" (a new status that is not final, e.g. pending → queued → running)
# and "finished" (final). Durable storage, webhooks and metrics hang off this.
Observer = Callable[[Task, str], None]


class TaskManager(SubmissionMixin, PoolMixin, ProgressMixin, EndingsMixin, RecoveryMixin):
    """Every task from submission to its end, across the pool of backends.

    The concepts live in their own modules, as mixins sharing the state set here: submission
    (``task_submission``), the pool and its queue (``task_dispatch``), ComfyUI's events as progress
    (``task_progress``), endings, timeouts and interrupts (``task_endings``), backends going down or
    coming back and restarts of ComfyGate (``task_recovery``). This module keeps the state, the
    observers, the lifecycle and the queries.
    """

    def __init__(self, settings: Settings, store: TaskStore, hub: EventHub) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.backends: dict[str, ComfyUIBackend] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.temp_dir = settings.outputs_dir / "temp"
        self.observers: list[Observer] = []
        # ComfyGate's own queue: tasks accepted but not yet handed to a backend, oldest first.
        self.pending: dict[str, Task] = {}
        self._wakeup = asyncio.Event()
        self._classes: dict[str, frozenset[str]] = {}  # node classes of each unfinished task
        self._given: dict[str, int] = {}  # tasks handed to each backend, to break ties evenly
        self._followed: set[str] = set()  # tasks followed by polling /history, not by the WebSocket
        self._settling: set[str] = set()  # tasks whose fate is being read from /history
        self._merged_info: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
        # Set by the durable store: finished tasks then drop their workflow, loaded back on demand.
        self.workflow_loader: Callable[[str], Coroutine[Any, Any, dict[str, Any] | None]] | None = None
        # What listeners last got, so an event that changes nothing they see is not sent again: ComfyUI
        # sends 3-4 such events per node (execution_cached, progress_state...), each fanned out to all.
        self._last_update: dict[str, tuple[Any, ...]] = {}  # task id → what it last showed, unfinished only
        self._last_queue: dict[str, int] = {}  # backend name → last queue_remaining published

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _notify(self, task: Task, change: str) -> None:
        for observer in self.observers:
            try:
                observer(task, change)
            except Exception:
                log.exception("task observer %r failed on %s", observer, change)

    # --- lifecycle -----------------------------------------------------------------------------
    def add_backend(self, backend: ComfyUIBackend | ViewComfyBackend) -> None:
        """Any object with the ``backends.Backend`` interface (ComfyUI, ViewComfy, ...)."""
        self.backends[backend.name] = backend  # type: ignore[assignment]

    def comfyui_backends(self) -> list[ComfyUIBackend]:
        """Backends that are ComfyUI servers (queue, object_info, uploads); ViewComfy ones have none of those."""
        return [b for b in self.backends.values() if b.kind == "comfyui"]

    async def start(self) -> None:
        self.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        for backend in self.backends.values():
            backend.start()
            if backend.kind == "comfyui" and backend.down_since is not None:
                # A backend that never comes up must not hold recovered tasks forever either.
                self.spawn(self._fail_if_still_down(backend, backend.down_since), name=f"down {backend.name}")
        self.spawn(self._dispatcher(), name="dispatcher")
        self.spawn(self._prober(), name="prober")

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for backend in self.backends.values():
            await backend.stop()
        for job in list(self._background):
            job.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run in the background, tracked so shutdown can wait for it and errors are logged."""
        job = asyncio.create_task(coro, name=name)
        self._background.add(job)
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, job: asyncio.Task[Any]) -> None:
        self._background.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("background job %s failed", job.get_name(), exc_info=job.exception())

    # --- queries -----------------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}", task_id=task_id)
        return task


__all__ = ["TaskManager", "PromptRejected"]
