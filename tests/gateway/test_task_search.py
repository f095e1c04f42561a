"""The history search gives the event loop back while it decodes compacted tasks, and stays exact when tasks
are added while it runs."""

from __future__ import annotations

import asyncio

import gateway.task_search as task_search
from core.task import Task, TaskStatus
from gateway.task_search import search_tasks
from tasks.memory_store import TaskStore


def store_of(n: int) -> TaskStore:
    store = TaskStore(limit=n + 100, full_finished=10)  # all but the newest 10 compacted
    for i in range(n):
        task = Task(task_id=f"t{i:06d}", prompt_id=f"p{i}", workflow={}, params={"6.text": f"a cat, number {i}"})
        store.add(task)
        task.status = TaskStatus.COMPLETED
        store.finished(task)
    return store


async def test_a_search_over_many_tasks_lets_the_loop_run_and_finds_every_match() -> None:
    store = store_of(5000)
    turns = 0
    searching = True

    async def other_work() -> None:
        nonlocal turns
        while searching:
            turns += 1
            await asyncio.sleep(0)

    beside = asyncio.create_task(other_work())
    total, page = await search_tasks(store, None, "NUMBER 12", None, 0, 5)
    searching = False
    await beside
    expected = [f"t{i:06d}" for i in reversed(range(5000)) if "number 12" in f"a cat, number {i}"]
    assert total == len(expected) == 111
    assert [t.task_id for t in page] == expected[:5]
    assert turns >= 5000 // task_search.SLICE  # the loop ran between slices, not once at the end


async def test_tasks_added_during_a_search_neither_stop_it_nor_repeat_what_it_found() -> None:
    store = store_of(3000)
    adding = True

    async def submissions() -> None:
        i = 0
        while adding:
            store.add(Task(task_id=f"new{i}", prompt_id=f"np{i}", workflow={}, params={"6.text": "number 1 new"}))
            i += 1
            await asyncio.sleep(0)

    beside = asyncio.create_task(submissions())
    total, page = await search_tasks(store, {TaskStatus.COMPLETED}, "number 1", None, 0, 10_000)
    adding = False
    await beside
    ids = [t.task_id for t in page]
    assert len(ids) == len(set(ids)) == total
    assert ids == [f"t{i:06d}" for i in reversed(range(3000)) if str(i).startswith("1")]
