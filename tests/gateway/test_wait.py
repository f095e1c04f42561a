"""Synchronous submit: wait=true answers with the ended task, optionally with outputs inline."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Gate, written
from tests.protocol import load_workflow, sd_workflow


def test_wait_in_body_returns_the_completed_task_with_outputs(gate: Gate) -> None:
    response = gate.submit(sd_workflow(steps=2), wait=True)
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "completed"
    [output] = task["outputs"]
    assert output["content_type"] == "image/png" and output["size"] > 0 and output["url"].startswith("/api/image/")
    assert "data" not in output


def test_wait_query_with_base64_outputs(gate: Gate) -> None:
    response = gate.client.post(
        "/api/workflow/submit?wait=true&output_format=base64", json={"workflow": load_workflow("invert_save.json")}
    )
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    data = base64.b64decode(output["data"])
    path = gate.settings.outputs_dir / output["filename"]
    assert written(path) and data == path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_base64_over_the_cap_is_skipped_and_says_so(emulator: Any, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([emulator.url], inline_output_max_bytes=10)
    response = gate.submit(load_workflow("invert_save.json"), output_format="base64")  # base64 implies wait
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["data"] is None and "INLINE_OUTPUT_MAX_BYTES" in output["data_skipped"]


def test_failed_task_is_returned_when_waiting(gate: Gate) -> None:
    response = gate.submit(load_workflow("runtime_error_save_outside.json"), wait=True)
    assert response.status_code == 200
    assert response.json()["status"] == "failed" and response.json()["error"]["type"] == "execution_error"


def test_wait_timeout_answers_202_with_the_running_task(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    try:
        response = gate.client.post(
            "/api/workflow/submit?wait=true&wait_timeout=0.3", json={"workflow": sd_workflow(20)}
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["status"] in {"queued", "running"} and body["wait_timed_out"] is True
        assert response.headers["location"] == f"/api/task/{body['task_id']}"
    finally:
        emulator.set_delays(step_delay=0.0)
    assert gate.wait(body["task_id"])["status"] == "completed"


@pytest.mark.parametrize(("cancel", "expected"), [(False, "completed"), (True, "interrupted")])
def test_client_disconnect_cancels_only_when_asked(gate: Gate, emulator: Any, cancel: bool, expected: str) -> None:
    emulator.set_delays(step_delay=0.05)
    url = f"{gate.url}/api/workflow/submit?wait=true&cancel_on_disconnect={str(cancel).lower()}"
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json={"workflow": sd_workflow(12)}, timeout=httpx.Timeout(10.0, read=0.3))
        tasks = gate.client.get("/api/tasks").json()["tasks"]
        task = gate.wait(tasks[0]["task_id"])
    finally:
        emulator.set_delays(step_delay=0.0)
    assert task["status"] == expected, task


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("wait_timeout=0", "wait_timeout"),
        ("wait_timeout=soon", "wait_timeout"),
        ("output_format=png", "output_format"),
        ("wait=perhaps", "wait"),
    ],
)
def test_a_bad_query_parameter_is_a_422_naming_it_and_nothing_runs(gate: Gate, query: str, name: str) -> None:
    before = gate.client.get("/api/tasks").json()["total"]
    response = gate.client.post(f"/api/workflow/submit?{query}", json={"workflow": load_workflow("invert_save.json")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request" and body["message"].startswith(f"query.{name}:"), body
    assert gate.client.get("/api/tasks").json()["total"] == before


def test_the_query_parameters_are_documented(gate: Gate) -> None:
    operation = gate.client.get("/openapi.json").json()["paths"]["/api/workflow/submit"]["post"]
    documented = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(documented) == {"wait", "wait_timeout", "output_format", "cancel_on_disconnect"}
    assert documented["wait_timeout"]["schema"]["anyOf"][0]["exclusiveMinimum"] == 0
