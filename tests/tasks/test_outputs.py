"""Output files fetched as soon as ComfyUI names them, and the task completed once every output has reported.

ComfyUI's events are fed to a real ``TaskManager`` whose backend is a real emulator (its ``/view`` serves
the files), so the rule is checked step by step; the last test runs it end to end through ComfyGate.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.comfyui import ComfyUIBackend
from backends.comfyui_events import ComfyUIEvent
from config import Settings
from core.task import Task, TaskStatus
from emulator.server import EmulatorThread
from events.hub import EventHub
from tasks import output_fetch
from tasks.manager import TaskManager
from tasks.memory_store import TaskStore
from tasks.output_cache import validators
from tests.conftest import Gate, submit_ok

TWO_OUTPUTS = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "first"}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "second"}},
}


@dataclass
class Rig:
    manager: TaskManager
    backend: ComfyUIBackend
    outputs_dir: Path
    files: dict[str, dict[str, Any]]  # node id → the file ComfyUI reported for it (really on the emulator)

    def running(self, workflow: dict[str, Any]) -> Task:
        task = Task(task_id=uuid.uuid4().hex, workflow=workflow, prompt_id=str(uuid.uuid4()), backend="comfyui-1")
        task.status = TaskStatus.RUNNING
        self.manager.store.add(task)
        self.backend.inflight.add(task.task_id)
        return task

    def event(self, task: Task, kind: str, **data: Any) -> None:
        self.manager.on_event(self.backend, ComfyUIEvent(kind, {**data, "prompt_id": task.prompt_id}))

    def executed(self, task: Task, node: str) -> None:
        self.event(task, "executed", node=node, display_node=node, output={"images": [self.files[node]]})

    def on_disk(self, task: Task) -> list[str]:
        return sorted(p.name for p in self.outputs_dir.glob(f"{task.task_id[:8]}_*"))


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (a test polls state it does not own)
            await asyncio.sleep(0.005)


@pytest.fixture
async def rig(tmp_path: Path, emulator: EmulatorThread) -> AsyncIterator[Rig]:
    async with httpx.AsyncClient(trust_env=False) as http:
        # Real files on the emulator, named the way ComfyUI names them.
        answer = (await http.post(f"{emulator.url}/prompt", json={"prompt": TWO_OUTPUTS})).json()
        history: dict[str, Any] = {}
        while not history:
            history = (await http.get(f"{emulator.url}/history/{answer['prompt_id']}")).json()
            await asyncio.sleep(0.01)
        outputs = history[answer["prompt_id"]]["outputs"]
        files = {node: outputs[node]["images"][0] for node in ("2", "4")}
        settings = Settings(outputs_dir=tmp_path / "out", data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
        manager = TaskManager(settings, TaskStore(), EventHub())
        backend = ComfyUIBackend(
            "comfyui-1", emulator.url, http, on_event=manager.on_event, on_state=manager.on_backend_state
        )
        manager.add_backend(backend)
        await backend.get_object_info()  # which classes are output nodes
        settings.outputs_dir.mkdir(parents=True)
        manager.temp_dir.mkdir(parents=True)
        try:
            yield Rig(manager, backend, settings.outputs_dir, files)
        finally:
            await manager.jobs.stop()


async def test_a_file_is_fetched_when_executed_names_it_and_the_last_output_completes(rig: Rig) -> None:
    task = rig.running(TWO_OUTPUTS)
    rig.event(task, "execution_start")
    assert rig.backend.running_prompt == task.prompt_id
    rig.executed(task, "2")
    await until(lambda: len(rig.on_disk(task)) == 1)  # fetched while node 4 has not even run
    assert task.status == TaskStatus.RUNNING
    rig.executed(task, "4")  # every output node has reported: nothing is left to run
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED, task.error
    await rig.manager.outputs.fetcher.settled()  # small files are written behind
    assert [o["node_id"] for o in task.outputs] == ["2", "4"] and len(rig.on_disk(task)) == 2
    rig.event(task, "execution_success")  # arrives after: changes nothing but the backend's running prompt
    assert task.status == TaskStatus.COMPLETED and rig.backend.running_prompt is None


async def test_a_file_named_early_is_fetched_once(rig: Rig, emulator: EmulatorThread) -> None:
    """``on_output`` (an ``executed`` read ahead of its burst) starts the download; the same event handled in its
    turn finds it under way and does not send a second ``/view``."""
    task = rig.running(TWO_OUTPUTS)
    views = emulator.emulator.files.views
    executed = ComfyUIEvent(
        "executed",
        {"node": "2", "display_node": "2", "output": {"images": [rig.files["2"]]}, "prompt_id": task.prompt_id},
    )
    rig.manager.on_output(rig.backend, executed)
    assert task.node_outputs == {}  # nothing handled yet: only the download started
    await until(lambda: len(rig.on_disk(task)) == 1)
    rig.manager.on_event(rig.backend, executed)
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED, task.error
    assert [o["node_id"] for o in task.outputs] == ["2", "4"]
    assert emulator.emulator.files.views - views == 2  # one per file, none twice
    rig.manager.on_output(rig.backend, executed)  # a late one for a finished task starts nothing
    assert emulator.emulator.files.views - views == 2


async def test_an_error_after_every_output_came_is_logged_not_lost(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """ComfyUI 0.3.64 has nothing left to run once every output node reported; if a server ever did, it shows."""
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    rig.event(task, "execution_error", node_id="9", node_type="X", exception_message="late")
    assert task.status == TaskStatus.COMPLETED
    assert any("late" in r.getMessage() and task.task_id in r.getMessage() for r in caplog.records)


async def test_an_output_node_that_never_reports_waits_for_execution_success(rig: Rig) -> None:
    workflow = {**TWO_OUTPUTS, "5": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    task = rig.running(workflow)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: len(rig.on_disk(task)) == 2)
    await asyncio.sleep(0.1)
    assert task.status == TaskStatus.RUNNING  # SaveImageWebsocket sends no ``executed``: the run may go on
    rig.event(task, "execution_success")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED and len(task.outputs) == 2


async def test_a_run_that_fails_after_an_output_keeps_no_file(rig: Rig) -> None:
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    await until(lambda: len(rig.on_disk(task)) == 1)
    rig.event(task, "execution_error", node_id="4", node_type="SaveImage", exception_message="disk full")
    assert task.status == TaskStatus.FAILED and task.outputs == []
    await until(lambda: rig.on_disk(task) == [])  # the file fetched for node 2 is removed


async def test_a_failure_while_a_file_is_fetched_cancels_it(rig: Rig, emulator: EmulatorThread) -> None:
    emulator.emulator.costs.view_ms = 300.0  # a slow /view: the error arrives mid-download
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    await asyncio.sleep(0.05)
    rig.event(task, "execution_error", node_id="4", node_type="SaveImage", exception_message="boom")
    assert task.status == TaskStatus.FAILED
    await asyncio.sleep(0.5)
    assert rig.on_disk(task) == []


async def test_an_output_written_before_completion_that_cannot_be_written_fails_the_task_at_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without write-behind (or once its memory budget is used up) the write is awaited: disk full fails the task."""

    def disk_full(path: Path, data: bytes, *more: Any) -> float:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output_fetch, "write_file", disk_full)
    rig.manager.outputs.fetcher.write_behind = False
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.FAILED and task.error is not None
    assert task.error["type"] == "output_download_failed" and "No space left" in task.error["message"]


