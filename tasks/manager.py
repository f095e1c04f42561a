"""Turns submissions into tracked tasks and keeps them true to what their backends do.

The manager is a small face over parts that each hold one concept and are built here:

- ``Pool`` (``pool``): the backends, ComfyGate's own queue, the choice of a backend, the dispatcher;
- ``Submitter`` (``submission``): a ready workflow becomes a task handed to a backend or held;
- ``apply_event`` (``progress``): one ComfyUI event applied to one task, a pure function;
- ``Endings`` (``endings``): outputs, final statuses, timeouts, interrupts;
- ``Recovery`` (``recovery``): backends going down or coming back, restarts of ComfyGate;
- ``Updates`` (``updates``): observers and listeners; ``Jobs`` and ``Timers`` (``runtime``).

It also is the ``TaskHost`` through which a backend that drives its own tasks (ViewComfy) reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from backends.base import Backend
from backends.comfyui import ComfyUIBackend
from backends.comfyui_events import ComfyUIEvent
from config import Settings
from core.errors import NotFound, PromptRejected
from core.task import Task, TaskStatus
from events.bus import EventBus
from tasks.endings import Endings, WorkflowLoader
from tasks.outputs import Outputs
from tasks.pool import Pool
from tasks.progress import End, apply_event
from tasks.recovery import Recovery
from tasks.runtime import Jobs, Timers
from tasks.store import TaskStore
from tasks.submission import DispatchHook, Submitter
from tasks.updates import Observer, Updates

log = logging.getLogger("comfygate.tasks")

RUN_ENDS = ("execution_success", "execution_error", "execution_interrupted")


class TaskManager:
    """Every task from submission to its end, across the pool of backends."""

    def __init__(self, settings: Settings, store: TaskStore, hub: EventBus) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.temp_dir = settings.outputs_dir / "temp"
        self.jobs = Jobs()
        self.timers = Timers()
        self.updates = Updates(hub)
        self.pool = Pool(settings, store, self.updates)
        self.outputs = Outputs(settings, self.temp_dir, self.jobs)
        self.endings = Endings(
            settings, store, self.pool, self.updates, self.jobs, self.timers, self.temp_dir, self.outputs
        )
        self.submitter = Submitter(settings, store, self.pool, self.endings, self.updates, self)
        self.recovery = Recovery(settings, store, self.pool, self.endings, self.updates, self.jobs)

    # --- wiring and lifecycle ----------------------------------------------------------------------
    def add_observer(self, observer: Observer) -> None:
        self.updates.observers.append(observer)

    def add_dispatch_hook(self, hook: DispatchHook) -> None:
        """See ``tasks.submission.DispatchHook``."""
        self.submitter.dispatch_hooks.append(hook)

    def add_backend(self, backend: Backend) -> None:
        self.pool.add(backend)

    @property
    def backends(self) -> dict[str, Backend]:
        return self.pool.backends

    @property
    def pending(self) -> dict[str, Task]:
        return self.pool.pending

    def comfyui_backends(self) -> list[ComfyUIBackend]:
        """Backends that are ComfyUI servers (queue, object_info, uploads); ViewComfy ones have none of those."""
        return list(self.pool.comfyui.values())

    @property
    def workflow_loader(self) -> WorkflowLoader | None:
        return self.endings.workflow_loader

    @workflow_loader.setter
    def workflow_loader(self, loader: WorkflowLoader | None) -> None:
        self.endings.workflow_loader = loader

    async def start(self) -> None:
        self.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        for backend in self.pool.backends.values():
            backend.start()
        for comfyui in self.pool.comfyui.values():
            if comfyui.down_since is not None:
                # A backend that never comes up must not hold recovered tasks forever either.
                self.spawn(self.recovery.fail_if_still_down(comfyui, comfyui.down_since), name=f"down {comfyui.name}")
        self.spawn(self.pool.run_dispatcher(self._dispatch_held, self.endings.fail), name="dispatcher")
        self.spawn(self.pool.run_prober(), name="prober")

    async def _dispatch_held(self, task: Task, backend: Backend) -> None:
        await self.submitter.dispatch(task, backend)

    async def stop(self) -> None:
        self.timers.stop()
        for backend in self.pool.backends.values():
            await backend.stop()
        await self.jobs.stop()
        await self.outputs.fetcher.close()  # files written behind are on disk before the process ends

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> Any:
        """Run in the background, tracked so shutdown can wait for it and errors are logged."""
        return self.jobs.spawn(coro, name=name)

    # --- submitting, querying, stopping ------------------------------------------------------------
    async def submit(self, workflow: dict[str, Any], **options: Any) -> Task:
        """See ``Submitter.submit``."""
        return await self.submitter.submit(workflow, **options)

    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}", task_id=task_id)
        return task

    def find_backend(self, name_or_url: str, kind: str | None = None) -> Backend:
        return self.pool.find(name_or_url, kind)

    async def object_info(self, pinned: str | None = None, *, stale_ok: bool = False) -> dict[str, Any]:
        return await self.pool.object_info(pinned, stale_ok=stale_ok)

    async def interrupt(self, task: Task) -> Task:
        placement = self.pool.placement
        if placement is not None and not task.status.final and not placement.drives(task):
            await placement.interrupt(task)  # another replica drives it: it stops it
            return task
        return await self.endings.interrupt(task)

    async def load_workflow(self, task: Task) -> dict[str, Any]:
        return await self.endings.load_workflow(task)

    def recover(self, tasks: list[Task]) -> None:
        self.recovery.recover(tasks)

    # --- what ComfyUI backends report ----------------------------------------------------------------
    def on_event(self, backend: ComfyUIBackend, event: ComfyUIEvent) -> None:
        if event.type == "status":
            self.updates.queue(backend.name, backend.queue_remaining)
            return
        task = self.store.by_prompt(event.prompt_id)
        if task is None and event.type in ("preview", "text") and backend.running_prompt:
            task = self.store.by_prompt(backend.running_prompt)
        if task is None or task.status.final:
            self._after_the_end(backend, task, event)
            return
        outcome = apply_event(task, event)
        if outcome.runs is not None:
            backend.running_prompt = task.prompt_id if outcome.runs else None
        if event.type == "executed":
            # First: the node's files are asked for (/view leaves now) before the fan-out of this event.
            self.endings.output_named(task, backend, str(event.data.get("node")))
        for message in outcome.messages:
            self.updates.message(message, task.task_id)
        if outcome.status:
            self.updates.notify(task, "status")
        if outcome.update:
            self.updates.task(task)
        if outcome.end is End.SUCCESS:
            self.endings.start_completion(task, backend)
        elif outcome.end is End.ERROR:
            self.endings.fail(task, outcome.error or {})
        elif outcome.end is End.INTERRUPTED:
            self.endings.finish(task, TaskStatus.INTERRUPTED, error=outcome.error)

    def on_output(self, backend: ComfyUIBackend, event: ComfyUIEvent) -> None:
        """An ``executed`` just read, maybe behind other events of its burst not handled yet: its files are asked
        for now (``on_event`` handles it in its turn; a download already started is not repeated)."""
        task = self.store.by_prompt(event.prompt_id)
        if task is not None and not task.status.final:
            self.outputs.named(task, backend, str(event.data.get("node")), event.data.get("output") or {})

    def _after_the_end(self, backend: ComfyUIBackend, task: Task | None, event: ComfyUIEvent) -> None:
        """An event for a task already final: a task completed early (every output in hand) ends its run here."""
        if event.type in RUN_ENDS and event.prompt_id and backend.running_prompt == event.prompt_id:
            backend.running_prompt = None
        if task is not None and task.status == TaskStatus.COMPLETED and event.type == "execution_error":
            log.warning(
                "task %s was completed when every output had come, then ComfyUI reported an error for its prompt: %s",
                task.task_id,
                event.data.get("exception_message"),
            )

    async def on_backend_state(self, backend: ComfyUIBackend, up: bool) -> None:
        await self.recovery.on_backend_state(backend, up)

    # --- TaskHost: what a backend that drives its own tasks (ViewComfy) may do --------------------------
    def mark_running(self, task: Task) -> None:
        if task.status.final:
            return
        task.status = TaskStatus.RUNNING
        task.started_at = task.started_at or time.time()
        task.progress.setdefault("percent", 0.0)
        self.updates.notify(task, "status")
        self.updates.task(task)

    def publish(self, task: Task) -> None:
        """Tell listeners about a change a backend made to ``task.progress``."""
        if not task.status.final:
            self.updates.task(task)

    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None:
        self.endings.finish(task, status, error)

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None:
        self.endings.complete(task, outputs)

    def finish_interrupted(self, task: Task, reason: str) -> None:
        self.endings.finish_interrupted(task, reason)

    def backend_changed(self, backend: Backend) -> None:
        self.updates.backend(backend)

    def partner_key(self, task: Task) -> str | None:
        return self.pool.partner_keys.get(task.task_id)


__all__ = ["TaskManager", "PromptRejected"]
