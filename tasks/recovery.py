"""Recovery: keeping tasks true to ComfyUI when a backend or ComfyGate itself restarts.

ComfyUI does not replay what a client missed, so a reconnect is followed by a reconciliation through
``/queue`` and ``/history``; a backend that stays down past the grace period has its not-started tasks
moved and its started ones failed. After a restart of ComfyGate, the unfinished tasks of the previous
run are taken back from the durable store; those whose WebSocket messages go to the previous
process's client id are followed by polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from backends.comfyui import ComfyUIBackend
from config import Settings
from core.errors import ComfyGateError
from core.task import Task, TaskStatus
from tasks.endings import Endings
from tasks.pool import Pool
from tasks.progress import execution_error
from tasks.runtime import Jobs
from tasks.store import TaskStore
from tasks.updates import Updates

log = logging.getLogger("comfygate.tasks")

HISTORY_RETRIES = 5  # ComfyUI writes history a little after execution_success
HISTORY_RETRY_DELAY = 0.1


class Recovery:
    def __init__(
        self, settings: Settings, store: TaskStore, pool: Pool, endings: Endings, updates: Updates, jobs: Jobs
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.endings = endings
        self.updates = updates
        self.jobs = jobs
        self.followed: set[str] = set()  # tasks followed by polling /history, not by the WebSocket
        self._settling: set[str] = set()  # tasks whose fate is being read from /history

    def requeue(self, task: Task, reason: str, *, new_prompt: bool) -> None:
        self.followed.discard(task.task_id)
        self.endings.restarting(task)  # files of the interrupted run are not this task's outputs
        self.pool.requeue(task, reason, new_prompt=new_prompt)

    # --- backend up / down -----------------------------------------------------------------------
    async def on_backend_state(self, backend: ComfyUIBackend, up: bool) -> None:
        self.updates.backend(backend)
        self.updates.forget_queue(backend.name)
        if up:
            self.jobs.spawn(self.pool.refresh_info(backend), name=f"object_info {backend.name}")
            self.jobs.spawn(self.reconcile(backend), name=f"reconcile {backend.name}")
        else:
            self.jobs.spawn(self.fail_if_still_down(backend, backend.down_since), name=f"down {backend.name}")

    async def fail_if_still_down(self, backend: ComfyUIBackend, since: float | None) -> None:
        """After the grace period: move the backend's not-started tasks elsewhere, fail the started ones."""
        await asyncio.sleep(self.settings.backend_down_grace)
        if backend.connected or backend.down_since != since:
            return
        for task_id in list(backend.inflight):
            task = self.store.get(task_id)
            if task is None or task.status.final:
                backend.inflight.discard(task_id)
                continue
            if task.status == TaskStatus.PENDING:
                continue  # its POST /prompt is still under way; the dispatcher deals with the outcome
            # A fresh prompt id: should the old backend come back with it queued, that run is ignored.
            self._again_or_fail(
                task,
                f"{backend.name} ({backend.url}) is down",
                {
                    "type": "backend_unreachable",
                    "message": f"ComfyUI at {backend.url} has been unreachable for "
                    f"{self.settings.backend_down_grace:g} s; the task's fate there is unknown",
                },
                new_prompt=True,
            )

    async def reconcile(self, backend: ComfyUIBackend) -> None:
        """Bring every in-flight task of ``backend`` in line with what ComfyUI says now."""
        if not backend.inflight:
            return
        asked_at = time.time()
        await backend.detect_features()
        if backend.jobs_api:
            await self._reconcile_with_jobs(backend, asked_at)
            return
        try:
            queue = await backend.client.get_queue()
        except ComfyGateError as exc:
            log.warning("reconcile of %s postponed: %s", backend.name, exc.message)
            return
        running = {item[1] for item in queue.get("queue_running", [])}
        pending = {item[1] for item in queue.get("queue_pending", [])}
        for task in self._to_reconcile(backend):
            if task.queued_at is not None and task.queued_at > asked_at:
                continue  # accepted after /queue answered: not in that answer, yet not lost
            if task.prompt_id in running:
                self._running(task, backend)
            elif task.prompt_id not in pending:
                self.jobs.spawn(self.settle_from_history(task, backend), name=f"settle {task.task_id}")

    async def _reconcile_with_jobs(self, backend: ComfyUIBackend, asked_at: float) -> None:
        """The jobs API knows queued, running, ended and unknown apart: no guessing from /queue + /history."""
        for task in self._to_reconcile(backend):
            try:
                job = await backend.client.get_job(task.prompt_id)
            except ComfyGateError as exc:
                log.warning("reconcile of %s postponed: %s", backend.name, exc.message)
                return
            if task.status.final or task.backend != backend.name:
                continue
            status = job.get("status") if job is not None else None
            if status == "in_progress":
                self._running(task, backend)
            elif job is None and not (task.queued_at is not None and task.queued_at > asked_at):
                self._lost(task, backend)  # (one accepted after we asked is not lost)
            elif job is not None and status != "pending":
                self.jobs.spawn(self.settle_from_history(task, backend), name=f"settle {task.task_id}")

    def _to_reconcile(self, backend: ComfyUIBackend) -> list[Task]:
        """The backend's in-flight tasks to check: not final (those leave its set), not followed by polling,
        not still being posted."""
        tasks = []
        for task_id in list(backend.inflight):
            task = self.store.get(task_id)
            if task is None or task.status.final:
                backend.inflight.discard(task_id)
            elif task_id not in self.followed and task.status != TaskStatus.PENDING:
                tasks.append(task)
        return tasks

    def _running(self, task: Task, backend: ComfyUIBackend) -> None:
        backend.running_prompt = task.prompt_id
        if task.status != TaskStatus.RUNNING:
            task.status = TaskStatus.RUNNING
            task.started_at = task.started_at or time.time()
            self.updates.task(task)

    def _lost(self, task: Task, backend: ComfyUIBackend) -> None:
        """The backend does not know the task (it restarted): run it again if it never started, else fail it."""
        self._again_or_fail(
            task,
            f"{backend.name} lost it before it started (restarted?)",
            {
                "type": "backend_restarted",
                "message": f"ComfyUI at {backend.url} lost this task while it was running "
                "(it restarted or dropped its queue); submit it again",
            },
            new_prompt=False,
        )

    def _again_or_fail(self, task: Task, reason: str, error: dict[str, Any], *, new_prompt: bool) -> None:
        """A task whose run is lost: queued again if it never started, else failed with ``error``."""
        if task.started_at is None and task.status == TaskStatus.QUEUED:
            log.info("task %s goes back to the queue: %s", task.task_id, reason)
            self.requeue(task, reason, new_prompt=new_prompt)
        else:
            self.endings.fail(task, error)

    async def settle_from_history(self, task: Task, backend: ComfyUIBackend) -> None:
        """A task missing from its backend's queue: completed (history), or lost. One settle per task."""
        if task.task_id in self._settling:
            return
        self._settling.add(task.task_id)
        try:
            await self._settle(task, backend)
        finally:
            self._settling.discard(task.task_id)

    async def _settle(self, task: Task, backend: ComfyUIBackend) -> None:
        entry = None
        attempts = task.attempts
        for attempt in range(HISTORY_RETRIES):
            try:
                entry = (await backend.client.get_history(task.prompt_id)).get(task.prompt_id)
            except ComfyGateError:
                entry = None
            if entry or task.status.final:
                break
            await asyncio.sleep(HISTORY_RETRY_DELAY * (attempt + 1))
        if task.status.final or task.attempts != attempts or task.backend != backend.name:
            return  # settled, moved or resubmitted meanwhile
        if entry:
            await self.apply_history(task, backend, entry)
        else:
            self._lost(task, backend)

    async def apply_history(self, task: Task, backend: ComfyUIBackend, entry: dict[str, Any]) -> None:
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        events = {name: data for name, data in messages if isinstance(data, dict)}
        if status.get("status_str") == "success" or status.get("completed"):
            task.started_at = task.started_at or time.time()
            await self.endings.complete_from(task, backend, node_outputs=entry.get("outputs") or {})
        elif "execution_interrupted" in events:
            self.endings.finish(task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "interrupted"})
        else:
            self.endings.fail(task, execution_error(events.get("execution_error", {})))

    # --- recovery after a restart of ComfyGate --------------------------------------------------------
    def recover(self, tasks: list[Task]) -> None:
        """Take back the unfinished tasks of a previous run (from the durable store) and settle each.

        Pending ones join the queue. Those handed to a ComfyUI backend are followed by polling its
        /history and /queue: their WebSocket messages go to the previous process's client id.
        """
        now = time.time()
        for task in sorted(tasks, key=lambda t: t.created_at):
            if task.status.final:
                continue
            self.endings.arm_timeout(task, max(task.timeout - (now - task.created_at), 1.0))
            backend = self.pool.comfyui.get(task.backend or "")
            if task.status == TaskStatus.PENDING or task.backend is None:
                task.status, task.backend = TaskStatus.PENDING, None
                self.pool.pending[task.task_id] = task
            elif backend is not None:
                backend.inflight.add(task.task_id)
                self.jobs.spawn(self.follow(task, backend), name=f"follow {task.task_id}")
            elif task.started_at is None:
                self.requeue(task, f"backend {task.backend} is no longer available", new_prompt=True)
            else:
                self.endings.fail(
                    task,
                    {
                        "type": "backend_gone",
                        "message": f"ComfyGate restarted while the task ran on {task.backend}, which it "
                        "cannot follow any more; submit it again",
                    },
                )
        self.pool.wake()

    async def follow(self, task: Task, backend: ComfyUIBackend) -> None:
        """Track a task by polling /history and /queue until it ends (no WebSocket messages for it)."""
        self.followed.add(task.task_id)
        prompt_id = task.prompt_id
        try:
            while not task.status.final and task.prompt_id == prompt_id and task.backend == backend.name:
                try:
                    entry = (await backend.client.get_history(prompt_id)).get(prompt_id)
                    if entry:
                        await self.apply_history(task, backend, entry)
                        return
                    queue = await backend.client.get_queue()
                except ComfyGateError:
                    await asyncio.sleep(self.settings.poll_interval)
                    continue  # unreachable: the down grace period decides its fate
                if prompt_id in {item[1] for item in queue.get("queue_running", [])}:
                    if task.status != TaskStatus.RUNNING:
                        task.status = TaskStatus.RUNNING
                        task.started_at = task.started_at or time.time()
                        task.progress = {"percent": 0.0, "nodes_done": 0, "nodes_total": len(task.workflow)}
                        self.updates.notify(task, "status")
                        self.updates.task(task)
                elif prompt_id not in {item[1] for item in queue.get("queue_pending", [])}:
                    await self.settle_from_history(task, backend)  # done just now, or vanished
                    return
                await asyncio.sleep(self.settings.poll_interval)
        finally:
            self.followed.discard(task.task_id)
