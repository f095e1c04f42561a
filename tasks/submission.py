"""Submission: a ready API-format workflow becomes a tracked task, handed to a backend or held.

``submit`` decides between a backend now and ComfyGate's queue; ``_dispatch`` is the one place a task
is handed to a backend (a direct submission, or the dispatcher emptying the queue), so the bookkeeping
of that hand-over (store, in-flight sets, statuses, the timeout timer) is written once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from core.errors import ComfyUIUnavailable, ServiceBusy
from core.task import Task, TaskStatus


class SubmissionMixin:
    """Accepting a workflow as a task and handing a task to a backend.

    Part of ``TaskManager`` (``task_manager.py``), which sets the shared state in its ``__init__``.
    """

    # --- submission ----------------------------------------------------------------------------
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
    ) -> Task:
        """Hand a ready API-format workflow to a backend, or hold it in ComfyGate's queue.

        When a backend can take it now, ComfyUI's refusal is raised (422), not stored. When none can
        (all capable backends down or full), the task is held as ``pending``; a full queue is a 503.
        ``kind`` limits the choice to backends of that kind (e.g. "comfyui").
        """
        classes = frozenset(str(node.get("class_type")) for node in workflow.values() if isinstance(node, dict))
        if backend:
            pinned = self.find_backend(backend, kind)
            if not pinned.healthy and pinned.kind != "comfyui":
                # No live health signal to wait on (ViewComfy): say so now rather than hold the task.
                raise ComfyUIUnavailable(f"backend {pinned.name} ({pinned.url}) is not reachable", retry_after=5)
            backend = pinned.name
            candidates = [pinned]
        else:
            candidates = [b for b in self.backends.values() if kind is None or b.kind == kind]
            if not candidates:
                raise ServiceBusy(f"no backend of kind {kind!r} is configured", retry_after=30)
        if not any(b.can_run(set(classes)) for b in candidates):
            raise ServiceBusy("no backend has every node class of this workflow", retry_after=30)
        task = Task(
            task_id=uuid.uuid4().hex,
            prompt_id=str(uuid.uuid4()),
            workflow=workflow,
            params=params or {},
            workflow_name=workflow_name,
            pinned_backend=backend,
            timeout=timeout or self.settings.task_timeout,
            extra=extra or {},
        )
        if kind is not None:
            task.extra["backend_kind"] = kind  # kept with the task, so a held or recovered one obeys it too
        self._classes[task.task_id] = classes
        target = self._pick(task)
        if target is not None and not any(self._fits(p, target) for p in self.pending.values()):
            try:
                await self._dispatch(task, target, new=True)
            except BaseException:
                self._classes.pop(task.task_id, None)
                raise
            return task
        if len(self.pending) >= self.settings.max_pending_tasks:
            self._classes.pop(task.task_id, None)
            raise ServiceBusy(
                f"ComfyGate's queue is full: {len(self.pending)} tasks wait for a backend; retry later",
                retry_after=5,
                pending=len(self.pending),
            )
        self.store.add(task)
        self.pending[task.task_id] = task
        self._arm_timeout(task)
        self._notify(task, "created")
        self._publish(task)
        self.wake()
        return task

    async def _dispatch(self, task: Task, backend: Any, *, new: bool = False) -> None:
        """Hand ``task`` to ``backend``. ``new``: not yet in the store (a direct submission)."""
        task.backend = backend.name
        task.attempts += 1
        self._given[backend.name] = self._given.get(backend.name, 0) + 1
        backend.inflight.add(task.task_id)
        self.store.add(task) if new else self.store.reindex(task, task.prompt_id)
        if backend.kind != "comfyui":
            # Backends without a ComfyUI WebSocket (ViewComfy) drive their task themselves through
            # mark_running / publish / finish / complete_files.
            self._accepted(task, new)
            self.spawn(backend.execute(task, self), name=f"{backend.kind} {task.task_id}")
            return
        try:
            answer = await backend.client.post_prompt(
                task.workflow, client_id=backend.ws.client_id, prompt_id=task.prompt_id
            )
        except BaseException as exc:
            backend.inflight.discard(task.task_id)
            task.backend = None
            if new:
                self.store.forget(task)
            if isinstance(exc, ComfyUIUnavailable):
                backend.last_error = exc.message
            raise
        task.extra["number"] = answer.get("number")
        self._accepted(task, new)

    def _accepted(self, task: Task, new: bool) -> None:
        """A backend took ``task``: it is queued there (unless its events already moved it on)."""
        if task.status == TaskStatus.PENDING:
            task.status = TaskStatus.QUEUED
            task.queued_at = time.time()
        # An instant workflow can end before ComfyUI's answer reaches us: its end is published already,
        # and a timer armed now would keep the task in memory for its whole timeout.
        if new and not task.status.final:
            self._arm_timeout(task)
        self._notify(task, "created" if new else "status")
        if not task.status.final:
            self._publish(task)
