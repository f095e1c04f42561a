"""The ``TaskStore`` seam: where tasks live. Today the in-memory store (``memory_store``), made durable by
the SQLite writer (``sqlite_store``) observing it; a shared store for several replicas plugs in here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from core.task import Task, TaskStatus


class TaskStore(Protocol):
    def __len__(self) -> int: ...

    def add(self, task: Task) -> None: ...

    def forget(self, task: Task) -> None:
        """Drop a task that was never accepted (its backend refused it)."""
        ...

    def get(self, task_id: str) -> Task | None: ...

    def by_prompt(self, prompt_id: str | None) -> Task | None: ...

    def find(self, prompt_or_task_id: str) -> Task | None: ...

    def reindex(self, task: Task, old_prompt_id: str) -> None:
        """The task got a new prompt id (resubmitted elsewhere)."""
        ...

    def finished(self, task: Task) -> None:
        """The task reached a final status: the store may compact it."""
        ...

    def all(self) -> Iterable[Task]: ...

    def unfinished(self) -> list[Task]: ...

    def counts(self) -> dict[str, int]: ...

    def query(
        self, status: set[TaskStatus] | None = None, offset: int = 0, limit: int = 50, newest_first: bool = True
    ) -> tuple[int, list[Task]]:
        """(total matching, one page of them)."""
        ...

    def scan(self, before: str | None = None, status: set[TaskStatus] | None = None) -> Iterator[Task]:
        """Newest first, from just after the task ``before`` (cursor pages: nothing shifts when tasks are
        added meanwhile); only tasks of ``status``. An unknown ``before`` yields nothing."""
        ...
