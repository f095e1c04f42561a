"""Webhooks against a real local receiver that checks the Standard Webhooks signature on its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Gate
from tests.protocol import load_workflow
from tests.servers import AppServer, free_port

KEY = os.urandom(24)
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def verify(headers: dict[str, str], body: bytes, key: bytes = KEY, tolerance: int = 300) -> bool:
    """The spec's verification, written from the spec (not from ComfyGate's code)."""
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if "webhook-signature" not in headers:
        return False
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    offered = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, o.encode()) for o in offered)


class Receiver:
    """Records every delivery; answers ``fail_first`` times with ``fail_status`` before 200."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.lock = threading.Lock()
        self.server = AppServer(Starlette(routes=[Route("/hook", self.hook, methods=["POST"])]))

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.calls.append({"headers": dict(request.headers), "body": body, "valid": verify(request.headers, body)})
            status = self.fail_status if len(self.calls) <= self.fail_first else 200
        return Response(status_code=status)

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.calls) >= count:
                    return list(self.calls)
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.calls)} calls, expected {count}")


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kw: Any) -> Receiver:
        receiver = Receiver(**kw)
        receiver.server.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.server.stop()


def deliveries(gate: Gate, task_id: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = gate.task(task_id).get("webhook_deliveries") or []
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} shows {gate.task(task_id).get('webhook_deliveries')}")


def test_per_task_webhook_signed_with_absolute_output_urls(
    emulator: Any, gate_factory: Callable[..., Gate], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    gate = gate_factory([emulator.url], allow_private_urls=True, webhook_secret=SECRET)
    task_id = gate.submit(load_workflow("invert_save.json"), webhook=receiver.url).json()["task_id"]
    [call] = receiver.wait_for(1)
    assert call["valid"], call["headers"]
    assert call["headers"]["webhook-id"].startswith("msg_")
    payload = json.loads(call["body"])
    assert payload["type"] == "task.completed" and payload["data"]["task_id"] == task_id
    [output] = payload["data"]["outputs"]
    assert output["url"].startswith(gate.url + "/api/image/")
    assert gate.client.get(output["url"]).status_code == 200
    [attempt] = deliveries(gate, task_id, 1)
    assert attempt["attempt"] == 1 and attempt["status_code"] == 200 and attempt["duration_ms"] >= 0
    assert attempt["url"] == receiver.url and attempt["at"] > 0


def test_5xx_is_retried_with_backoff_and_every_attempt_recorded(
    emulator: Any, gate_factory: Callable[..., Gate], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(fail_first=2, fail_status=503)
    gate = gate_factory([emulator.url], allow_private_urls=True, webhook_secret=SECRET, webhook_backoff=0.05)
    task_id = gate.submit(load_workflow("invert_save.json"), webhook=receiver.url).json()["task_id"]
    calls = receiver.wait_for(3)
    assert all(c["valid"] for c in calls)
    assert len({c["headers"]["webhook-id"] for c in calls}) == 1, "retries keep the message id"
    found = deliveries(gate, task_id, 3)
    assert [(d["attempt"], d["status_code"]) for d in found] == [(1, 503), (2, 503), (3, 200)]


def test_global_webhook_on_failure_and_public_url(
    emulator: Any, gate_factory: Callable[..., Gate], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    # The operator's own global URL may be on loopback even with private URLs refused for callers.
    gate = gate_factory(
        [emulator.url], webhook_url=receiver.url, webhook_secret=SECRET, public_url="https://gate.example.com/"
    )
    task_id = gate.submit(load_workflow("runtime_error_save_outside.json")).json()["task_id"]
    [call] = receiver.wait_for(1)
    payload = json.loads(call["body"])
    assert call["valid"] and payload["type"] == "task.failed"
    assert payload["data"]["url"] == f"https://gate.example.com/api/task/{task_id}"
    assert payload["data"]["error"]["type"] == "execution_error"


def test_interrupted_task_and_network_errors_give_up_after_max_attempts(
    emulator: Any, gate_factory: Callable[..., Gate], receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    dead = f"http://127.0.0.1:{free_port()}/hook"
    gate = gate_factory(
        [emulator.url],
        allow_private_urls=True,
        webhook_url=receiver.url,
        webhook_max_attempts=3,
        webhook_backoff=0.02,
    )
    emulator.set_delays(step_delay=0.1)
    try:
        wf = load_workflow("sd_txt2img_api.json")
        wf["3"]["inputs"]["steps"] = 30
        task_id = gate.submit(wf, webhook=dead).json()["task_id"]
        gate.wait(task_id, {"running"})
        gate.client.post(f"/api/interrupt/{task_id}")
        [call] = receiver.wait_for(1)
    finally:
        emulator.set_delays(step_delay=0.0)
    assert json.loads(call["body"])["type"] == "task.interrupted"
    assert "webhook-signature" not in call["headers"], "no secret: unsigned"
    found = deliveries(gate, task_id, 4)
    to_dead = [d for d in found if d["url"] == dead]
    assert [d["attempt"] for d in to_dead] == [1, 2, 3] and all("error" in d for d in to_dead)


def test_private_webhook_url_is_refused_at_submit(gate: Gate) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "ftp://example.com/x", "not a url"):
        response = gate.submit(load_workflow("invert_save.json"), webhook=url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"] == "url_not_allowed"
