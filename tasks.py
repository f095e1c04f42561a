"""Tasks: one per submission, with its status, progress, outputs and error, kept in a bounded store."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TaskStatus(str, Enum):
    PENDING = "pending"  # accepted by ComfyGate, not yet handed to a backend
    QUEUED = "queued"  # accepted by a backend, waiting in its queue
    RUNNING = "running"  # the backend is executing it
    COMPLETED = "completed"  # finished; outputs are on disk in outputs/
    FAILED = "failed"  # a node raised, the backend vanished, or outputs could not be fetched
    INTERRUPTED = "interrupted"  # stopped on request, while running or still queued
    TIMEOUT = "timeout"  # took longer than its timeout and was stopped

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.TIMEOUT})


@dataclass(slots=True)
class Task:
    task_id: str
    workflow: dict[str, Any]
    prompt_id: str
    params: dict[str, Any] = field(default_factory=dict)
    workflow_name: str | None = None
    backend: str | None = None
    pinned_backend: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    created_at: float = field(default_factory=time.time)
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    timeout: float = 600.0
    progress: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    node_outputs: dict[str, Any] = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def execution_time(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return round(end - self.started_at, 3)

    def summary(self) -> dict[str, Any]:
        """What every task_update carries: small, so it can go to every listener at each step."""
        return {
            "task_id": self.task_id,
            "prompt_id": self.prompt_id,
            "status": self.status.value,
            "backend": self.backend,
            "progress": self.progress,
            "error": self.error,
        }

    def to_dict(self, *, include_workflow: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_id": self.task_id,
            "prompt_id": self.prompt_id,
            "status": self.status.value,
            "workflow_name": self.workflow_name,
            "backend": self.backend,
            "params": self.params,
            "created_at": self.created_at,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "execution_time": self.execution_time,
            "timeout": self.timeout,
            "progress": self.progress,
            "outputs": self.outputs,
            "node_outputs": self.node_outputs,
            "cached_nodes": self.cached_nodes,
            "error": self.error,
            "attempts": self.attempts,
        }
        body.update(self.extra)
        if include_workflow:
            body["workflow"] = self.workflow
        return body


class TaskStore:
    """All tasks in memory, in creation order. Finished tasks beyond ``limit`` are dropped oldest first.

    Unfinished tasks are never dropped: losing a task that still runs would lose its outputs.
    """

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._by_prompt: dict[str, str] = {}
        self._finished = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        self._by_prompt[task.prompt_id] = task.task_id
        if task.status.final:
            self._finished += 1
            self._trim()

    def forget(self, task: Task) -> None:
        """Remove a task that was never accepted (its backend refused it)."""
        self._tasks.pop(task.task_id, None)
        self._by_prompt.pop(task.prompt_id, None)

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def by_prompt(self, prompt_id: str | None) -> Task | None:
        if prompt_id is None:
            return None
        task_id = self._by_prompt.get(prompt_id)
        return self._tasks.get(task_id) if task_id else None

    def reindex(self, task: Task, old_prompt_id: str) -> None:
        self._by_prompt.pop(old_prompt_id, None)
        self._by_prompt[task.prompt_id] = task.task_id

    def finished(self, task: Task) -> None:
        """Call once when a task reaches a final status, so the limit can be enforced."""
        self._finished += 1
        self._trim()

    def _trim(self) -> None:
        if self._finished <= self.limit:
            return
        for task_id in list(self._tasks):
            if self._finished <= self.limit:
                break
            task = self._tasks[task_id]
            if task.status.final:
                del self._tasks[task_id]
                self._by_prompt.pop(task.prompt_id, None)
                self._finished -= 1

    def all(self) -> Iterable[Task]:
        return self._tasks.values()

    def unfinished(self) -> list[Task]:
        return [t for t in self._tasks.values() if not t.status.final]

    def query(
        self, status: set[TaskStatus] | None = None, offset: int = 0, limit: int = 50, newest_first: bool = True
    ) -> tuple[int, list[Task]]:
        tasks: Iterable[Task] = reversed(self._tasks.values()) if newest_first else self._tasks.values()
        if status:
            tasks = [t for t in tasks if t.status in status]
        else:
            tasks = list(tasks)
        return len(tasks), tasks[offset : offset + limit]
