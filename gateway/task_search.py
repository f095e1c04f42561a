"""The task history's search: a task id prefix, a saved workflow's name, or text in a parameter.

The store's own query filters by status only (its seam stays small for other stores); the search runs
over the store's ``scan``, which is bounded by the history limit plus the unfinished tasks. Older tasks are
held compacted and each is decoded to be searched (~10 µs): over 100,000 that is a second of CPU, so the
scan gives the event loop back every ``SLICE`` tasks and goes on from the last task it saw (a cursor that
does not shift when tasks are added meanwhile).
"""

from __future__ import annotations

import asyncio

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


SLICE = 256  # tasks searched per turn of the event loop (a few ms of decoding at most)


async def search_tasks(
    store: TaskStore,
    status: set[TaskStatus] | None,
    q: str | None,
    workflow_name: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[Task]]:
    """(how many match, the page asked for), newest first."""
    needle = (q or "").strip().lower() or None
    total, page = 0, []
    last: str | None = None
    scan = store.scan(status=status)
    while True:
        try:
            for _ in range(SLICE):
                task = next(scan)
                last = task.task_id
                if task_matches(task, needle, workflow_name):
                    if offset <= total < offset + limit:
                        page.append(task)
                    total += 1
        except StopIteration:
            return total, page
        except RuntimeError:  # tasks were added meanwhile: a new scan, on from the last task seen (if any)
            scan = store.scan(before=last, status=status) if last is not None else store.scan(status=status)
        await asyncio.sleep(0)
