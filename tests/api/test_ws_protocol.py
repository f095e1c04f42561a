"""ComfyGate's WebSocket protocol: coalesced writes and the pre-framed messages extension."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from websockets.sync.client import connect

from api.ws_protocol import (
    FRAMES_EXTENSION,
    PROTOCOL_NEEDS,
    STOCK_PROTOCOL,
    CoalescingTransport,
    CoalescingWebSocketProtocol,
    frame_text,
    missing_internals,
    websocket_protocol,
)
from tests.servers import AppServer

TEXTS = ["a", "é" * 100, "x" * 200, json.dumps({"big": "y" * 70_000}), "last"]


def make_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        framed = FRAMES_EXTENSION in websocket.scope["extensions"]
        await websocket.send_text(json.dumps({"framed": framed}))
        if framed:
            await websocket.send({"type": "websocket.send", "comfygate.frames": b"".join(map(frame_text, TEXTS))})
        else:
            for text in TEXTS:
                await websocket.send_text(text)
        await websocket.send_text("end")
        await websocket.receive_text()

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[AppServer]:
    srv = AppServer(make_app()).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_frames_arrive_whole_and_in_order(server: AppServer, compression: str | None) -> None:
    with connect(f"{server.ws_url}/ws", compression=compression, max_size=None) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first == {"framed": compression is None}  # never offered when permessage-deflate is in use
        got = [ws.recv(timeout=5) for _ in range(len(TEXTS) + 1)]
        ws.send("bye")
    assert got == [*TEXTS, "end"]


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_loop_turn_become_one() -> None:
    real = FakeTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    for part in (b"a", b"bc", b"", b"d"):
        transport.write(part)
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"abcd"]
    transport.write(b"e")
    transport.close()  # what is pending goes out before the close
    assert real.writes == [b"abcd", b"e"] and real.closed
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
    transport.write(b"late")
    await asyncio.sleep(0)
    assert real.writes == [b"abcd", b"e"]  # nothing written to a closed transport


def test_gate_ws_frames_path_and_text_path_carry_the_same_updates(gate: Any) -> None:
    """/ws on ComfyGate: a listener without compression gets pre-built frames (written by the hub), one
    with permessage-deflate gets per-message sends; both see the same updates, in the same order."""
    from tests.api.test_app import sd_workflow
    from tests.conftest import FINAL

    with (
        connect(f"{gate.ws_url}/ws", compression=None) as raw,
        connect(f"{gate.ws_url}/ws", compression="deflate") as deflated,
    ):
        assert json.loads(raw.recv(timeout=5))["type"] == "hello"
        assert json.loads(deflated.recv(timeout=5))["type"] == "hello"
        task_id = gate.submit(sd_workflow(steps=3)).json()["task_id"]
        seen: list[list[tuple[str, str]]] = []
        for ws in (raw, deflated):
            updates: list[tuple[str, str]] = []
            while True:
                msg = json.loads(ws.recv(timeout=10))
                if msg.get("task_id") != task_id:
                    continue
                updates.append((msg["type"], msg.get("status") or ""))
                if msg["type"] == "task_update" and msg["status"] in FINAL:
                    break
            seen.append(updates)
    assert seen[0] == seen[1]
    assert seen[0][-1] == ("task_update", "completed")


def test_this_uvicorn_has_every_internal_the_protocol_uses() -> None:
    assert missing_internals() == []
    assert websocket_protocol() is CoalescingWebSocketProtocol


def test_missing_internals_are_named() -> None:
    class OldProtocol:
        def send(self) -> None:
            self.transport = None

    missing = missing_internals(OldProtocol)
    assert "OldProtocol.handle_connect" in missing and "OldProtocol.writable" in missing
    assert "OldProtocol.send" not in missing and "OldProtocol.transport" not in missing


def test_changed_internals_fall_back_to_the_stock_protocol(caplog: pytest.LogCaptureFixture) -> None:
    """A uvicorn whose protocol lost an attribute we use: the stock protocol serves, with a log line why."""
    missing = missing_internals(protocol_needs=(*PROTOCOL_NEEDS, "renamed_in_a_newer_uvicorn"))
    assert missing == ["WebSocketsSansIOProtocol.renamed_in_a_newer_uvicorn"]
    with caplog.at_level("WARNING", logger="comfygate.ws"):
        protocol = websocket_protocol(missing)
    assert protocol == STOCK_PROTOCOL
    assert "renamed_in_a_newer_uvicorn" in caplog.text and "stock" in caplog.text
    with AppServer(make_app(), ws=protocol) as srv, connect(f"{srv.ws_url}/ws", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"framed": False}  # no pre-framed extension: text frames
        got = [ws.recv(timeout=5) for _ in range(len(TEXTS) + 1)]
        ws.send("bye")
    assert got == [*TEXTS, "end"]


def _raw_handshake(server: AppServer, path: bytes, extra: bytes = b"") -> bytes:
    """Send an upgrade request over a raw socket; everything the server answers until it closes."""
    import socket

    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):  # a timeout here (never answered, never closed) fails the test
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        (b"/ws?task_id=" + b"a" * 9000, b"", b"414"),
        (b"/ws", b"X-Big: " + b"b" * 9000 + b"\r\n", b"431"),
    ],
    ids=["request line over 8 KB", "header over 8 KB"],
)
def test_an_oversized_handshake_is_answered_and_closed(
    server: AppServer, path: bytes, extra: bytes, status: bytes
) -> None:
    answer = _raw_handshake(server, path, extra)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b"Failed to open a WebSocket connection" in answer
    with connect(f"{server.ws_url}/ws", compression=None, max_size=None) as ws:  # and serves the next one
        assert json.loads(ws.recv(timeout=5)) == {"framed": True}
        ws.send("bye")


def test_the_frame_cache_is_bounded_in_bytes_and_skips_large_messages() -> None:
    """Built frames are kept for the next listener, but never more than FRAMES_KEPT_BYTES of them: a final
    update carrying outputs' texts is ~1 kB, and 4,096 of them held ~8 MB per replica."""
    from api import ws_protocol

    texts = [json.dumps({"n": i, "text": "z" * 3000}) for i in range(2000)]
    for text in texts:
        assert frame_text(text) == frame_text(text)  # the cached frame is the same frame
    held = sum(len(k) + len(v) for k, v in ws_protocol._frames.items())
    assert held <= ws_protocol.FRAMES_KEPT_BYTES
    assert texts[-1] in ws_protocol._frames and texts[0] not in ws_protocol._frames  # the newest stay
    big = "b" * (ws_protocol.FRAME_CACHED_MAX + 1)
    frame = frame_text(big)
    assert frame[2:4] == len(big).to_bytes(2, "big") and frame.endswith(big.encode())
    assert big not in ws_protocol._frames
