"""The ViewComfy backend: ComfyGate A → (ViewComfy wire format) → ComfyGate B → emulator, and against the fake.

A's ViewComfy backend points at B's compatible endpoint, so both directions of the protocol are
exercised by real servers on loopback; ``tests/fake_viewcomfy.py`` covers what B never does (5xx,
truncated streams, an unreachable endpoint).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from backends.viewcomfy.backend import STEP, ViewComfyBackend, guess_node_id, public_url
from config import Settings
from events.hub import EventHub
from tasks.manager import TaskManager
from tasks.memory_store import TaskStore
from tests.conftest import FINAL, Gate, make_settings, start_gate, stop_gate
from tests.fake_viewcomfy import PNG_BYTES, FakeViewComfy, closed_port
from tests.protocol import load_workflow, sd_workflow

B_ID = "b-client-id"
B_SECRET = "b-very-secret-value"


@pytest.fixture
def gate_b(emulator: Any, gate_factory: Callable[..., Gate], tmp_path: Path) -> Gate:
    """ComfyGate B: in front of the emulator, with a ViewComfy-compatible endpoint that checks credentials."""
    return gate_factory(
        [emulator.url],
        outputs_dir=tmp_path / "b_outputs",
        workflows_dir=tmp_path / "b_workflows",
        viewcomfy_server_client_id=B_ID,
        viewcomfy_server_client_secret=B_SECRET,
        viewcomfy_keepalive=0.2,
    )


@pytest.fixture
def gate_a(emulator: Any, gate_b: Gate, gate_factory: Callable[..., Gate], tmp_path: Path) -> Gate:
    """ComfyGate A: its own ComfyUI backend plus a ViewComfy backend pointed at B."""
    return gate_factory(
        [emulator.url],
        outputs_dir=tmp_path / "a_outputs",
        workflows_dir=tmp_path / "a_workflows",
        viewcomfy_url=f"{gate_b.url}/api/viewcomfy/infer",
        viewcomfy_client_id=B_ID,
        viewcomfy_client_secret=B_SECRET,
    )


@contextmanager
def running_gate(tmp_path: Path, servers: list[str], prefix: str, **overrides: Any) -> Iterator[Gate]:
    """A gate without waiting for its ComfyUI backends (they may be down on purpose)."""
    settings = make_settings(
        tmp_path,
        servers,
        outputs_dir=tmp_path / f"{prefix}_outputs",
        workflows_dir=tmp_path / f"{prefix}_workflows",
        **overrides,
    )
    gate = start_gate(settings)
    try:
        yield gate
    finally:
        stop_gate(gate)


# --- A → B → emulator ----------------------------------------------------------------------------------


def test_task_on_viewcomfy_backend_runs_through_gate_b(gate_a: Gate, gate_b: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.02)
    with connect(f"{gate_a.ws_url}/ws") as ws:
        hello = json.loads(ws.recv(timeout=5))
        [vc] = [b for b in hello["backends"] if b["kind"] == "viewcomfy"]
        assert vc["name"] == "viewcomfy" and vc["healthy"] and vc["url"].endswith("/api/viewcomfy/infer")
        response = gate_a.submit(sd_workflow(steps=4), params={"6.text": "a red fox"}, backend="viewcomfy")
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        statuses: list[str] = []
        logs: list[str] = []
        percents: list[float] = []
        while True:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("type") != "task_update" or msg["task_id"] != task_id:
                continue
            statuses.append(msg["status"])
            if "log" in msg["progress"] and msg["status"] == "running":
                logs.append(msg["progress"]["log"])
                percents.append(msg["progress"].get("percent"))
            if msg["status"] in FINAL:
                break
    compact = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert compact == ["queued", "running", "completed"], statuses
    assert any("KSampler" in line and "step 4/4" in line for line in logs), logs
    assert 100.0 in percents and any(0 < p < 100 for p in percents if p is not None), percents

    task = gate_a.task(task_id)
    assert task["status"] == "completed" and task["backend"] == "viewcomfy"
    [output] = task["outputs"]
    assert output["filename"].startswith(f"{task_id[:8]}_") and output["type"] == "output"
    assert output["node_id"] == "9" and output["content_type"] == "image/png"
    assert output["url"] == f"/api/image/{output['filename']}"
    path = gate_a.settings.outputs_dir / output["filename"]
    assert path.is_file() and path.stat().st_size == output["size"] > 0
    assert gate_a.client.get(output["url"]).content == path.read_bytes()
    assert task_id in {t["task_id"] for t in gate_a.client.get("/api/tasks").json()["tasks"]}

    # B ran it as an ordinary task, with the parameter A applied, and the same bytes
    [b_task] = gate_b.client.get("/api/tasks").json()["tasks"]
    assert b_task["status"] == "completed" and b_task["source"] == "viewcomfy"
    assert b_task["params"]["6.text"] == "a red fox"
    assert (gate_b.settings.outputs_dir / b_task["outputs"][0]["filename"]).read_bytes() == path.read_bytes()


def test_no_params_changes_the_seed(gate_a: Gate, gate_b: Gate) -> None:
    body = gate_a.submit(sd_workflow(steps=2, seed=42), backend="viewcomfy").json()
    seed = body["params"]["3.seed"]
    assert isinstance(seed, int) and body["params"] == {"3.seed": seed}
    task = gate_a.wait(body["task_id"])
    assert task["status"] == "completed", task
    [b_task] = gate_b.client.get("/api/tasks").json()["tasks"]
    assert b_task["params"]["3.seed"] == seed  # sent as 3-inputs-seed and in workflow_api


def test_interrupt_and_timeout_stop_the_call_and_the_run_behind_it(gate_a: Gate, gate_b: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    task_id = gate_a.submit(sd_workflow(steps=60), backend="viewcomfy").json()["task_id"]
    gate_a.wait(task_id, {"running"})
    deadline = time.monotonic() + 5
    while not gate_b.client.get("/api/tasks", params={"status": "running"}).json()["total"]:
        assert time.monotonic() < deadline, "B never started the task"
        time.sleep(0.05)
    response = gate_a.client.post(f"/api/interrupt/{gate_a.task(task_id)['prompt_id']}")
    assert response.status_code == 200 and response.json()["status"] == "interrupted"
    assert "no cancel route" in gate_a.task(task_id)["error"]["message"]
    [b_task] = gate_b.client.get("/api/tasks").json()["tasks"]
    assert gate_b.wait(b_task["task_id"], timeout=5)["status"] == "interrupted"  # B saw its caller go

    timed = gate_a.submit(sd_workflow(steps=60, seed=1), backend="viewcomfy", timeout=0.5).json()["task_id"]
    task = gate_a.wait(timed, timeout=5)
    assert task["status"] == "timeout" and "0.5" in task["error"]["message"]
    assert gate_a.client.get("/api/health").json()["backends"][1]["inflight"] == 0


def test_only_healthy_backend_gets_unpinned_tasks_validated_against_recorded_object_info(
    tmp_path: Path, gate_b: Gate
) -> None:
    with running_gate(
        tmp_path,
        [f"127.0.0.1:{closed_port()}"],
        "solo",
        viewcomfy_url=f"{gate_b.url}/api/viewcomfy/infer",
        viewcomfy_client_id=B_ID,
        viewcomfy_client_secret=B_SECRET,
    ) as gate_a:
        health = gate_a.client.get("/api/health").json()
        assert health["status"] == "degraded"
        bad = gate_a.submit(load_workflow("invert_save.json"), params={"1.width": "wide"})
        assert bad.status_code == 422 and bad.json()["problems"][0]["node_id"] == "1"
        unknown = gate_a.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
        assert unknown.status_code == 422
        body = gate_a.submit(load_workflow("invert_save.json"), params={"1.color": 255}).json()
        task = gate_a.wait(body["task_id"])
        assert task["status"] == "completed" and task["backend"] == "viewcomfy", task
        assert task["outputs"][0]["node_id"] == "3"
        assert gate_a.client.get("/api/queue").status_code == 200  # ViewComfy has no queue: skipped
        assert gate_a.client.get("/api/nodes", params={"backend": "viewcomfy", "class": "SaveImage"}).status_code == 200


# --- against the fake ViewComfy -------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeViewComfy]:
    with FakeViewComfy() as server:
        yield server


def fake_gate(
    tmp_path: Path, emulator: Any, url: str, secret: str = "test-client-secret"
) -> AbstractContextManager[Gate]:
    return running_gate(
        tmp_path,
        [emulator.url],
        "fake",
        viewcomfy_url=url,
        viewcomfy_client_id="test-client-id",
        viewcomfy_client_secret=secret,
    )


def run_pinned(gate: Gate, **body: Any) -> dict[str, Any]:
    response = gate.submit(load_workflow("invert_save.json"), backend="viewcomfy", **body)
    assert response.status_code == 200, response.text
    return gate.wait(response.json()["task_id"])


def test_fake_sse_logs_errors_and_outputs(tmp_path: Path, emulator: Any, fake: FakeViewComfy) -> None:
    with fake_gate(tmp_path, emulator, fake.url("/infer")) as gate:
        task = run_pinned(gate, params={"1.color": 7, "_1-node-class_type-info": "EmptyImage"})
        assert task["status"] == "completed", task
        [output] = task["outputs"]
        assert (gate.settings.outputs_dir / output["filename"]).read_bytes() == PNG_BYTES
        assert output["viewcomfy"] == {"filename": "ComfyUI_00001_.png"} and output["node_id"] == ""
        rec = fake.last()
        assert rec.headers["client_id"] == "test-client-id" and rec.fields["logs"] == "true"
        assert json.loads(rec.fields["params"]) == {"1-inputs-color": 7}
        sent = json.loads(rec.fields["workflow_api"])
        assert sent["1"]["inputs"]["color"] == 7 and sent["3"]["class_type"] == "SaveImage"
        assert task["progress"]["log"] == "step 2/2" and task["progress"]["percent"] == 100.0


def test_fake_failures_fail_the_task_without_leaking_the_secret(
    tmp_path: Path, emulator: Any, fake: FakeViewComfy, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "test-client-secret"
    with fake_gate(tmp_path, emulator, fake.url("/boom")) as gate:
        task = run_pinned(gate)
        assert task["status"] == "failed" and task["error"]["type"] == "viewcomfy_error"
        assert task["error"]["upstream_status"] == 500 and "worker crashed" in task["error"]["message"]
        assert gate.client.get("/api/health").json()["status"] == "ok"  # it answered: still healthy
    with fake_gate(tmp_path, emulator, fake.url("/truncated")) as gate:
        task = run_pinned(gate)
        assert task["status"] == "failed" and "without a result" in task["error"]["message"]
    with fake_gate(tmp_path, emulator, fake.url("/infer?token=hidden"), secret="wrong-secret") as gate:
        task = run_pinned(gate)
        assert task["status"] == "failed" and task["error"]["upstream_status"] == 401
        health = gate.client.get("/api/health").text + gate.client.get("/api/system/info").text
        assert "hidden" not in health and "wrong-secret" not in health and "test-client-id" not in health
        assert "wrong-secret" not in json.dumps(task)
    assert secret not in caplog.text and "wrong-secret" not in caplog.text


def test_unreachable_endpoint_marks_backend_down_then_retries(tmp_path: Path, emulator: Any) -> None:
    with fake_gate(tmp_path, emulator, f"http://127.0.0.1:{closed_port()}/infer") as gate:
        task = run_pinned(gate)
        assert task["status"] == "failed" and task["error"]["type"] == "viewcomfy_unavailable"
        [vc] = [b for b in gate.client.get("/api/health").json()["backends"] if b["kind"] == "viewcomfy"]
        assert not vc["healthy"] and vc["retry_in"] > 0 and "unreachable" in vc["last_error"]
        refused = gate.submit(load_workflow("invert_save.json"), backend="viewcomfy")
        assert refused.status_code == 503
        unpinned = gate.wait(gate.submit(load_workflow("invert_save.json")).json()["task_id"])
        assert unpinned["backend"] == "comfyui-1" and unpinned["status"] == "completed"


# --- unit: backoff, step parsing, names ------------------------------------------------------------------


async def test_backoff_doubles_and_a_later_answer_resets_it(tmp_path: Path, fake: FakeViewComfy) -> None:
    settings: Settings = make_settings(tmp_path, ["127.0.0.1:1"])
    settings.ensure_dirs()
    manager = TaskManager(settings, TaskStore(), EventHub())
    async with httpx.AsyncClient() as http:
        backend = ViewComfyBackend(
            f"http://127.0.0.1:{closed_port()}/infer",
            http,
            outputs_dir=settings.outputs_dir,
            client_id="test-client-id",
            client_secret="test-client-secret",
            backoff=0.2,
            connect_retries=0,
        )
        manager.add_backend(backend)
        wf = load_workflow("invert_save.json")

        async def run() -> str:
            task = await manager.submit(wf, params={"1.color": 1}, backend="viewcomfy")
            sub = manager.hub.subscribe({task.task_id})  # the job has not run yet: nothing is missed
            try:
                async for text in sub:
                    if json.loads(text).get("status") in FINAL:
                        break
            finally:
                manager.hub.unsubscribe(sub)
            return task.status.value

        assert await run() == "failed" and not backend.healthy and backend.failures == 1
        await asyncio.sleep(0.25)
        assert backend.healthy  # backoff over: try again
        assert await run() == "failed" and backend.failures == 2
        assert 0.2 < backend.describe()["retry_in"] <= 0.4  # doubled
        await asyncio.sleep(0.45)
        backend.api.endpoint_url = fake.url("/infer")
        assert await run() == "completed"
        assert backend.healthy and backend.failures == 0 and backend.describe()["last_error"] is None
        await manager.stop()


def test_step_parsing_names_and_public_url() -> None:
    assert STEP.search("KSampler (node 3): step 3/20").groups() == ("3", "20")
    assert STEP.search(" 45%|████ | 9 / 20 [00:02<00:03]").groups() == ("9", "20")
    assert STEP.search("saved 2024/05/01") is None
    wf = load_workflow("invert_save.json")
    assert guess_node_id(wf, "invert_00001_.png") == "3" and guess_node_id(wf, "other.png") == ""
    assert public_url("https://user:pw@vc.example/api/x?token=t") == "https://vc.example/api/x"
