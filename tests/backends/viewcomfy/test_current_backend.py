"""The ViewComfy backend speaking the current API (COMFYUI_VIEWCOMFY_API=current).

Against ``tests/fake_viewcomfy_central.py`` (an emulated central API with a real python-socketio server on
loopback: scheduled runs, live events, polling, cancel, output links), and end to end against ComfyGate B's
own current-API endpoint in front of the ComfyUI emulator (both directions with real servers).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import FINAL, Gate
from tests.fake_viewcomfy_central import PNG_BYTES, CentralAPI
from tests.protocol import load_workflow, sd_workflow

DEPLOYMENT = "https://viewcomfy.example/deployments/flux"


@pytest.fixture
def central() -> Iterator[CentralAPI]:
    with CentralAPI(step_delay=0.05) as api:
        yield api


def current_gate(
    gate_factory: Callable[..., Gate], emulator: Any, api: CentralAPI, deployment: str = DEPLOYMENT, **more: Any
) -> Gate:
    return gate_factory(
        [emulator.url],
        viewcomfy_url=deployment,
        viewcomfy_api="current",
        viewcomfy_api_url=api.url,
        viewcomfy_client_id=api.client_id,
        viewcomfy_client_secret=more.pop("secret", api.client_secret),
        viewcomfy_poll_interval=0.1,
        **more,
    )


def run_on_viewcomfy(gate: Gate, **body: Any) -> tuple[str, list[dict[str, Any]]]:
    """Submit to the ViewComfy backend and collect the task's updates from /ws until it is final."""
    with connect(f"{gate.ws_url}/ws") as ws:
        json.loads(ws.recv(timeout=5))
        response = gate.submit(body.pop("workflow", load_workflow("invert_save.json")), backend="viewcomfy", **body)
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        updates = []
        while True:
            message = json.loads(ws.recv(timeout=15))
            if message.get("type") == "task_update" and message["task_id"] == task_id:
                updates.append(message)
                if message["status"] in FINAL:
                    return task_id, updates


def test_a_run_is_scheduled_followed_live_and_its_outputs_downloaded(
    gate_factory: Callable[..., Gate], emulator: Any, central: CentralAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gate = current_gate(gate_factory, emulator, central)
    [backend] = [b for b in gate.client.get("/api/health").json()["backends"] if b["kind"] == "viewcomfy"]
    assert backend["api"] == "current" and backend["api_url"] == central.url and backend["url"] == DEPLOYMENT
    task_id, updates = run_on_viewcomfy(gate, params={"1.color": 255})

    statuses = [u["status"] for u in updates]
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s] == ["queued", "running", "completed"]
    logs = [u["progress"].get("log") for u in updates if u["status"] == "running"]
    assert "KSampler: 2/4 steps" in logs and any(str(line).startswith("executed: ") for line in logs), logs
    assert any(u["progress"].get("percent") == 50.0 for u in updates), updates

    [schedule] = [r for r in central.requests if r["path"] == "schedule"]
    fields = schedule["fields"]
    assert fields["prompt_id"] == str(uuid.UUID(task_id)) and fields["view_comfy_api_url"] == DEPLOYMENT
    assert json.loads(fields["params"]) == {"1-inputs-color": 255}
    assert json.loads(fields["workflow_api"])["1"]["inputs"]["color"] == 255
    assert fields["sid"]  # the socket.io session the events came back on
    assert central.socket_auth == [{"client_id": central.client_id, "client_secret": central.client_secret}]

    task = gate.task(task_id)
    assert task["status"] == "completed" and task["viewcomfy_prompt_id"] == fields["prompt_id"]
    [output] = task["outputs"]
    assert output["filename"] == f"{task_id[:8]}_ComfyUI_00001_.png" and output["size"] == len(PNG_BYTES)
    assert (gate.settings.outputs_dir / output["filename"]).read_bytes() == PNG_BYTES
    assert gate.client.get(output["url"]).content == PNG_BYTES

    secret = central.client_secret
    assert secret not in json.dumps(task) and secret not in gate.client.get("/api/health").text
    assert secret not in caplog.text


def test_a_closed_socket_falls_back_to_polling(
    gate_factory: Callable[..., Gate], emulator: Any, central: CentralAPI
) -> None:
    gate = current_gate(gate_factory, emulator, central, deployment="https://viewcomfy.example/drop")
    task_id, updates = run_on_viewcomfy(gate)
    assert updates[-1]["status"] == "completed", updates[-1]
    assert any("following by polling" in str(u["progress"].get("log")) for u in updates), updates
    assert any(r["path"] == "results" for r in central.requests)
    assert gate.task(task_id)["outputs"][0]["size"] == len(PNG_BYTES)


def test_no_socket_at_all_is_polled_from_the_start(gate_factory: Callable[..., Gate], emulator: Any) -> None:
    with CentralAPI(refuse_sockets=True) as api:
        gate = current_gate(gate_factory, emulator, api)
        task_id, updates = run_on_viewcomfy(gate)
        assert updates[-1]["status"] == "completed"
        [schedule] = [r for r in api.requests if r["path"] == "schedule"]
        assert "sid" not in schedule["fields"]
        polls = [r for r in api.requests if r["path"] == "results"]
        assert polls and f"prompt_ids={uuid.UUID(task_id)}" in polls[-1]["query"]


