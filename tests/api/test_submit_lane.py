"""The lane that hands ``POST /api/workflow/submit`` to its route's function before FastAPI's routing: it is the
one that answers, with the app's own error handlers, and only what the security middlewares let through."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request

from api import submit_lane
from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok

SAVE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lane"}},
}


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = submit_lane.submit

    async def spy(request: Request) -> Any:
        calls.append(request.url.path)
        return await real(request)

    monkeypatch.setattr(submit_lane, "submit", spy)  # the lane's own reference, not the router's
    return calls


def test_the_lane_answers_submissions_and_their_errors(gate: Gate, lane_calls: list[str]) -> None:
    task = submit_ok(gate, SAVE)
    assert lane_calls == ["/api/workflow/submit"]
    assert gate.wait(task["task_id"])["status"] == "completed"
    # A ComfyGateError (an unknown saved workflow: 404), a body FastAPI's handler words (422), ComfyUI's
    # node_errors (422): the app's handlers' bodies, as through the router.
    missing = gate.client.post("/api/workflow/submit", json={"workflow_name": "no-such-workflow"})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found", missing.text
    wrong = gate.client.post("/api/workflow/submit", json={"workflow": SAVE, "timeout": "soon"})
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_request", wrong.text
    assert "timeout" in wrong.json()["message"]
    bad_node = {**SAVE, "1": {**SAVE["1"], "inputs": {**SAVE["1"]["inputs"], "width": "wide"}}}
    refused = gate.client.post("/api/workflow/submit", json={"workflow": bad_node})
    assert refused.status_code == 422, refused.text
    assert len(lane_calls) == 4
    # Anything else goes on to the router (with a trailing slash, only GET /api/workflow/{name} matches: 405).
    other = gate.client.post("/api/workflow/submit/", json={"workflow": SAVE}, follow_redirects=False)
    assert other.status_code == 405 and len(lane_calls) == 4


def test_an_unexpected_error_is_the_apps_500(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(request: Request) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(submit_lane, "submit", broken)
    answer = gate.client.post("/api/workflow/submit", json={"workflow": SAVE})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal_error",
        "message": "ComfyGate hit an unexpected RuntimeError; see its log",
    }


def test_the_lane_answers_nothing_the_checks_before_it_refuse(
    emulator: EmulatorThread, gate_factory: Any, lane_calls: list[str]
) -> None:
    key = "k" * 32
    gate = gate_factory([emulator.url], api_keys=[key])
    with httpx.Client(base_url=gate.url) as stranger:
        assert stranger.post("/api/workflow/submit", json={"workflow": SAVE}).status_code == 401
        foreign = stranger.post(
            "/api/workflow/submit",
            json={"workflow": SAVE},
            headers={"authorization": f"Bearer {key}", "origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        deep: Any = {}
        for _ in range(200):
            deep = {"x": deep}
        too_deep = stranger.post(
            "/api/workflow/submit", json={"workflow": SAVE, "params": deep}, headers={"authorization": f"Bearer {key}"}
        )
        assert too_deep.status_code in (400, 413, 422) and lane_calls == []
        good = stranger.post(
            "/api/workflow/submit", json={"workflow": SAVE}, headers={"authorization": f"Bearer {key}"}
        )
        assert good.status_code == 200 and lane_calls == ["/api/workflow/submit"]
