"""Values no JSON answer can carry (lone surrogates, NaN, Infinity, 1e400, huge integers) are refused where
they enter, with a 422 naming the field, and never reach the task store; a store that already holds one
(written by an older ComfyGate) is read back answerable."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorThread
from security.json_safety import check_body, find_unsafe, scrub, strict_loads
from tests.conftest import Gate, history_of, submit_ok
from tests.protocol import sd_workflow

SURROGATE = '"\\ud800"'  # as it travels in JSON: an escape of a lone high surrogate
HOSTILE_VALUES = {
    "lone high surrogate": SURROGATE,
    "lone low surrogate": '"ab\\udc00cd"',
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "5000-digit integer": "9" * 5000,
}


def body_with(value: str, **extra: Any) -> bytes:
    """A submit body whose param 6.text is ``value`` as raw JSON text (json.dumps cannot write NaN in)."""
    head = json.dumps({"workflow": sd_workflow(), **extra})[:-1]
    return f'{head}, "params": {{"6.text": {value}}}}}'.encode()


def canary(gate: Gate) -> None:
    """The normal flows still work: a submit runs to the end, the task list and history answer JSON."""
    task = submit_ok(gate, sd_workflow(steps=1))
    assert gate.wait(task["task_id"])["status"] == "completed"
    for path in ("/api/tasks", "/api/history", f"/api/task/{task['task_id']}"):
        response = gate.client.get(path)
        assert response.status_code == 200, (path, response.text)
        response.json()


# ------------------------------------------------------------------------------------------ unit
def test_scan_names_the_field_and_passes_valid_pairs() -> None:
    assert check_body(b'{"a": "\\ud83d\\ude00", "b": 1e10, "c": "NaN"}') is None  # an escaped emoji is fine
    problem = check_body(b'{"params": {"6.text": "x\\ud800"}}')
    assert problem is not None and problem.field == "params.6.text" and "surrogate" in problem.problem
    problem = check_body(b'{"w": [1, {"\\udfff": 2}]}')
    assert problem is not None and problem.field == "w.1.\\udfff"  # the path itself stays printable
    assert find_unsafe({"a": [float("nan")]}).field == "a.0"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="5000 digits"):
        strict_loads("9" * 5000)
    assert scrub({"\ud800": [float("inf"), "a\udc00"]}) == {"\ufffd": [None, "a\ufffd"]}


# ------------------------------------------------------------------------------------------ REST
@pytest.mark.parametrize("kind", list(HOSTILE_VALUES))
def test_submit_refuses_with_422_naming_the_param_and_creates_nothing(
    kind: str, gate: Gate, emulator: EmulatorThread
) -> None:
    response = gate.client.post(
        "/api/workflow/submit", content=body_with(HOSTILE_VALUES[kind]), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_json_value" and body["field"] == "params.6.text", body
    assert "params.6.text" in body["message"]
    assert gate.client.get("/api/tasks").json()["total"] == 0  # nothing was created: a retry cannot run it twice
    assert history_of(emulator) == {}
    canary(gate)


def test_multipart_submit_refuses_too(gate: Gate, emulator: EmulatorThread) -> None:
    for value in (SURROGATE, "NaN", "1e400"):
        response = gate.client.post(
            "/api/workflow/submit", files={"request": (None, body_with(value).decode(), "application/json")}
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "params.6.text"
    assert gate.client.get("/api/tasks").json()["total"] == 0
    canary(gate)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", SURROGATE])
def test_workflow_routes_refuse_instead_of_writing_null(value: str, gate: Gate) -> None:
    workflow = json.dumps(sd_workflow())
    poisoned = workflow.replace('"seed": 42', f'"seed": {value}')
    assert poisoned != workflow
    cases = {
        "/api/workflow/params": f'{{"workflow": {poisoned}}}',
        "/api/workflow/convert": poisoned,
        "/api/workflow/update": f'{{"name": "sd", "params": {{"3.cfg": {value}}}}}',
    }
    for path, raw in cases.items():
        response = gate.client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "invalid_json_value", (path, response.text)
    upload = gate.client.post("/api/workflow/upload", files={"file": ("w.json", poisoned.encode(), "application/json")})
    assert upload.status_code == 422 and upload.json()["field"] == "3.inputs.seed", upload.text
    assert gate.client.get("/api/workflows").json()["workflows"] == []


def test_viewcomfy_endpoint_refuses_json_and_form(gate: Gate, emulator: EmulatorThread) -> None:
    url = "/api/viewcomfy/infer"
    workflow = json.dumps(sd_workflow())
    json_body = f'{{"workflow_api": {workflow}, "params": {{"6-inputs-text": {SURROGATE}}}}}'
    response = gate.client.post(url, content=json_body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["field"] == "params.6-inputs-text", response.text
    for value in (SURROGATE, "NaN", "1e400"):
        form = {"workflow_api": workflow, "params": f'{{"6-inputs-text": {value}}}'}
        response = gate.client.post(url, data=form)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "params.6-inputs-text"
    form = {"workflow_api": workflow.replace('"seed": 42', '"seed": NaN'), "params": "{}"}
    response = gate.client.post(url, data=form)
    assert response.status_code == 422 and response.json()["field"] == "workflow_api.3.inputs.seed", response.text
    assert gate.client.get("/api/tasks").json()["total"] == 0
    canary(gate)


# ------------------------------------------------------------------------------------------ the store
def test_a_poisoned_store_is_read_back_answerable(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> None:
    """Rows an older ComfyGate wrote (a lone surrogate in params, an unreadable row) do not break listings."""
    gate = gate_factory([emulator.url])
    canary(gate)
    database = gate.settings.database_path
    assert database is not None
    gate.server.stop()
    poisoned = {
        "task_id": "poisoned",
        "prompt_id": "poisoned-prompt",
        "status": "completed",
        "created_at": time.time(),
        "finished_at": time.time(),
        "params": {"6.text": "\ud800 lighthouse"},
        "error": {"message": "\udfff"},
    }
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO tasks (task_id, created_at, status, final, record) VALUES (?, ?, ?, 1, ?)",
            ("poisoned", poisoned["created_at"], "completed", json.dumps(poisoned)),
        )
        conn.execute(
            "INSERT INTO tasks (task_id, created_at, status, final, record) VALUES (?, ?, ?, 1, ?)",
            ("garbage", time.time(), "completed", "{not json"),
        )
    again = gate_factory([emulator.url], data_dir=gate.settings.data_dir)
    listed = again.client.get("/api/tasks")
    assert listed.status_code == 200, listed.text
    ids = [t["task_id"] for t in listed.json()["tasks"]]
    assert "poisoned" in ids and "garbage" not in ids
    assert again.client.get("/api/history").status_code == 200
    one = again.client.get("/api/task/poisoned")
    assert one.status_code == 200 and one.json()["params"]["6.text"] == "\ufffd lighthouse"
    stop = again.client.post("/api/interrupt/poisoned")
    assert stop.status_code < 500, stop.text
    canary(again)


def test_error_bodies_stay_json_whatever_they_echo(gate: Gate) -> None:
    """A route that echoes the value it refuses (ParameterError's `received`) cannot 500 over it."""
    raw = httpx.post(
        f"{gate.url}/api/workflow/submit",
        json={"workflow": sd_workflow(), "params": {"3.steps": "NaN"}},  # a string: legal JSON, refused as INT
        timeout=10,
    )
    assert raw.status_code == 422, raw.text
    assert raw.json()["error"] == "invalid_parameters"
