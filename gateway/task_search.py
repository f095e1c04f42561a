"""The task history's search: a task id prefix, a saved workflow's name, or text in a parameter.

The store's own query filters by status only (its seam stays small for other stores); the search runs
over what that query returns, which is bounded by the history limit plus the unfinished tasks.
"""

from __future__ import annotations

from core.task import Task, TaskStatus
from tasks.store import TaskStore


def task_matches(task: Task, needle: str | None, workflow_name: str | None) -> bool:
    """Case-insensitive: ``needle`` in the task id's start, the workflow name or any text parameter."""
    if workflow_name is not None and task.workflow_name != workflow_name:
        return False
    if not needle:
        return True
    if task.task_id.startswith(needle) or needle in (task.workflow_name or "").lower():
        return True
    return any(isinstance(v, str) and needle in v.lower() for v in task.params.values())


def search_tasks(
    store: TaskStore,
    status: set[TaskStatus] | None,
    q: str | None,
    workflow_name: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[Task]]:
    """(how many match, the page asked for), newest first."""
    needle = (q or "").strip().lower() or None
    _, every = store.query(status, 0, max(len(store), 1))
    matches = [t for t in every if task_matches(t, needle, workflow_name)]
    return len(matches), matches[offset : offset + limit]