async def test_a_failure_while_a_file_is_being_written_leaves_no_file(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread writing the file outlives the cancelled download: the cleanup waits for it, then removes it."""
    real_write = output_fetch.write_file
    writing = threading.Event()

    def slow_write(path: Path, data: bytes, *more: Any) -> float:
        writing.set()
        time.sleep(0.3)
        return real_write(path, data, *more)

    monkeypatch.setattr(output_fetch, "write_file", slow_write)
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    await until(writing.is_set)  # the file is being written now, in a thread
    rig.event(task, "execution_error", node_id="4", node_type="SaveImage", exception_message="boom")
    assert task.status == TaskStatus.FAILED
    await asyncio.sleep(0.6)
    assert rig.on_disk(task) == [] and rig.manager.outputs.cache.get(f"{task.task_id[:8]}_x") is None


# --- write-behind: a small output is in hand (and served) before its file is on disk -----------------
async def test_the_task_completes_before_the_file_is_written_and_the_bytes_are_served_meanwhile(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = output_fetch.write_file
    release = threading.Event()

    def held_write(path: Path, data: bytes, *more: Any) -> float:
        release.wait(5)
        return real_write(path, data, *more)

    monkeypatch.setattr(output_fetch, "write_file", held_write)
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED and rig.on_disk(task) == []  # no file yet: the writes wait
    cache = rig.manager.outputs.cache
    names = [o["filename"] for o in task.outputs]
    cached = [cache.get(n) for n in names]
    assert all(c is not None and cache.is_pinned(n) for c, n in zip(cached, names, strict=True))
    settled = asyncio.ensure_future(rig.manager.outputs.fetcher.settled(names[0]))
    await asyncio.sleep(0.05)
    assert not settled.done()  # a reader of outputs/ waits for the file
    release.set()
    await settled
    await rig.manager.outputs.fetcher.settled()
    assert rig.on_disk(task) == sorted(names) and not any(cache.is_pinned(n) for n in names)
    for name, item in zip(names, cached, strict=True):
        info = (rig.outputs_dir / name).stat()
        assert item is not None and (rig.outputs_dir / name).read_bytes() == item.data
        assert validators(info.st_mtime, info.st_size)[0] == item.etag  # one ETag from memory or from disk


async def test_a_write_behind_that_fails_keeps_the_bytes_and_tries_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write = output_fetch.write_file
    failures = {"left": 4}

    def flaky_disk(path: Path, data: bytes, *more: Any) -> float:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(28, "No space left on device")
        return real_write(path, data, *more)

    monkeypatch.setattr(output_fetch, "write_file", flaky_disk)
    monkeypatch.setattr(output_fetch, "RETRY_FIRST_S", 0.05)
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED
    names = [o["filename"] for o in task.outputs]
    await until(lambda: rig.on_disk(task) == sorted(names))  # written once the disk takes it
    assert failures["left"] == 0 and "trying again" in caplog.text
    await rig.manager.outputs.fetcher.settled()  # the file is in place a moment before the loop hears it
    assert not any(rig.manager.outputs.cache.is_pinned(n) for n in names)


async def test_shutdown_writes_what_is_still_behind(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = output_fetch.write_file
    failed: list[str] = []

    def fails_once(path: Path, data: bytes, *more: Any) -> float:
        if path.name not in failed:
            failed.append(path.name)
            raise OSError(28, "No space left on device")
        return real_write(path, data, *more)

    monkeypatch.setattr(output_fetch, "write_file", fails_once)
    monkeypatch.setattr(output_fetch, "RETRY_FIRST_S", 60.0)  # the retry would come long after the shutdown
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final and len(failed) == 2)
    assert rig.on_disk(task) == []
    await rig.manager.stop()  # the last try happens now, and is awaited
    assert rig.on_disk(task) == sorted(o["filename"] for o in task.outputs)


async def test_past_the_pinned_budget_the_write_is_awaited(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = output_fetch.write_file
    release = threading.Event()

    def write(path: Path, data: bytes, *more: Any) -> float:
        if more:  # written behind (the caller chose the modification time): held
            release.wait(5)
        return real_write(path, data, *more)

    monkeypatch.setattr(output_fetch, "write_file", write)
    sizes = [len(await rig.backend.client.fetch_small(**rig.files[n], limit=1 << 20) or b"") for n in ("2", "4")]
    cache = rig.manager.outputs.cache
    cache.max_entry = max(sizes)
    cache.max_bytes = 2 * sum(sizes) - 2  # half of it, the pinned budget, holds one file and not both
    task = rig.running(TWO_OUTPUTS)
    rig.executed(task, "2")
    rig.executed(task, "4")
    await until(lambda: task.status.final)
    assert task.status == TaskStatus.COMPLETED
    assert len(rig.on_disk(task)) == 1 and cache.pinned_bytes in sizes  # one awaited, one held behind
    release.set()
    await rig.manager.outputs.fetcher.settled()
    assert len(rig.on_disk(task)) == 2 and cache.pinned_bytes == 0


def test_through_comfygate_the_first_output_is_on_disk_while_the_run_goes_on(
    emulator: EmulatorThread, gate: Gate
) -> None:
    emulator.set_delays(node_delay=0.8)  # each node 0.8 s: node 2 reports ~1.6 s before the run ends
    task_id = submit_ok(gate, TWO_OUTPUTS)["task_id"]
    early = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        on_disk = list(gate.settings.outputs_dir.glob(f"{task_id[:8]}_first_*"))
        status = gate.task(task_id)["status"]
        if on_disk and status == "running":
            early = True
        if status in ("completed", "failed"):
            break
        time.sleep(0.02)
    task = gate.wait(task_id)
    assert task["status"] == "completed" and len(task["outputs"]) == 2
    assert early, "the first output was not fetched before the run ended"
