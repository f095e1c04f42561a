"""Submission: a ready API-format workflow becomes a tracked task, handed to a backend or held.

``submit`` decides between a backend now and ComfyGate's queue; ``dispatch`` is the one place a task
is handed to a backend (a direct submission, or the dispatcher emptying the queue), so the bookkeeping
of that hand-over (store, in-flight sets, statuses, the timeout timer) is written once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from backends.base import Backend, TaskHost
from config import Settings
from core.errors import Conflict, PostUnsure, ServiceBusy
from core.task import OWN_PARTNER_KEY, Task, TaskStatus
from tasks.endings import Endings
from tasks.pool import Pool, workflow_classes
from tasks.store import TaskStore
from tasks.updates import Updates

# Awaited just before a task is handed to a backend (a direct submission, the dispatcher, a failover):
# it may prepare the backend (the v2 API uploads the job's assets to it) and return extra_data for this
# hand-over only (never stored with the task). A ComfyGateError it raises refuses the hand-over.
DispatchHook = Callable[[Task, Backend], Awaitable[dict[str, Any] | None]]


class Submitter:
    def __init__(
        self, settings: Settings, store: TaskStore, pool: Pool, endings: Endings, updates: Updates, host: TaskHost
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.endings = endings
        self.updates = updates
        self.host = host
        self.dispatch_hooks: list[DispatchHook] = []

    async def submit(
        self,
        workflow: dict[str, Any],
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        workflow_name: str | None = None,
        backend: str | None = None,
        extra: dict[str, Any] | None = None,
        kind: str | None = None,
        partner_key: str | None = None,
        task_id: str | None = None,
        bound_here: str | None = None,
    ) -> Task:
        """Hand a ready API-format workflow to a backend, or hold it in ComfyGate's queue.

        When a backend can take it now, its refusal is raised (422), not stored. When none can (all
        capable backends down or full), the task is held as ``pending``; a full queue is a 503.
        ``kind`` limits the choice to backends of that kind (e.g. "comfyui"). ``partner_key`` (Comfy.org
        partner API nodes) reaches the backend with the prompt and is kept nowhere else. ``task_id``: one
        the caller chose (ViewComfy's current API names its runs); it must be new (409 otherwise).
        ``bound_here``: what the task needs that only this process holds (uploaded files, a key; a partner
        key is that already): with several replicas, it is posted by this one or refused.
        """
        if task_id is not None and self.store.get(task_id) is not None:
            raise Conflict(f"a task with id {task_id} exists already", task_id=task_id)
        unfinished = self.pool.unfinished()
        if unfinished >= self.settings.max_unfinished_tasks:
            raise ServiceBusy(
                f"ComfyGate holds {unfinished} unfinished tasks, its limit (COMFYUI_MAX_UNFINISHED_TASKS): "
                "retry once some have ended",
                retry_after=5,
                unfinished=unfinished,
            )
        classes = workflow_classes(workflow)
        pinned = self.pool.candidates(backend, kind, classes)
        task = Task(
            task_id=task_id or uuid.uuid4().hex,
            prompt_id=str(uuid.uuid4()),
            workflow=workflow,
            params=params or {},
            workflow_name=workflow_name,
            pinned_backend=pinned,
            timeout=timeout or self.settings.task_timeout,
            extra=extra or {},
        )
        if kind is not None:
            task.extra["backend_kind"] = kind  # kept with the task, so a held or recovered one obeys it too
        self.pool.remember_classes(task, classes)
        if partner_key:
            self.pool.partner_keys[task.task_id] = partner_key
            task.extra[OWN_PARTNER_KEY] = True  # stored with the task (the key is not): see PartnerKeyLost
            bound_here = bound_here or "a per-request api_key_comfy_org (kept in this replica's memory)"
        if bound_here:
            self.pool.bound_here[task.task_id] = bound_here
        if self.pool.placement is not None:
            return await self.pool.placement.place(task)
        target = self.pool.pick(task)
        if target is not None and not self.pool.waiting_for(target):
            try:
                await self.dispatch(task, target, new=True)
            except BaseException:
                self.pool.forget_classes(task)
                self.pool.partner_keys.pop(task.task_id, None)
                self.pool.bound_here.pop(task.task_id, None)
                raise
            return task
        self.pool.hold(task)
        self.store.add(task)
        self.endings.arm_timeout(task)
        self.updates.notify(task, "created")
        self.updates.task(task)
        self.pool.wake()
        return task

    async def dispatch(self, task: Task, backend: Backend, *, new: bool = False, keep_unsure: bool = False) -> None:
        """Hand ``task`` to ``backend``. ``new``: not yet in the store (a direct submission), and dropped from it
        again when the backend does not take it. ``keep_unsure``: kept when that is not known (``PostUnsure``, or
        cancelled while the hand-over was under way), for the caller to find out."""
        self.pool.given(task, backend)
        if new:
            self.store.add(task)
        else:
            self.store.reindex(task, task.prompt_id)
        try:
            extra_data: dict[str, Any] = {}
            for hook in self.dispatch_hooks:
                extra_data.update(await hook(task, backend) or {})
            await backend.hand_over(task, self.host, extra_data or None)
        except BaseException as exc:
            self.pool.taken_back(task, backend)
            unsure = isinstance(exc, (PostUnsure, asyncio.CancelledError))
            if new and not (keep_unsure and unsure):
                self.store.forget(task)
            raise
        self._accepted(task, new)

    def _accepted(self, task: Task, new: bool) -> None:
        """A backend took ``task``: it is queued there (unless its events already moved it on)."""
        if task.status == TaskStatus.PENDING:
            task.status = TaskStatus.QUEUED
            task.queued_at = time.time()
        # An instant workflow can end before the backend's answer reaches us: its end is published
        # already, and a timer armed now would keep the task in memory for its whole timeout.
        if new and not task.status.final:
            self.endings.arm_timeout(task)
        self.updates.notify(task, "created" if new else "status")
        if not task.status.final:
            self.updates.task(task)
