"""How a task ends: outputs downloaded then completed, failed, timed out or interrupted.

Outputs are in ComfyGate's hands before a task is called completed (``outputs``: fetched from ComfyUI's
``executed`` on; the task completes once every output node has reported, or at ``execution_success``);
a small one may reach ``outputs/`` a few ms later (``output_fetch``: served from memory meanwhile).
``finish`` is the single way to a final status: it releases the task from the pool and its timer,
tells observers and listeners, and drops the workflow from memory when the durable store keeps it.
Timeouts and interrupts live here too: both end a task and stop it on its backend.
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
from core.waits import until
from tasks.outputs import Outputs
from tasks.placement import OutputKeeper
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
        outputs: Outputs,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.updates = updates
        self.jobs = jobs
        self.timers = timers
        self.temp_dir = temp_dir
        self.outputs = outputs
        self._completing: set[str] = set()  # tasks whose outputs are being gathered before they complete
        self._completion_ended = asyncio.Event()  # set whenever a task leaves ``_completing``
        # Set by the durable store: finished tasks then drop their workflow, loaded back on demand.
        self.workflow_loader: WorkflowLoader | None = None
        # Cluster mode: outputs are copied to shared storage before the task is called completed.
        self.output_keeper: OutputKeeper | None = None

    # --- completed -------------------------------------------------------------------------------
    def output_named(self, task: Task, backend: ComfyUIBackend, node_id: str) -> None:
        """ComfyUI's ``executed``: fetch the node's files now; complete once every output node has reported."""
        self.outputs.named(task, backend, node_id, task.node_outputs.get(node_id))
        if self.outputs.all_reported(task, backend):
            self.start_completion(task, backend)

    def start_completion(self, task: Task, backend: ComfyUIBackend) -> None:
        """Gather the outputs, then complete the task (once, whoever asks first: the last output or the end)."""
        if task.task_id in self._completing or task.status.final:
            return
        self._completing.add(task.task_id)
        self.jobs.spawn(self.complete_from(task, backend), name=f"complete {task.task_id}")

    def restarting(self, task: Task) -> None:
        """The task runs again from the start elsewhere: forget the run that was cut off, and its files."""
        self._left(task.task_id)
        self.outputs.drop(task)
        task.node_outputs = {}

    async def complete_from(
        self, task: Task, backend: ComfyUIBackend, node_outputs: dict[str, Any] | None = None
    ) -> None:
        """Download every output file, then call the task completed (or failed if a file is missing)."""
        if node_outputs is not None:
            task.node_outputs = node_outputs
        self._completing.add(task.task_id)
        try:
            task.outputs = await self.outputs.gather(task, backend)
        except ComfyGateError as exc:
            self.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": exc.message})
            return
        except OSError as exc:  # outputs/ not writable, disk full: the task ends now, not at its timeout
            message = f"could not write an output file in ComfyGate's outputs folder: {exc}"
            self.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": message})
            return
        task.progress.update({"percent": 100.0, "nodes_done": task.progress.get("nodes_total", len(task.workflow))})
        self.finish(task, TaskStatus.COMPLETED)
        if self.output_keeper is not None and task.status == TaskStatus.COMPLETED:
            self.output_keeper.keep_behind(task)  # cluster mode: into the shared store, after the fact

    async def _kept(self, task: Task) -> bool:
        """Cluster mode, a ViewComfy run: its outputs copied to shared storage (else the task fails, and False)."""
        if self.output_keeper is None or not task.outputs:
            return True
        try:
            await self.output_keeper.keep(task)
        except ComfyGateError as exc:
            self.finish(task, TaskStatus.FAILED, error={"type": "output_store_failed", "message": exc.message})
            return False
        return True

    def _left(self, task_id: str) -> None:
        if task_id in self._completing:
            self._completing.discard(task_id)
            self._completion_ended.set()

    async def completions_ended(self, task_ids: set[str], timeout: float) -> bool:
        """Wait until none of ``task_ids`` is gathering its outputs (True), at most ``timeout`` s (False)."""
        return await until(lambda: self._completing.isdisjoint(task_ids), self._completion_ended, timeout)

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None:
        """For backends that fetch their own outputs (ViewComfy): files are already in outputs/ (in cluster mode
        they are copied to shared storage before the task is called completed)."""
        task.outputs = outputs
        if self.output_keeper is not None and outputs:
            self._completing.add(task.task_id)
            self.jobs.spawn(self._complete_kept(task), name=f"complete {task.task_id}")
            return
        task.progress.update({"percent": 100.0})
        self.finish(task, TaskStatus.COMPLETED)

    async def _complete_kept(self, task: Task) -> None:
        if await self._kept(task):
            task.progress.update({"percent": 100.0})
            self.finish(task, TaskStatus.COMPLETED)

    # --- the one way to a final status -----------------------------------------------------------
    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None:
        if task.status.final:
            return
        self._left(task.task_id)
        if status == TaskStatus.COMPLETED:
            self.outputs.forget(task)
        else:
            self.outputs.drop(task)
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
