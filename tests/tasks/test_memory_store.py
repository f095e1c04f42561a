"""The task store: finished tasks beyond the newest few are compacted, and still served and listed as before."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.task import Task, TaskStatus
from tasks.memory_store import CompactTask, TaskStore
from tests.api.routers.test_task_events import read_events
from tests.conftest import Gate
from tests.protocol import load_workflow


def make_task(i: int, status: TaskStatus = TaskStatus.COMPLETED) -> Task:
    task = Task(task_id=f"t{i:03}", workflow={"1": {"class_type": "X", "inputs": {"i": i}}}, prompt_id=f"p{i}")
    task.created_at = 1000.0 + i
    task.status = status
    if status.final:
        task.started_at, task.finished_at = 1000.5 + i, 1001.25 + i
        task.progress = {"percent": 100.0, "nodes_done": 1, "nodes_total": 1, "node": "1"}
        task.node_outputs = {"1": {"text": [f"out {i}"]}}
        task.outputs = [{"filename": f"f{i}.png", "size": i, "comfyui": {"type": "output"}}]
        task.extra = {"number": i}
        if status != TaskStatus.COMPLETED:
            task.error = {"type": status.value, "message": "no"}
    return task


def finish(store: TaskStore, task: Task, status: TaskStatus = TaskStatus.COMPLETED) -> None:
    task.status = status
    store.finished(task)


def test_compacted_tasks_read_back_equal_and_leave_the_prompt_index() -> None:
    store = TaskStore(limit=100, full_finished=2)
    tasks = [make_task(i, TaskStatus.RUNNING) for i in range(5)]
    before: dict[str, dict[str, Any]] = {}
    for task in tasks:
        store.add(task)
    for task in tasks[:4]:
        finish(store, task, TaskStatus.FAILED if task.task_id == "t001" else TaskStatus.COMPLETED)
        before[task.task_id] = task.to_dict(include_workflow=True)
    entries = store._tasks
    assert [type(entries[t.task_id]) for t in tasks] == [CompactTask, CompactTask, Task, Task, Task]
    for task_id, body in before.items():
        got = store.get(task_id)
        assert got is not None and got.to_dict(include_workflow=True) == body
        original = next(t for t in tasks if t.task_id == task_id)
        assert json.dumps(got.to_dict()) == json.dumps(original.to_dict())  # same answer, byte for byte
    assert store.get("t003") is tasks[3]  # recent ones stay the very objects
    # ComfyUI's events look tasks up by prompt id: compacted ones are out of that index, find() still sees them
    assert store.by_prompt("p0") is None and store.by_prompt("p4") is tasks[4]
    found = store.find("p0")
    assert found is not None and found.task_id == "t000"
    assert store.find("t001") is not None and store.find("p-unknown") is None
    big = make_task(8)
    big.node_outputs = {"2": {"text": ["tensor([[0.0000, 0.7412],\n" * 100]}}  # repetitive: compressed
    squeezed = CompactTask(big)
    assert len(squeezed.blob) < 600 and squeezed.task().to_dict(include_workflow=True) == big.to_dict(
        include_workflow=True
    )
    odd = make_task(9)
    odd.extra["when"] = object()  # not a JSON type: compacted as the API would show it (str)
    assert CompactTask(odd).task().extra["when"].startswith("<object object")
    assert store.counts() == {"pending": 0, "queued": 0, "running": 1, "completed": 3, "failed": 1,
                              "interrupted": 0, "timeout": 0}  # fmt: skip


def test_query_over_compacted_tasks_filters_pages_and_orders_newest_first() -> None:
    store = TaskStore(limit=100, full_finished=3)
    for i in range(12):
        task = make_task(i, TaskStatus.RUNNING)
        store.add(task)
        if i % 4 != 3:  # t003, t007, t011 keep running
            finish(store, task, TaskStatus.FAILED if i % 4 == 2 else TaskStatus.COMPLETED)
    total, page = store.query(None, 0, 50)
    assert total == 12 and [t.task_id for t in page] == [f"t{i:03}" for i in range(11, -1, -1)]
    total, page = store.query({TaskStatus.COMPLETED}, 1, 3)
    assert total == 6 and [t.task_id for t in page] == ["t008", "t005", "t004"]
    total, page = store.query({TaskStatus.FAILED, TaskStatus.RUNNING}, 0, 4)
    assert total == 6 and [t.task_id for t in page] == ["t011", "t010", "t007", "t006"]
    assert [t.task_id for t in store.unfinished()] == ["t003", "t007", "t011"]
    assert sum(isinstance(e, CompactTask) for e in store._tasks.values()) == 6


def test_history_limit_drops_oldest_finished_compacted_or_not_never_unfinished() -> None:
    store = TaskStore(limit=4, full_finished=2)
    running = make_task(0, TaskStatus.RUNNING)
    store.add(running)
    for i in range(1, 10):
        task = make_task(i, TaskStatus.RUNNING)
        store.add(task)
        finish(store, task)
    assert [t.task_id for t in store.all()] == ["t000", "t006", "t007", "t008", "t009"]
    assert store.counts()["completed"] == 4 and store.counts()["running"] == 1
    assert store.get("t005") is None and store.by_prompt("p5") is None and store.find("p5") is None
    finish(store, running, TaskStatus.TIMEOUT)
    assert [t.task_id for t in store.all()] == ["t006", "t007", "t008", "t009"]  # the oldest finished: t000
    # Tasks read back from the durable store arrive already final: they are compacted the same way
    loaded = TaskStore(limit=4, full_finished=1)
    for i in range(6):
        loaded.add(make_task(i))
    assert [t.task_id for t in loaded.all()] == ["t002", "t003", "t004", "t005"]
    assert sum(isinstance(e, CompactTask) for e in loaded._tasks.values()) == 3


@pytest.mark.parametrize("task_store", ["memory", "sqlite"])
def test_compacted_finished_tasks_are_served_listed_and_interruptible(
    emulator: Any, gate_factory: Any, task_store: str
) -> None:
    gate: Gate = gate_factory([emulator.url], task_store=task_store, full_finished_tasks=1)
    workflow = load_workflow("invert_save.json")
    first = gate.submit(workflow, wait=True).json()
    assert first["status"] == "completed", first
    seen = gate.task(first["task_id"])
    failed = gate.submit(workflow, wait=True).json()  # (completed too: the status filter below takes both)
    last = gate.submit(workflow, wait=True).json()
    store = gate.server.app.state.services.store
    assert isinstance(store._tasks[first["task_id"]], CompactTask)  # the two older ones are compacted now
    again = gate.task(first["task_id"])
    assert again == seen and again["outputs"] and again["node_outputs"]
    listed = gate.client.get("/api/tasks", params={"limit": 2}).json()
    assert listed["total"] == 3 and [t["task_id"] for t in listed["tasks"]] == [last["task_id"], failed["task_id"]]
    page = gate.client.get("/api/tasks", params={"offset": 2, "status": "completed,failed"}).json()
    assert page["total"] == 3 and page["tasks"] == [seen]
    history = gate.client.get("/api/history").json()
    assert history["total"] == 3 and history["tasks"][-1] == seen
    # interrupt by prompt id (ComfyUI's name for it) of a finished, compacted task: answered with the task
    answer = gate.client.post(f"/api/interrupt/{seen['prompt_id']}")
    assert answer.status_code == 200 and answer.json()["task_id"] == first["task_id"]
    assert answer.json()["status"] == "completed"
    counts = gate.client.get("/api/health").json()["tasks"]
    assert sum(counts.values()) == 3 and counts["completed"] >= 1
    # SSE of a compacted task: its final event, same id as when the task had just ended; then 204
    events = [e for e in read_events(gate, first["task_id"]) if "data" in e]
    assert len(events) == 1 and events[0]["data"]["status"] == "completed"
    assert events[0]["data"]["outputs"] == seen["outputs"] and int(events[0]["id"]) > 1
    done = httpx.get(
        f"{gate.url}/api/task/{first['task_id']}/events", headers={"Last-Event-ID": events[0]["id"]}, timeout=10.0
    )
    assert done.status_code == 204


def test_restart_reads_history_back_compacted(emulator: Any, gate_factory: Any) -> None:
    gate: Gate = gate_factory([emulator.url], full_finished_tasks=1)
    workflow = load_workflow("invert_save.json")
    done = [gate.submit(workflow, wait=True).json()["task_id"] for _ in range(3)]
    before = [gate.task(task_id) for task_id in done]
    gate.server.stop()
    new: Gate = gate_factory([emulator.url], full_finished_tasks=1)
    store = new.server.app.state.services.store
    assert [type(store._tasks[t]) for t in done] == [CompactTask, CompactTask, Task]  # loaded oldest first
    assert [new.task(task_id) for task_id in done] == before
    listed = new.client.get("/api/history").json()
    assert listed["total"] == 3 and listed["tasks"] == before[::-1]


def test_scan_pages_from_a_task_and_skips_other_statuses_without_shifting() -> None:
    store = TaskStore(limit=100, full_finished=2)  # most finished ones compacted: scan decodes those too
    for i in range(6):
        task = make_task(i, TaskStatus.RUNNING)
        store.add(task)
        finish(store, task, TaskStatus.FAILED if i == 3 else TaskStatus.COMPLETED)
    ids = [t.task_id for t in store.scan()]
    assert ids == ["t005", "t004", "t003", "t002", "t001", "t000"]
    store.add(make_task(6, TaskStatus.RUNNING))  # a newer task does not move a page that starts at a task
    assert [t.task_id for t in store.scan(before="t003")] == ["t002", "t001", "t000"]
    assert [t.task_id for t in store.scan(status={TaskStatus.COMPLETED})][:2] == ["t005", "t004"]
    assert [t.task_id for t in store.scan(before="t004", status={TaskStatus.FAILED})] == ["t003"]
    assert list(store.scan(before="nope")) == []
    assert store.get("t001") == next(store.scan(before="t002"))