def test_a_failing_run_fails_the_task_with_its_error(
    gate_factory: Callable[..., Gate], emulator: Any, central: CentralAPI
) -> None:
    gate = current_gate(gate_factory, emulator, central, deployment="https://viewcomfy.example/fail")
    task_id, updates = run_on_viewcomfy(gate)
    task = gate.task(task_id)
    assert task["status"] == "failed" and task["outputs"] == []
    assert task["error"]["type"] == "viewcomfy_run_failed"
    assert task["error"]["message"] == "KSampler (node 3): CUDA out of memory"
    assert task["error"]["error_data"] == {"message": "KSampler (node 3): CUDA out of memory"}


def test_wrong_credentials_fail_the_task_without_showing_them(
    gate_factory: Callable[..., Gate], emulator: Any, central: CentralAPI
) -> None:
    gate = current_gate(gate_factory, emulator, central, secret="not-the-secret")
    task_id, _ = run_on_viewcomfy(gate)
    task = gate.task(task_id)
    assert task["status"] == "failed" and task["error"]["upstream_status"] == 401, task["error"]
    assert "not-the-secret" not in json.dumps(task)


def test_interrupt_and_timeout_cancel_the_remote_run(
    gate_factory: Callable[..., Gate], emulator: Any, central: CentralAPI
) -> None:
    gate = current_gate(gate_factory, emulator, central, deployment="https://viewcomfy.example/slow")
    response = gate.submit(load_workflow("invert_save.json"), backend="viewcomfy")
    task_id = response.json()["task_id"]
    gate.wait(task_id, {"running"})
    prompt_id = str(uuid.UUID(task_id))
    deadline = time.monotonic() + 5
    while prompt_id not in central.runs:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stopped = gate.client.post(f"/api/interrupt/{gate.task(task_id)['prompt_id']}")
    assert stopped.status_code == 200 and stopped.json()["status"] == "interrupted"
    assert gate.task(task_id)["error"]["message"] == "stopped in ComfyGate and cancelled on ViewComfy"
    [cancel] = central.cancels
    assert cancel["body"] == {"prompt_id": prompt_id, "view_comfy_api_url": "https://viewcomfy.example/slow"}
    assert cancel["headers"]["client_secret"] == central.client_secret
    deadline = time.monotonic() + 5
    while central.runs[prompt_id].status != "canceled":
        assert time.monotonic() < deadline
        time.sleep(0.02)

    timed = gate.submit(load_workflow("invert_save.json"), backend="viewcomfy", timeout=0.5).json()["task_id"]
    assert gate.wait(timed, timeout=5)["status"] == "timeout"
    deadline = time.monotonic() + 5
    while len(central.cancels) < 2:
        assert time.monotonic() < deadline, "the timed-out run was not cancelled remotely"
        time.sleep(0.02)
    assert central.cancels[1]["body"]["prompt_id"] == str(uuid.UUID(timed))


# --- A (current-API backend) → B (current-API endpoint) → emulator ---------------------------------------


def test_gate_a_runs_on_gate_b_through_the_current_api(
    emulator: Any, gate_factory: Callable[..., Gate], tmp_path: Path
) -> None:
    b = gate_factory(
        [emulator.url],
        outputs_dir=tmp_path / "b_outputs",
        workflows_dir=tmp_path / "b_workflows",
        viewcomfy_server_client_id="b-id",
        viewcomfy_server_client_secret="b-secret",
        viewcomfy_keepalive=0.1,
    )
    a = gate_factory(
        [emulator.url],
        outputs_dir=tmp_path / "a_outputs",
        workflows_dir=tmp_path / "a_workflows",
        viewcomfy_url="sd",
        viewcomfy_api="current",
        viewcomfy_api_url=b.url,
        viewcomfy_client_id="b-id",
        viewcomfy_client_secret="b-secret",
        viewcomfy_poll_interval=0.1,
        allow_private_urls=True,
    )
    task_id, updates = run_on_viewcomfy(a, workflow=sd_workflow(steps=4), params={"6.text": "a red fox"})
    assert updates[-1]["status"] == "completed", updates[-1]
    logs = [str(u["progress"].get("log")) for u in updates]
    assert "KSampler (node 3): step 4/4" in logs, logs
    task = a.task(task_id)
    [output] = task["outputs"]
    b_task = b.task(task_id)  # B's task id is A's: the prompt id both sides share
    assert b_task["status"] == "completed" and b_task["params"]["6.text"] == "a red fox"
    b_file = b.settings.outputs_dir / b_task["outputs"][0]["filename"]
    assert (a.settings.outputs_dir / output["filename"]).read_bytes() == b_file.read_bytes()

    emulator.set_delays(step_delay=0.1)
    slow = a.submit(sd_workflow(steps=200, seed=5), backend="viewcomfy").json()["task_id"]
    deadline = time.monotonic() + 10
    while b.client.get(f"/api/task/{slow}").status_code != 200 or b.task(slow)["status"] != "running":
        assert time.monotonic() < deadline, "B never ran A's task"
        time.sleep(0.05)
    assert a.client.post(f"/api/interrupt/{a.task(slow)['prompt_id']}").json()["status"] == "interrupted"
    assert b.wait(slow, timeout=5)["status"] == "interrupted"  # cancelled through B's cancel route
