"""The durable task store: records survive a restart of ComfyGate, in-flight tasks are settled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from core.task import Task, TaskStatus
from emulator.server import EmulatorThread
from tasks.sqlite_store import TaskDatabase
from tests.conftest import Gate, history_of, submit_ok, wait_backends_down, written
from tests.protocol import load_workflow, sd_workflow


def restart_gate(gate: Gate, gate_factory: Any, servers: list[str], **overrides: Any) -> Gate:
    """Stop ComfyGate the way a deploy would, then start a new process on the same data_dir."""
    gate.server.stop()
    return gate_factory(servers, **overrides)


def test_database_batches_trims_and_loads_workflows_on_demand(tmp_path: Path) -> None:
    db = TaskDatabase(tmp_path / "tasks.sqlite3", history_limit=50)
    db.open()
    try:
        for i in range(300):
            task = Task(task_id=f"t{i:03}", workflow={"1": {"class_type": "X", "i": i}}, prompt_id=f"p{i}")
            task.created_at = 1000.0 + i
            db.observe(task, "created")
            if i % 3:  # two in three finish
                task.status, task.finished_at, task.outputs = TaskStatus.COMPLETED, 2000.0 + i, [{"f": i}]
                db.observe(task, "finished")
        assert db.flush()
        assert db.load_workflow("t299") == {"1": {"class_type": "X", "i": 299}}
    finally:
        db.close()
    db = TaskDatabase(tmp_path / "tasks.sqlite3", history_limit=50)
    db.open()
    try:
        tasks = list(db.load())
        unfinished = [t for t in tasks if not t.status.final]
        finished = [t for t in tasks if t.status.final]
        assert len(unfinished) == 100 and all(t.workflow for t in unfinished)
        assert len(finished) == 50 and not any(t.workflow for t in finished)  # loaded on demand only
        assert finished[-1].task_id == "t299" and finished[-1].outputs == [{"f": 299}]
        assert [t.created_at for t in tasks] == sorted(t.created_at for t in tasks)
        assert db.count() == 150  # old finished rows were trimmed on disk too
    finally:
        db.close()


async def test_status_changes_on_the_loop_are_deferred_and_coalesced_but_flush_sees_them(tmp_path: Path) -> None:
    db = TaskDatabase(tmp_path / "tasks.sqlite3", history_limit=50)
    await asyncio.to_thread(db.open)
    try:
        task = Task(task_id="t1", workflow={"1": {"class_type": "X"}}, prompt_id="p1")
        db.observe(task, "created")  # held on the loop too, its workflow serialised already
        task.workflow = {}  # a finished task drops it from memory: the row still carries it
        assert db.written == 0
        await asyncio.to_thread(db.flush)  # from another thread: the held changes go first
        assert db.written == 1
        for status in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.COMPLETED):
            task.status = status
            db.observe(task, "finished" if status.final else "status")
        assert db.written == 1  # held on the loop for DEFER_S
        await asyncio.to_thread(db.flush)
        assert db.written == 2  # three changes, one row write with the latest state
        assert await asyncio.to_thread(db.count) == 1
        assert await asyncio.to_thread(db.load_workflow, "t1") == {"1": {"class_type": "X"}}
        task.status = TaskStatus.FAILED
        db.observe(task, "finished")
        await asyncio.sleep(0.1)  # DEFER_S later the writer has it without being asked
        await asyncio.to_thread(db.flush)
        assert db.written == 3
        quick = Task(task_id="t2", workflow={"2": {"class_type": "Y"}}, prompt_id="p2")
        db.observe(quick, "created")
        quick.status = TaskStatus.COMPLETED
        db.observe(quick, "finished")
        await asyncio.to_thread(db.flush)
        assert db.written == 4  # created and finished within DEFER_S: one row, with its workflow
        assert await asyncio.to_thread(db.load_workflow, "t2") == {"2": {"class_type": "Y"}}
    finally:
        await asyncio.to_thread(db.close)
    db = TaskDatabase(tmp_path / "tasks.sqlite3", history_limit=50)
    db.open()
    try:
        assert [t.status for t in db.load()] == [TaskStatus.FAILED, TaskStatus.COMPLETED]
    finally:
        db.close()


def test_restart_of_comfygate_keeps_records_and_settles_in_flight(
    emulators: Any, gate_factory: Any, tmp_path: Path
) -> None:
    emus: list[EmulatorThread] = emulators(2, step_delay=0.04)
    servers = [e.url for e in emus]
    gate = gate_factory(servers, poll_interval=0.1)
    done = gate.wait(submit_ok(gate, sd_workflow(steps=1, seed=0))["task_id"])
    assert done["status"] == "completed"
    # comfyui-1: one running and one queued; comfyui-2: one running, lost by a restart while we are away
    a = submit_ok(gate, sd_workflow(steps=12, seed=1), backend="comfyui-1")
    b = submit_ok(gate, sd_workflow(steps=3, seed=2), backend="comfyui-1")
    c = submit_ok(gate, sd_workflow(steps=40, seed=3), backend="comfyui-2")
    d = submit_ok(gate, sd_workflow(steps=2, seed=4), backend="comfyui-2")
    gate.wait(a["task_id"], {"running"})
    gate.wait(c["task_id"], {"running"})
    new = restart_gate(gate, gate_factory, servers, poll_interval=0.1)
    emus[1].restart()  # comfyui-2 forgets c (started) and d (never started)
    emus[1].set_delays(step_delay=0.0)
    assert new.task(done["task_id"])["status"] == "completed"  # history is still there
    finished_a = new.wait(a["task_id"], timeout=15)
    finished_b = new.wait(b["task_id"], timeout=15)
    for task in (finished_a, finished_b):  # followed by polling /history, outputs fetched by the new process
        assert task["status"] == "completed", task
        assert task["outputs"] and written(new.settings.outputs_dir / task["outputs"][0]["filename"])
    lost = new.wait(c["task_id"], timeout=15)
    assert lost["status"] == "failed" and lost["error"]["type"] == "backend_restarted", lost["error"]
    again = new.wait(d["task_id"], timeout=15)
    assert again["status"] == "completed" and again["attempts"] == 2, again["error"]
    assert again["prompt_id"] in history_of(emus[1])
    assert set(history_of(emus[0])) >= {a["prompt_id"], b["prompt_id"]}
    listing = new.client.get("/api/tasks", params={"limit": 100}).json()
    assert listing["total"] == 5


def test_pending_tasks_survive_a_restart(emulators: Any, gate_factory: Any) -> None:
    [emu] = emulators(1)
    gate = gate_factory([emu.url])
    gate.wait(submit_ok(gate, sd_workflow(steps=1))["task_id"])
    emu.stop()
    wait_backends_down(gate)  # (a submission before ComfyGate has seen it go is answered 503: not held)
    held = submit_ok(gate, sd_workflow(steps=1, seed=9))
    assert held["status"] == "pending"
    new = restart_gate(gate, gate_factory, [emu.url], wait_up=False)
    assert new.task(held["task_id"])["status"] == "pending"
    emu.start()
    assert new.wait(held["task_id"], timeout=10)["status"] == "completed"


def test_a_task_with_its_own_partner_key_is_not_posted_without_it_after_a_restart(
    emulators: Any, gate_factory: Any
) -> None:
    """A per-request partner-node key lives in memory only: a task still held when ComfyGate restarts fails
    ``partner_key_lost`` (not posted without it, nor with the server's key); the other held tasks run."""
    [emu] = emulators(1)
    gate = gate_factory([emu.url], comfy_org_api_keys="server-key")
    emu.stop()
    wait_backends_down(gate)
    own = submit_ok(gate, sd_workflow(steps=1, seed=1), api_key_comfy_org="the-callers-key")
    job = gate.client.post(
        "/api/v2/jobs",
        json={"workflow": load_workflow("trivial_save.json"), "extra_data": {"api_key_comfy_org": "a-v2-key"}},
    )
    assert job.status_code in (200, 201), job.text
    plain = submit_ok(gate, sd_workflow(steps=1, seed=2))
    assert own["status"] == plain["status"] == "pending"
    new = restart_gate(gate, gate_factory, [emu.url], wait_up=False, comfy_org_api_keys="server-key")
    emu.start()
    assert new.wait(plain["task_id"], timeout=10)["status"] == "completed"
    for task_id in (own["task_id"], job.json()["id"]):
        failed = new.wait(task_id, timeout=10)
        assert failed["status"] == "failed" and failed["error"]["type"] == "partner_key_lost", failed
        assert "submit it again" in failed["error"]["message"]
    assert set(history_of(emu)) == {plain["prompt_id"]}  # neither went to ComfyUI


def test_finished_tasks_release_their_workflow(emulators: Any, gate_factory: Any) -> None:
    [emu] = emulators(1)
    gate = gate_factory([emu.url])
    task_id = submit_ok(gate, sd_workflow(steps=1, seed=5))["task_id"]
    assert gate.wait(task_id)["status"] == "completed"
    manager = gate.server.app.state.services.manager
    task = manager.store.get(task_id)
    assert task.workflow == {}
    workflow = asyncio.run(manager.workflow_loader(task_id))
    assert workflow["3"]["inputs"]["seed"] == 5


@pytest.mark.parametrize("overrides", [{"task_store": "memory"}, {"database_url": "memory"}])
def test_memory_mode_writes_nothing_and_forgets_on_restart(
    emulators: Any, gate_factory: Any, overrides: dict[str, Any]
) -> None:
    [emu] = emulators(1)
    gate = gate_factory([emu.url], **overrides)
    assert gate.settings.database_path is None
    task_id = submit_ok(gate, sd_workflow(steps=1))["task_id"]
    task = gate.wait(task_id)
    assert task["status"] == "completed"
    manager = gate.server.app.state.services.manager
    assert manager.store.get(task_id).workflow  # kept in memory: nothing to load it from
    assert not list(gate.settings.data_dir.glob("*.sqlite3"))
    info = gate.client.get("/api/system/info").json()
    assert info["comfygate"]["task_store"] == "memory"
    new = restart_gate(gate, gate_factory, [emu.url], **overrides)
    started = time.monotonic()
    assert new.client.get(f"/api/task/{task_id}").status_code == 404
    assert time.monotonic() - started < 5


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # the file, its -wal and -shm


def test_big_workflow_and_params_are_written_once(tmp_path: Path) -> None:
    """Status updates rewrite a small row only: a 5 MB prompt costs ~10 MB (workflow + params), not 5 MB × updates."""
    big = "a lighthouse " * 400_000  # ~5 MB
    path = tmp_path / "tasks.sqlite3"
    db = TaskDatabase(path, history_limit=50)
    db.open()
    try:
        task = Task(task_id="big", workflow={"6": {"inputs": {"text": big}}}, prompt_id="p", params={"6.text": big})
        db.observe(task, "created")
        assert db.flush()
        after_create = _disk_bytes(path)
        for step in range(30):  # progress updates, then the end
            task.status, task.progress = TaskStatus.RUNNING, {"value": step, "max": 30}
            db.observe(task, "status")
            assert db.flush()
        task.status, task.finished_at = TaskStatus.COMPLETED, time.time()
        db.observe(task, "finished")
        assert db.flush()
        grown = _disk_bytes(path) - after_create
        assert grown < 1_000_000, f"31 status updates wrote {grown} bytes"
        assert db.load_workflow("big") == task.workflow
    finally:
        db.close()
    db = TaskDatabase(path, history_limit=50)
    db.open()
    try:
        (loaded,) = db.load()
        assert loaded.params == {"6.text": big} and loaded.progress == {"value": 29, "max": 30}
    finally:
        db.close()


def test_rows_of_older_versions_are_read(tmp_path: Path) -> None:
    """Before task_inputs, the workflow was a column of tasks and params part of the record."""
    import json
    import sqlite3

    path = tmp_path / "tasks.sqlite3"
    db = TaskDatabase(path, history_limit=50)
    db.open()
    db.close()
    record = {"task_id": "old", "prompt_id": "p", "status": "queued", "created_at": 1.0, "params": {"3.seed": 7}}
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO tasks (task_id, created_at, status, final, record, workflow) "
            "VALUES ('old', 1.0, 'queued', 0, ?, ?)",
            (json.dumps(record), json.dumps({"3": {"class_type": "KSampler"}})),
        )
    db = TaskDatabase(path, history_limit=50)
    db.open()
    try:
        (task,) = db.load()
        assert task.params == {"3.seed": 7} and task.workflow == {"3": {"class_type": "KSampler"}}
        assert db.load_workflow("old") == {"3": {"class_type": "KSampler"}}
    finally:
        db.close()
