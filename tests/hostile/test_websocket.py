"""Hostile WebSocket use: frames (text garbage, hostile JSON, binary) and handshakes (query strings,
oversized request lines). After each, a new listener still gets its hello and the REST canary passes."""

from __future__ import annotations

import json
import socket
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_JSON, HOSTILE_TEXT, KEY, canary, in_url, raw_json


def ws_url(gate: Gate, query: str = "") -> str:
    token = f"token={KEY}" if gate.settings.api_keys else ""
    joined = "&".join(part for part in (query, token) if part)
    return f"{gate.ws_url}/ws" + (f"?{joined}" if joined else "")


def ws_canary(gate: Gate) -> None:
    with connect(ws_url(gate), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    canary(gate)


@HOSTILE
@given(
    frames=st.lists(
        st.one_of(HOSTILE_JSON.map(lambda v: raw_json(v).decode()), st.binary(max_size=64), HOSTILE_TEXT), max_size=5
    )
)
def test_frames(target: Gate, frames: list[Any]) -> None:
    with connect(ws_url(target), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        try:
            for frame in frames:
                ws.send(frame if isinstance(frame, bytes) else frame.encode("utf-8", "replace").decode())
            ws.send(json.dumps({"type": "ping"}))
            while json.loads(ws.recv(timeout=5))["type"] != "pong":
                pass
        except ConnectionClosed as closed:  # only a binary frame ends the connection, and says why
            assert closed.rcvd is not None and closed.rcvd.code == 1003, closed
    ws_canary(target)


@HOSTILE
@given(ids=st.lists(HOSTILE_TEXT, max_size=5), extra=HOSTILE_TEXT)
def test_handshake_queries(target: Gate, ids: list[str], extra: str) -> None:
    query = "task_id=" + ",".join(in_url(i) for i in ids) + "&x=" + in_url(extra)
    try:
        with connect(ws_url(target, query), open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    except InvalidStatus as refused:
        assert refused.response.status_code == 400, refused
    ws_canary(target)


@HOSTILE
@given(size=st.integers(min_value=8_000, max_value=70_000))
def test_oversized_handshakes_are_answered(target: Gate, size: int) -> None:
    with socket.create_connection((target.server.host, target.server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /ws?task_id=" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):  # a server that never answers nor closes fails here (timeout)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    ws_canary(target)
