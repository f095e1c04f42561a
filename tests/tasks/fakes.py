"""An in-memory backend for unit tests of the manager's parts: it fulfils ``Backend`` and records calls."""

from __future__ import annotations

from typing import Any

from backends.base import BackendBase, TaskHost
from core.errors import PromptRejected
from core.task import Task


class FakeBackend(BackendBase):
    kind = "fake"

    def __init__(
        self, name: str, *, classes: set[str] | None = None, up: bool = True, remote: bool = False, live: bool = True
    ) -> None:
        self.name = name
        self.classes = classes
        self.up = up
        self.remote = remote
        self.live_health = live
        self.inflight: set[str] = set()
        self.queue_remaining = 0
        self.down_since = None
        self.last_error = None
        self.received: list[str] = []
        self.extra_data: list[dict[str, Any] | None] = []  # what each hand-over carried
        self.cancelled: list[str] = []
        self.refuse: PromptRejected | None = None
        self.cancel_answer = "deleted"

    @property
    def url(self) -> str:
        return f"fake://{self.name}"

    @property
    def healthy(self) -> bool:
        return self.up

    @property
    def load(self) -> int:
        return len(self.inflight)

    def can_run(self, classes: set[str]) -> bool:
        return self.classes is None or classes <= self.classes

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def hand_over(self, task: Task, host: TaskHost, extra_data: dict[str, Any] | None = None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.received.append(task.task_id)
        self.extra_data.append(extra_data)

    async def cancel(self, task: Task) -> str:
        self.cancelled.append(task.task_id)
        return self.cancel_answer

    async def probe(self) -> dict[str, Any] | None:
        return {} if self.up else None
