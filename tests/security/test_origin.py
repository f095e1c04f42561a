"""Web pages of other sites cannot drive ComfyGate through the user's browser, keys or no keys.

Each request below is one a browser sends from any page without a CORS preflight (a form, a
``text/plain`` POST, a WebSocket), with that page's Origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from emulator.server import EmulatorThread
from security.origin import OriginPolicy
from tests.conftest import Gate, submit_ok
from tests.protocol import sd_workflow

EVIL = "https://evil.example"
KEY = "origin-test-key-0123456789"


def refused(response: object) -> None:
    assert response.status_code == 403, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["error"] == "forbidden_origin" and "COMFYUI_CORS_ORIGINS" in body["message"]


def test_policy_rules() -> None:
    policy = OriginPolicy(["https://app.example.com"])
    assert policy.allows("http://127.0.0.1:8000", "127.0.0.1:8000", "http")  # same origin
    assert policy.allows("http://gate.lan:8000", "gate.lan:8000", "ws")
    assert policy.allows("http://localhost:5173", "127.0.0.1:8000", "http")  # loopback dev server
    assert policy.allows("http://[::1]:3000", "127.0.0.1:8000", "http")
    assert policy.allows("https://app.example.com/", "127.0.0.1:8000", "http")  # configured
    for origin in (EVIL, "null", "http://127.0.0.1.evil.example", "http://gate.lan:9000", "file://", "garbage"):
        assert not policy.allows(origin, "gate.lan:8000", "http"), origin


@pytest.mark.parametrize("keys", [False, True], ids=["keys off", "keys on"])
def test_foreign_pages_are_refused_everywhere(
    keys: bool, emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    gate = gate_factory([emulator.url], **({"api_keys": [KEY]} if keys else {}))
    auth = {"X-API-Key": KEY} if keys else {}
    gate.client.headers.update(auth)
    task = submit_ok(gate, sd_workflow(steps=1))
    gate.wait(task["task_id"])
    saved = gate.client.post(
        "/api/workflow/upload", files={"file": ("sd.json", json.dumps(sd_workflow()).encode(), "application/json")}
    )
    assert saved.status_code == 200, saved.text
    before = gate.client.get("/api/workflow/sd").json()["workflow"]
    evil = {"Origin": EVIL}

    form = {"request": (None, json.dumps({"workflow": sd_workflow()}), "application/json")}
    refused(gate.client.post("/api/workflow/submit", files=form, headers=evil))
    poisoned = json.dumps({**sd_workflow(), "99": {"class_type": "SaveImage", "inputs": {}}}).encode()
    upload = {"file": ("sd.json", poisoned, "application/json")}
    refused(gate.client.post("/api/workflow/upload", files=upload, data={"overwrite": "true"}, headers=evil))
    plain = {**evil, "content-type": "text/plain"}
    refused(gate.client.post("/api/queue/clear", content=b"x", headers=plain))
    refused(gate.client.post(f"/api/interrupt/{task['task_id']}", content=b"x", headers=plain))
    refused(gate.client.get("/api/tasks", headers=evil))
    refused(gate.client.get("/api/tasks", headers={"Origin": "null"}))
    query = f"?token={KEY}" if keys else ""
    with pytest.raises(InvalidStatus) as denied:
        connect(f"{gate.ws_url}/ws{query}", origin=EVIL, open_timeout=5)  # type: ignore[arg-type]
    assert denied.value.response.status_code == 403

    assert gate.client.get("/api/tasks").json()["total"] == 1  # nothing was submitted
    assert gate.client.get("/api/workflow/sd").json()["workflow"] == before  # nothing was overwritten
    # The debugger (same origin), a dev server on loopback and plain clients still work.
    same = {"Origin": gate.url}
    assert gate.client.get("/api/tasks", headers=same).status_code == 200
    assert gate.client.get("/api/tasks", headers={"Origin": "http://localhost:5173"}).status_code == 200
    with connect(f"{gate.ws_url}/ws{query}", origin=gate.url, open_timeout=5) as ws:  # type: ignore[arg-type]
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    again = submit_ok(gate, sd_workflow(steps=1))
    assert gate.wait(again["task_id"])["status"] == "completed"


def test_configured_origins_are_allowed(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([emulator.url], cors_origins=["https://app.example"])
    ok = gate.client.get("/api/tasks", headers={"Origin": "https://app.example"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    refused(gate.client.get("/api/tasks", headers={"Origin": EVIL}))
    with connect(f"{gate.ws_url}/ws", origin="https://app.example", open_timeout=5) as ws:  # type: ignore[arg-type]
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
