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
from backends.comfyui_outputs import OutputRef, output_refs
from config import Settings
from core.errors import ComfyGateError
from core.media_types import content_type
from core.task import Task, TaskStatus
from security.safe_paths import sanitize_filename
from tasks.pool import Pool
from tasks.runtime import Jobs, Timers
from tasks.store import TaskStore
from tasks.updates import Updates

MAX_TEXT_BYTES = 10 * 1024 * 1024  # a text output longer than this is cut when saved
INLINE_TEXT_BYTES = 16 * 1024  # and the first this many bytes are kept on the task itself

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
        task.progress.update({"percent": 100.0, "nodes_done": task.progress.get("nodes_total", len(task.workflow))})
        self.finish(task, TaskStatus.COMPLETED)

    async def _download_outputs(self, task: Task, backend: ComfyUIBackend) -> list[dict[str, Any]]:
        """Every output a node reported, whatever its shape (images, gifs, audio, 3d, text, bare names)."""
        refs = output_refs(task.node_outputs)
        jobs = [
            self._save_text(task, ref, index) if ref.kind == "text" else self._download_one(task, backend, ref)
            for index, ref in enumerate(refs)
        ]
        return list(await asyncio.gather(*jobs)) if jobs else []

    async def _download_one(self, task: Task, backend: ComfyUIBackend, ref: OutputRef) -> dict[str, Any]:
        kind = "output" if ref.type == "output" else "temp"  # a backend's answer never picks a local folder
        folder = self.settings.outputs_dir if kind == "output" else self.temp_dir
        local = f"{task.task_id[:8]}_{sanitize_filename(ref.filename)}"
        size = await backend.client.download(ref.filename, ref.subfolder, ref.type, folder / local)
        entry = self._entry(ref, local, kind, size)
        entry["comfyui"] = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type, **dict(ref.extra)}
        return entry

    async def _save_text(self, task: Task, ref: OutputRef, index: int) -> dict[str, Any]:
        """A text output (e.g. PreviewAny) becomes a .txt file like any other output, and is inlined when short."""
        data = (ref.text or "").encode("utf-8")[:MAX_TEXT_BYTES]
        local = sanitize_filename(f"{task.task_id[:8]}_{ref.node_id}_text_{index}.txt")
        await asyncio.to_thread((self.settings.outputs_dir / local).write_bytes, data)
        entry = self._entry(ref, local, "output", len(data))
        text = data[:INLINE_TEXT_BYTES].decode("utf-8", errors="ignore")
        entry["text"] = text
        if len(data) > INLINE_TEXT_BYTES:
            entry["text_truncated"] = True
        entry["comfyui"] = {"key": ref.key}
        return entry

    @staticmethod
    def _entry(ref: OutputRef, local: str, kind: str, size: int) -> dict[str, Any]:
        query = "" if kind == "output" else "?type=temp"
        entry: dict[str, Any] = {
            "filename": local,
            "kind": ref.kind,
            "content_type": "text/plain; charset=utf-8" if ref.kind == "text" else content_type(local),
            "size": size,
            "node_id": ref.node_id,
            "type": kind,
            "url": f"/api/image/{local}{query}",
        }
        if ref.animated:
            entry["animated"] = True
        return entry

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
