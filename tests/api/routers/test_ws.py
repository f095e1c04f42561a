"""/ws under hostile use: subscription bounds, oversized and malformed ids, binary frames."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api.routers.ws import MAX_TASK_ID_LENGTH, MAX_TASK_IDS
from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok
from tests.protocol import sd_workflow


def listener_ids(gate: Gate) -> int:
    """Task ids followed by filtered listeners, summed over the hub's index (what memory grows with)."""
    hub = gate.server.app.state.services.hub
    return sum(len(subs) for subs in hub._by_task.values())


def test_subscriptions_are_bounded_per_listener(gate: Gate) -> None:
    with connect(f"{gate.ws_url}/ws?task_id=first", open_timeout=5, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        for i in range(MAX_TASK_IDS + 200):
            ws.send(json.dumps({"type": "subscribe", "task_id": f"t{i:06d}"}))
        errors = []
        ws.send('{"type": "ping"}')
        while (msg := json.loads(ws.recv(timeout=10)))["type"] != "pong":
            errors.append(msg)
        assert len(errors) == 201 and all(e["type"] == "error" for e in errors)
        assert f"at most {MAX_TASK_IDS} tasks" in errors[0]["message"]
        assert listener_ids(gate) == MAX_TASK_IDS
        for bad in ("x" * (MAX_TASK_ID_LENGTH + 1), "", "line\nbreak", 12, {"a": 1}, None):
            ws.send(json.dumps({"type": "subscribe", "task_id": bad}))
        ws.send('{"type": "ping"}')
        replies = [json.loads(ws.recv(timeout=5)) for _ in range(7)]
        assert [r["type"] for r in replies] == ["error"] * 6 + ["pong"]
    assert listener_ids(gate) == 0


def test_a_handshake_asking_too_much_is_refused_with_400(gate: Gate) -> None:
    too_many = ",".join(f"t{i}" for i in range(MAX_TASK_IDS + 1))
    too_long = "x" * (MAX_TASK_ID_LENGTH + 1)
    for query in (too_many, too_long):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{gate.ws_url}/ws?task_id={query}", open_timeout=5)
        assert refused.value.response.status_code == 400
        assert b"task_id" in refused.value.response.body
    with connect(f"{gate.ws_url}/ws?task_id=a,b", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["subscribed"] == ["a", "b"]


def test_a_binary_frame_closes_with_1003_and_says_why(gate: Gate) -> None:
    with connect(f"{gate.ws_url}/ws", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(b"\x00\x01binary")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1003 and "binary" in closed.value.rcvd.reason


def test_the_socket_still_serves_after_hostile_listeners(gate: Gate, emulator: EmulatorThread) -> None:
    with connect(f"{gate.ws_url}/ws", open_timeout=5) as ws:
        ws.send(b"\xff" * 10)
    task = submit_ok(gate, sd_workflow(steps=1))
    with connect(f"{gate.ws_url}/ws?task_id={task['task_id']}", open_timeout=5) as ws:
        seen = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
        assert seen[0]["type"] == "hello" and seen[1]["type"] == "task_update"
    assert gate.wait(task["task_id"])["status"] == "completed"
