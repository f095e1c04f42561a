"""The manager's parts together (pool, submitter, endings, recovery) on in-memory fake backends: no servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings
from core.errors import PromptRejected, ServiceBusy
from core.task import Task, TaskStatus
from events.hub import EventHub
from tasks.manager import TaskManager
from tasks.memory_store import TaskStore
from tests.tasks.fakes import FakeBackend

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}


def settings(tmp_path: Path, **over: object) -> Settings:
    return Settings(outputs_dir=tmp_path / "out", data_dir=tmp_path / "data", _env_file=None, **over)  # type: ignore[call-arg]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[object]:
    managers: list[TaskManager] = []

    async def build(*backends: FakeBackend, **over: object) -> tuple[TaskManager, list[tuple[str, str]]]:
        manager = TaskManager(settings(tmp_path, **over), TaskStore(), EventHub())
        seen: list[tuple[str, str]] = []
        manager.add_observer(lambda task, change: seen.append((task.task_id, change)))
        for backend in backends:
            manager.add_backend(backend)
        await manager.start()
        managers.append(manager)
        return manager, seen

    yield build
    for manager in managers:
        await manager.stop()


async def until(predicate: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 (a test polls state it does not own)
            await asyncio.sleep(0.005)


async def test_a_task_goes_to_the_least_loaded_able_backend(make: object) -> None:
    busy, idle, lacking = FakeBackend("busy"), FakeBackend("idle"), FakeBackend("lacking", classes={"EmptyImage"})
    busy.inflight.update({"x", "y"})
    manager, seen = await make(busy, idle, lacking)  # type: ignore[operator]
    task = await manager.submit(WORKFLOW)
    assert task.backend == "idle" and idle.received == [task.task_id] and task.status == TaskStatus.QUEUED
    assert manager.store.get(task.task_id) is task and seen == [(task.task_id, "created")]


async def test_a_remote_backend_only_gets_work_no_local_one_can_take(make: object) -> None:
    local, remote = FakeBackend("local"), FakeBackend("remote", remote=True)
    manager, _ = await make(remote, local)  # type: ignore[operator]
    remote_load_before = remote.load
    assert (await manager.submit(WORKFLOW)).backend == "local"
    local.up = False
    assert (await manager.submit(WORKFLOW)).backend == "remote" and remote.load == remote_load_before + 1


async def test_held_while_no_backend_is_up_then_dispatched_in_order(make: object) -> None:
    backend = FakeBackend("b", up=False)
    manager, seen = await make(backend)  # type: ignore[operator]
    first, second = await manager.submit(WORKFLOW), await manager.submit(WORKFLOW)
    assert first.status == second.status == TaskStatus.PENDING and list(manager.pending) == [
        first.task_id,
        second.task_id,
    ]
    backend.up = True
    manager.pool.wake()
    await until(lambda: len(backend.received) == 2)
    assert backend.received == [first.task_id, second.task_id] and not manager.pending
    assert first.status == TaskStatus.QUEUED
    assert [c for t, c in seen if t == first.task_id] == ["created", "status"]


async def test_a_full_queue_is_a_503_and_keeps_nothing(make: object) -> None:
    manager, _ = await make(FakeBackend("b", up=False), max_pending_tasks=1)  # type: ignore[operator]
    await manager.submit(WORKFLOW)
    with pytest.raises(ServiceBusy, match="queue is full"):
        await manager.submit(WORKFLOW)
    assert len(manager.store) == 1


async def test_a_refused_prompt_is_raised_and_not_stored(make: object) -> None:
    backend = FakeBackend("b")
    backend.refuse = PromptRejected({"message": "bad"}, {"2": {"errors": ["x"]}})
    manager, seen = await make(backend)  # type: ignore[operator]
    with pytest.raises(PromptRejected) as caught:
        await manager.submit(WORKFLOW)
    assert caught.value.node_errors == {"2": {"errors": ["x"]}}
    assert len(manager.store) == 0 and not backend.inflight and seen == []


async def test_a_held_task_refused_later_fails_with_comfyuis_errors(make: object) -> None:
    backend = FakeBackend("b", up=False)
    manager, _ = await make(backend)  # type: ignore[operator]
    task = await manager.submit(WORKFLOW)
    backend.refuse = PromptRejected({"message": "bad"}, {"2": {"errors": ["x"]}})
    backend.up = True
    manager.pool.wake()
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.FAILED and task.error is not None
    assert task.error["type"] == "prompt_rejected" and task.error["node_errors"] == {"2": {"errors": ["x"]}}


async def test_no_backend_can_run_the_classes(make: object) -> None:
    manager, _ = await make(FakeBackend("b", classes={"EmptyImage"}))  # type: ignore[operator]
    with pytest.raises(ServiceBusy, match="every node class"):
        await manager.submit(WORKFLOW)


async def test_interrupts(make: object) -> None:
    backend = FakeBackend("b")
    manager, seen = await make(backend)  # type: ignore[operator]
    queued = await manager.submit(WORKFLOW)
    await manager.interrupt(queued)
    assert queued.status == TaskStatus.INTERRUPTED and backend.cancelled == [queued.task_id]
    assert not backend.inflight and seen[-1] == (queued.task_id, "finished")
    backend.cancel_answer = "interrupted"  # running: it ends when the backend confirms
    running = await manager.submit(WORKFLOW)
    await manager.interrupt(running)
    assert running.status == TaskStatus.QUEUED and running.extra["interrupt_requested"]
    backend.up = False
    held = await manager.submit(WORKFLOW)
    await manager.interrupt(held)
    assert held.status == TaskStatus.INTERRUPTED and held.error == {
        "type": "interrupted",
        "message": "cancelled before dispatch",
    }


async def test_timeout_ends_the_task_and_stops_it_on_its_backend(make: object) -> None:
    backend = FakeBackend("b")
    manager, _ = await make(backend)  # type: ignore[operator]
    task = await manager.submit(WORKFLOW, timeout=0.05)
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.TIMEOUT and task.error is not None and "0.05" in task.error["message"]
    await until(lambda: backend.cancelled == [task.task_id])
    assert len(manager.timers) == 0


async def test_finish_is_final_once(make: object) -> None:
    manager, seen = await make(FakeBackend("b"))  # type: ignore[operator]
    task = await manager.submit(WORKFLOW)
    manager.finish(task, TaskStatus.COMPLETED)
    manager.finish(task, TaskStatus.FAILED, {"type": "late"})
    assert task.status == TaskStatus.COMPLETED and task.error is None
    assert [c for _, c in seen].count("finished") == 1


async def test_recover_after_a_restart(make: object) -> None:
    backend = FakeBackend("b", up=False)
    manager, _ = await make(backend)  # type: ignore[operator]
    held = Task(task_id="h" * 32, prompt_id="p-h", workflow=WORKFLOW, status=TaskStatus.PENDING)
    queued_on_gone = Task(
        task_id="q" * 32, prompt_id="p-q", workflow=WORKFLOW, status=TaskStatus.QUEUED, backend="gone"
    )
    ran_on_gone = Task(
        task_id="r" * 32, prompt_id="p-r", workflow=WORKFLOW, status=TaskStatus.RUNNING, backend="gone", started_at=1.0
    )
    for task in (held, queued_on_gone, ran_on_gone):
        manager.store.add(task)
    manager.recover([held, queued_on_gone, ran_on_gone])
    assert held.status == TaskStatus.PENDING and queued_on_gone.status == TaskStatus.PENDING
    assert queued_on_gone.prompt_id != "p-q" and manager.store.by_prompt(queued_on_gone.prompt_id) is queued_on_gone
    assert ran_on_gone.status == TaskStatus.FAILED and ran_on_gone.error is not None
    assert ran_on_gone.error["type"] == "backend_gone"
    backend.up = True
    manager.pool.wake()
    await until(lambda: len(backend.received) == 2)
    assert set(backend.received) == {held.task_id, queued_on_gone.task_id}


async def test_dispatch_hooks_see_the_chosen_backend_every_time(make: object) -> None:
    """A hook runs on each hand-over (direct, then from ComfyGate's queue); its extra_data is not stored."""
    first, second = FakeBackend("first"), FakeBackend("second", up=False)
    manager, _ = await make(first, second)  # type: ignore[operator]
    calls: list[tuple[str, str]] = []

    async def hook(task: Task, backend: object) -> dict[str, object]:
        calls.append((task.task_id, backend.name))  # type: ignore[attr-defined]
        return {"api_key_comfy_org": "secret"}

    manager.add_dispatch_hook(hook)
    direct = await manager.submit(WORKFLOW)
    first.up = False
    held = await manager.submit(WORKFLOW)
    assert held.status == TaskStatus.PENDING and calls == [(direct.task_id, "first")]
    second.up = True
    manager.pool.wake()
    await until(lambda: held.backend == "second")
    assert calls == [(direct.task_id, "first"), (held.task_id, "second")]
    assert first.extra_data == [{"api_key_comfy_org": "secret"}] == second.extra_data
    assert "secret" not in repr(direct.to_dict(include_workflow=True))


async def test_a_hook_that_refuses_keeps_nothing(make: object) -> None:
    backend = FakeBackend("only")
    manager, _ = await make(backend)  # type: ignore[operator]

    async def refuse(task: Task, backend: object) -> None:
        raise PromptRejected({"message": "no"}, {})

    manager.add_dispatch_hook(refuse)
    with pytest.raises(PromptRejected):
        await manager.submit(WORKFLOW)
    assert len(manager.store) == 0 and backend.received == [] and not backend.inflight


async def test_a_caller_may_name_the_task_once(make: object) -> None:
    """ViewComfy's current API names its runs: the task id is the caller's, and a second use is a 409."""
    from core.errors import Conflict

    manager, _ = await make(FakeBackend("one"))  # type: ignore[operator]
    task = await manager.submit(WORKFLOW, task_id="0" * 32)
    assert task.task_id == "0" * 32 and manager.store.get("0" * 32) is task
    with pytest.raises(Conflict, match="exists already"):
        await manager.submit(WORKFLOW, task_id="0" * 32)
