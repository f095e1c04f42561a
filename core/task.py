"""Tasks: one per submission, with its status, progress, outputs and error, kept in a bounded store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

OWN_PARTNER_KEY = "own_partner_key"  # task.extra: submitted with its own api_key_comfy_org (kept in memory only)


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
    # ComfyUI ran the prompt but dropped outputs that failed validation (a 200 with node_errors).
    warnings: list[dict[str, Any]] = field(default_factory=list)
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
            **({"warnings": self.warnings} if self.warnings else {}),
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
            "warnings": self.warnings,
            "attempts": self.attempts,
        }
        body.update(self.extra)
        if include_workflow:
            body["workflow"] = self.workflow
        return body
