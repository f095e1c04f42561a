"""How a task ends: outputs downloaded then completed, failed, timed out or interrupted.

Outputs are streamed to ``outputs/`` before a task is called completed. ``finish`` is the single way
to a final status: it releases the task from the pool and its timer, tells observers and listeners,
and drops the workflow from memory when the durable store keeps it. Timeouts and interrupts live here
too: both end a task and stop it on its backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from backends.comfyui import ComfyUIBackend
from config import Settings
from core.errors import ComfyGateError
from core.task import Task, TaskStatus
from security.safe_paths import content_type, sanitize_filename
from tasks.placement import OutputKeeper
from tasks.pool import Pool
from tasks.runtime import Jobs, Timers
from tasks.store import TaskStore
from tasks.updates import Updates

WorkflowLoader = Callable[[str], Coroutine[Any, Any, dict[str, Any] | None]]


class Endings:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        pool: Pool,
        updates: Updates,
        jobs: Jobs,
        timers: Timers,
        temp_dir: Path,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.updates = updates
        self.jobs = jobs
        self.timers = timers
        self.temp_dir = temp_dir
        # Set by the durable store: finished tasks then drop their workflow, loaded back on demand.
        self.workflow_loader: WorkflowLoader | None = None
        # Cluster mode: outputs are copied to shared storage before the task is called completed.
        self.output_keeper: OutputKeeper | None = None

    # --- completed -------------------------------------------------------------------------------
    async def complete_from(
        self, task: Task, backend: ComfyUIBackend, node_outputs: dict[str, Any] | None = None
    ) -> None:
        """Download every output file, then call the task completed (or failed if a file is missing)."""
        if node_outputs is not None:
            task.node_outputs = node_outputs
        try:
            task.outputs = await self._download_outputs(task, backend)
        except ComfyGateError as exc:
            self.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": exc.message})
            return
        if self.output_keeper is not None and task.outputs:
            try:
                await self.output_keeper.keep(task)
            except ComfyGateError as exc:
                self.finish(task, TaskStatus.FAILED, error={"type": "output_store_failed", "message": exc.message})
                return
        task.progress.update({"percent": 100.0, "nodes_done": task.progress.get("nodes_total", len(task.workflow))})
        self.finish(task, TaskStatus.COMPLETED)

    async def _download_outputs(self, task: Task, backend: ComfyUIBackend) -> list[dict[str, Any]]:
        jobs = []
        for node_id, output in task.node_outputs.items():
            if not isinstance(output, dict):
                continue
            for items in output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and isinstance(item.get("filename"), str):
                        jobs.append(self._download_one(task, backend, node_id, item))
        return list(await asyncio.gather(*jobs)) if jobs else []

    async def _download_one(
        self, task: Task, backend: ComfyUIBackend, node_id: str, item: dict[str, Any]
    ) -> dict[str, Any]:
        remote = item.get("type") if isinstance(item.get("type"), str) and item.get("type") else "output"
        kind = "output" if remote == "output" else "temp"  # a backend's answer never picks a local folder
        folder = self.settings.outputs_dir if kind == "output" else self.temp_dir
        local = f"{task.task_id[:8]}_{sanitize_filename(item['filename'])}"
        subfolder = item.get("subfolder") if isinstance(item.get("subfolder"), str) else ""
        size = await backend.client.download(item["filename"], subfolder, str(remote), folder / local)
        query = "" if kind == "output" else "?type=temp"
        return {
            "filename": local,
            "content_type": content_type(local),
            "size": size,
            "node_id": node_id,
            "type": kind,
            "url": f"/api/image/{local}{query}",
            "comfyui": {"filename": item["filename"], "subfolder": subfolder, "type": remote},
        }

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None:
        """For backends that fetch their own outputs (ViewComfy): files are already in outputs/."""
        task.outputs = outputs
        task.progress.update({"percent": 100.0})
        self.finish(task, TaskStatus.COMPLETED)

    # --- the one way to a final status -----------------------------------------------------------
    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None:
        if task.status.final:
            return
        task.status = status
        task.finished_at = time.time()
        if error is not None:
            task.error = error
        self.pool.release(task)
        self.timers.cancel(task.task_id)
        self.store.finished(task)
        self.updates.notify(task, "finished")
        self.updates.task(task, outputs=task.outputs, execution_time=task.execution_time)
        if self.workflow_loader is not None:
            task.workflow = {}  # it is on disk; load_workflow() brings it back for the rare reader
        self.pool.wake()

    def fail(self, task: Task, error: dict[str, Any]) -> None:
        self.finish(task, TaskStatus.FAILED, error=error)

    def finish_interrupted(self, task: Task, reason: str) -> None:
        self.finish(task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": reason})

    async def load_workflow(self, task: Task) -> dict[str, Any]:
        """The task's workflow, read back from the durable store if it was released from memory."""
        if task.workflow or self.workflow_loader is None:
            return task.workflow
        return await self.workflow_loader(task.task_id) or {}

    # --- timeouts and interrupts -----------------------------------------------------------------
    def arm_timeout(self, task: Task, delay: float | None = None) -> None:
        self.timers.arm(task.task_id, task.timeout if delay is None else delay, self._on_timeout)

    def _on_timeout(self, task_id: str) -> None:
        task = self.store.get(task_id)
        if task is None or task.status.final:
            return
        task.extra["interrupt_reason"] = "timeout"
        self.jobs.spawn(self._stop_on_backend(task), name=f"timeout {task_id}")
        self.finish(
            task,
            TaskStatus.TIMEOUT,
            error={"type": "timeout", "message": f"task exceeded its timeout of {task.timeout:g} s"},
        )

    async def interrupt(self, task: Task) -> Task:
        """Stop a task whether it runs or waits; it ends ``interrupted`` once its backend confirms."""
        if task.status.final:
            return task
        if task.status == TaskStatus.PENDING:
            self.finish_interrupted(task, "cancelled before dispatch")
            return task
        task.extra["interrupt_requested"] = True
        if await self._stop_on_backend(task) == "deleted":
            self.finish_interrupted(task, "removed from the queue")
        return task

    async def _stop_on_backend(self, task: Task) -> str:
        backend = self.pool.backends.get(task.backend or "")
        if backend is None:
            return "gone"
        return await backend.cancel(task)
