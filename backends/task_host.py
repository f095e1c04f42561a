"""What a backend that drives its own tasks (ViewComfy: no ComfyUI WebSocket) reports its progress to.

A typed seam instead of the task manager's class: backends sit below ``tasks/`` and must not import it.
The manager fulfils this structurally; a test can hand a backend any object that does.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.task import Task, TaskStatus


class EventPublisher(Protocol):
    def publish(self, message: dict[str, Any], task_id: str | None = None) -> None: ...


class TaskHost(Protocol):
    @property
    def hub(self) -> EventPublisher:
        """Where backend-level messages (``backend_update``) go."""
        ...

    def mark_running(self, task: Task) -> None: ...

    def publish(self, task: Task) -> None:
        """Tell listeners about a change the backend made to ``task.progress``."""
        ...

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None: ...

    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None: ...

    def finish_interrupted(self, task: Task, reason: str) -> None: ...
