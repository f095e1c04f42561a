"""Reconciliation after a reconnect, on a ComfyUI backend whose HTTP client is an in-memory stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.comfyui import ComfyUIBackend
from config import Settings
from core.task import Task, TaskStatus
from events.hub import EventHub
from tasks.manager import TaskManager
from tasks.memory_store import TaskStore

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}


class FakeClient:
    """What a ComfyUI server answers to /queue, /history and /view, set by each test."""

    base_url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.queue: dict[str, Any] = {"queue_running": [], "queue_pending": []}
        self.history: dict[str, Any] = {}
        self.downloads: list[str] = []

    async def system_stats(self) -> dict[str, Any]:
        return {"system": {"comfyui_version": "0.3.64"}, "devices": []}  # no jobs API: /queue and /history

    async def jobs_api(self) -> bool:
        return False

    async def get_queue(self) -> dict[str, Any]:
        return self.queue

    async def get_history(self, prompt_id: str | None = None) -> dict[str, Any]:
        return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}

    def send_view(self, filename: str, subfolder: str, type: str) -> None:
        return None  # nothing sent ahead: fetch_small asks

    async def fetch_small(self, filename: str, subfolder: str, type: str, limit: int, sent: Any = None) -> bytes | None:
        self.downloads.append(filename)
        return b"png"

    async def download(self, filename: str, subfolder: str, type: str, dest: Path) -> int:
        await asyncio.to_thread(dest.write_bytes, b"png")
        self.downloads.append(filename)
        return 3


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[TaskManager, ComfyUIBackend, FakeClient]]:
    settings = Settings(outputs_dir=tmp_path / "out", data_dir=tmp_path / "d", _env_file=None)  # type: ignore[call-arg]
    settings.outputs_dir.mkdir()
    manager = TaskManager(settings, TaskStore(), EventHub())
    manager.temp_dir.mkdir()
    async with httpx.AsyncClient() as http:
        backend = ComfyUIBackend(
            "c1", "127.0.0.1:9", http, on_event=manager.on_event, on_state=manager.on_backend_state
        )
        client = FakeClient()
        backend.client = client  # type: ignore[assignment]
        manager.add_backend(backend)  # not started: no WebSocket, the tests drive recovery themselves
        yield manager, backend, client
        await manager.jobs.stop()


def handed(manager: TaskManager, backend: ComfyUIBackend, prompt: str, status: TaskStatus, started: bool) -> Task:
    task = Task(task_id=prompt * 8, prompt_id=prompt, workflow=WORKFLOW, status=status, backend=backend.name)
    task.queued_at = 1.0
    task.started_at = 2.0 if started else None
    task.attempts = 1
    manager.store.add(task)
    backend.inflight.add(task.task_id)
    return task


async def settled(*tasks: Task) -> None:
    async with asyncio.timeout(3):
        while not all(t.status.final or t.status == TaskStatus.PENDING for t in tasks):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_reconcile_reads_each_tasks_fate(parts: tuple[TaskManager, ComfyUIBackend, FakeClient]) -> None:
    manager, backend, client = parts
    running = handed(manager, backend, "run1", TaskStatus.QUEUED, started=False)
    waiting = handed(manager, backend, "wait", TaskStatus.QUEUED, started=False)
    done = handed(manager, backend, "done", TaskStatus.RUNNING, started=True)
    failed = handed(manager, backend, "fail", TaskStatus.RUNNING, started=True)
    lost_queued = handed(manager, backend, "lstq", TaskStatus.QUEUED, started=False)
    lost_running = handed(manager, backend, "lstr", TaskStatus.RUNNING, started=True)
    client.queue = {"queue_running": [[1, "run1"]], "queue_pending": [[2, "wait"]]}
    client.history = {
        "done": {
            "status": {"status_str": "success", "completed": True, "messages": []},
            "outputs": {"2": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
        },
        "fail": {
            "status": {
                "status_str": "error",
                "messages": [["execution_error", {"node_id": "1", "node_type": "EmptyImage", "exception_type": "E"}]],
            }
        },
    }
    await manager.recovery.reconcile(backend)
    assert running.status == TaskStatus.RUNNING and backend.running_prompt == "run1"
    assert waiting.status == TaskStatus.QUEUED
    await settled(done, failed, lost_queued, lost_running)
    assert done.status == TaskStatus.COMPLETED and [o["filename"] for o in done.outputs] == ["donedone_a.png"]
    await manager.outputs.fetcher.settled()  # written behind
    assert client.downloads == ["a.png"] and (manager.settings.outputs_dir / "donedone_a.png").is_file()
    assert failed.status == TaskStatus.FAILED and failed.error is not None
    assert failed.error["type"] == "execution_error" and failed.error["node_id"] == "1"
    # Vanished before it started: held again (same prompt id) for any backend; vanished while running: lost.
    assert lost_queued.status == TaskStatus.PENDING and lost_queued.prompt_id == "lstq"
    assert lost_queued.task_id in manager.pending and lost_queued.task_id not in backend.inflight
    assert lost_running.status == TaskStatus.FAILED and lost_running.error is not None
    assert lost_running.error["type"] == "backend_restarted"


async def test_a_backend_down_past_the_grace_moves_or_fails_its_tasks(
    parts: tuple[TaskManager, ComfyUIBackend, FakeClient],
) -> None:
    manager, backend, _ = parts
    manager.settings.backend_down_grace = 0.01
    queued = handed(manager, backend, "q111", TaskStatus.QUEUED, started=False)
    running = handed(manager, backend, "r111", TaskStatus.RUNNING, started=True)
    since = backend.down_since
    await manager.recovery.fail_if_still_down(backend, since)
    assert queued.status == TaskStatus.PENDING and queued.prompt_id != "q111"  # a fresh prompt id
    assert queued.extra["requeued"].startswith("c1 (") and manager.store.by_prompt(queued.prompt_id) is queued
    assert running.status == TaskStatus.FAILED and running.error is not None
    assert running.error["type"] == "backend_unreachable"
    assert not backend.inflight
