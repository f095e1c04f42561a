"""How a task ends: outputs downloaded then completed, failed, timed out or interrupted.

Outputs are streamed to ``outputs/`` before a task is called completed. ``finish`` is the single way
to a final status: it releases the task from the backend, the queue and its timer, tells observers
and listeners, and drops the workflow from memory when the durable store keeps it. Timeouts and
interrupts live here too: both end a task and stop it on its backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from backends.comfyui import ComfyUIBackend
from core.errors import ComfyGateError
from core.task import Task, TaskStatus
from security.safe_paths import content_type, sanitize_filename

log = logging.getLogger("comfygate.tasks")


class EndingsMixin:
    """Downloading outputs and finishing tasks; timeouts and interrupts.

    Part of ``TaskManager`` (``task_manager.py``), which sets the shared state in its ``__init__``.
    """

    # --- endings ---------------------------------------------------------------------------------
    async def _complete(self, task: Task, backend: ComfyUIBackend, node_outputs: dict[str, Any] | None = None) -> None:
        """Download every output file, then call the task completed (or failed if a file is missing)."""
        if node_outputs is not None:
            task.node_outputs = node_outputs
        try:
            task.outputs = await self._download_outputs(task, backend)
        except ComfyGateError as exc:
            self.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": exc.message})
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
        size = await backend.client.download(item["filename"], subfolder, remote, folder / local)
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

    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None:
        if task.status.final:
            return
        task.status = status
        task.finished_at = time.time()
        if error is not None:
            task.error = error
        backend = self.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.discard(task.task_id)
        self.pending.pop(task.task_id, None)
        self._classes.pop(task.task_id, None)
        handle = self._timers.pop(task.task_id, None)
        if handle is not None:
            handle.cancel()
        self.store.finished(task)
        self._notify(task, "finished")
        self._publish(task, outputs=task.outputs, execution_time=task.execution_time)
        if self.workflow_loader is not None:
            task.workflow = {}  # it is on disk; load_workflow() brings it back for the rare reader
        self.wake()

    async def load_workflow(self, task: Task) -> dict[str, Any]:
        """The task's workflow, read back from the durable store if it was released from memory."""
        if task.workflow or self.workflow_loader is None:
            return task.workflow
        return await self.workflow_loader(task.task_id) or {}

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None:
        """For backends that fetch their own outputs (ViewComfy): files are already in outputs/."""
        task.outputs = outputs
        task.progress.update({"percent": 100.0})
        self.finish(task, TaskStatus.COMPLETED)

    def finish_interrupted(self, task: Task, reason: str) -> None:
        self.finish(task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": reason})

    # --- timeouts and interrupts -----------------------------------------------------------------
    def _arm_timeout(self, task: Task, delay: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._timers[task.task_id] = loop.call_later(
            task.timeout if delay is None else delay, self._on_timeout, task.task_id
        )

    def _on_timeout(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        task = self.store.get(task_id)
        if task is None or task.status.final:
            return
        task.extra["interrupt_reason"] = "timeout"
        self.spawn(self._stop_on_backend(task), name=f"timeout {task_id}")
        self.finish(
            task,
            TaskStatus.TIMEOUT,
            error={"type": "timeout", "message": f"task exceeded its timeout of {task.timeout:g} s"},
        )

    async def interrupt(self, task: Task) -> Task:
        """Stop a task whether it runs or waits; it ends ``interrupted`` once ComfyUI confirms."""
        if task.status.final:
            return task
        if task.status == TaskStatus.PENDING:
            self.finish(
                task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "cancelled before dispatch"}
            )
            return task
        task.extra["interrupt_requested"] = True
        if await self._stop_on_backend(task) == "deleted":
            self.finish(
                task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "removed from the queue"}
            )
        return task

    async def _stop_on_backend(self, task: Task) -> str:
        backend = self.backends.get(task.backend or "")
        if backend is None:
            return "gone"
        if backend.kind != "comfyui":
            return await backend.cancel(task)  # type: ignore[attr-defined]  # no queue to look at: stop the call
        client = backend.client
        try:
            queue = await client.get_queue()
            pending = {item[1] for item in queue.get("queue_pending", [])}
            if task.prompt_id in pending:
                await client.delete_from_queue([task.prompt_id])
                queue = await client.get_queue()
                if task.prompt_id not in {item[1] for item in queue.get("queue_running", [])}:
                    return "deleted"
            await client.interrupt(task.prompt_id)
            return "interrupted"
        except ComfyGateError as exc:
            log.warning("could not stop task %s on %s: %s", task.task_id, backend.name, exc.message)
            return "unreachable"
