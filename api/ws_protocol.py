"""uvicorn's websockets-sansio protocol, with the frames of one event-loop turn written at once.

uvicorn writes every WebSocket message to the socket as soon as the app sends it: one ``write()``
system call per message per listener, which on loopback also runs the receiver's TCP path. With 1,000
listeners that call is most of ComfyGate's CPU (BENCHMARKS.md, fan-out). Here the protocol's transport
is wrapped: writes are collected and go out as one ``write()`` at the end of the loop turn (a
``call_soon``), so a listener that gets several messages in a turn costs one system call. Nothing else
changes: the same frames, in the same order, on the same transport; ``close()`` writes what is pending
first. Plugged in through uvicorn's own ``ws=`` setting (a protocol class), see ``start.py``.

It also offers an ASGI extension, ``comfygate.websocket.frames`` in the scope: an app may send
``{"type": "websocket.send", "comfygate.frames": data}`` where ``data`` is any number of complete
WebSocket frames a server may send as they are (unmasked, no extension in use: ``frame_text``). The
fan-out frames each message once for all its listeners and sends a listener's whole backlog in one
ASGI message, instead of one ASGI send and one framing per message per listener. The extension is
offered only when no WebSocket extension (permessage-deflate) was negotiated; apps that do not look
for it are unaffected. Its dict also holds two callables for writing outside the app's task:
``write(frames)`` (the same as that send, synchronously; raises ``OSError`` once the connection is
gone) and ``writable()`` (False while the socket's buffer is full: then use the awaiting send).

The base class is uvicorn's, not public API: ``requirements.txt`` bounds uvicorn to the tested range,
and ``websocket_protocol()`` checks at import that every method and attribute this subclass relies on
is still there. When one is missing it logs why and returns uvicorn's stock protocol instead: the app
then sends text frames one by one (``FRAMES_EXTENSION`` is absent), slower but the same messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger("comfygate.ws")

try:
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    _IMPORT_PROBLEM: str | None = None
except ImportError as exc:  # a uvicorn outside the bounds of requirements.txt
    _IMPORT_PROBLEM = str(exc)
    WebSocketsSansIOProtocol = object  # type: ignore[misc,assignment]  # never served: see websocket_protocol()
    ClientDisconnected = ConnectionError  # type: ignore[misc,assignment]

STOCK_PROTOCOL = "websockets-sansio"
#: What the subclass below calls or reads on uvicorn's protocol (methods, and attributes its code sets).
PROTOCOL_NEEDS = (
    "connection_made",
    "handle_connect",
    "send",
    "conn",
    "writable",
    "disconnected",
    "close_sent",
    "transport",
    "scope",
)
#: What it reads on the websockets connection uvicorn wraps (``self.conn``).
CONNECTION_NEEDS = ("extensions", "state", "expect_continuation_frame")

FRAMES_EXTENSION = "comfygate.websocket.frames"
# text → its frame, for the most recent messages: built once, whatever the number of listeners. Bounded in
# count (a backlog of several seconds at 500 messages/s) and in bytes (a final update carries its outputs'
# texts: 4,096 of them held ~8 MB in the cluster memory benchmark); oldest out first. A large message is
# framed for each listener instead of kept.
_frames: dict[str, bytes] = {}
_framed_bytes = 0
FRAMES_KEPT = 4096
FRAMES_KEPT_BYTES = 2 << 20
FRAME_CACHED_MAX = 16 << 10


def join_frames(texts: list[str]) -> bytes:
    return frame_text(texts[0]) if len(texts) == 1 else b"".join(map(frame_text, texts))


def frame_text(text: str) -> bytes:
    """A complete unmasked, unfragmented text frame (RFC 6455 5.2), as a server sends it."""
    global _framed_bytes
    frame = _frames.get(text)
    if frame is None:
        payload = text.encode()
        size = len(payload)
        if size < 126:
            head = bytes((0x81, size))
        elif size < 65536:
            head = bytes((0x81, 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x81, 127)) + size.to_bytes(8, "big")
        frame = head + payload
        if size > FRAME_CACHED_MAX:
            return frame
        while _frames and (len(_frames) >= FRAMES_KEPT or _framed_bytes + 2 * len(frame) > FRAMES_KEPT_BYTES):
            _framed_bytes -= 2 * len(_frames.pop(next(iter(_frames))))
        _frames[text] = frame
        _framed_bytes += 2 * len(frame)  # the text (the key) and its frame, both about the payload's size
    return frame


class CoalescingTransport:
    """A transport whose ``write()`` calls of one loop turn reach the real transport as one."""

    __slots__ = ("_transport", "_loop", "_pending", "_scheduled")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading...
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = getattr(self, "loop", None) or asyncio.get_running_loop()
        super().connection_made(CoalescingTransport(transport, loop))  # type: ignore[arg-type]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)  # builds the scope and schedules the app; it has not run yet
        scope = getattr(self, "scope", None)
        if scope is not None and not self.conn.extensions:
            scope["extensions"][FRAMES_EXTENSION] = {"write": self.write_frames, "writable": self.writable.is_set}

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.refuse_handshake()

    def refuse_handshake(self) -> None:
        """Answer a handshake the parser refused (request line over 8 KB: 414, header too long: 431,
        unparsable: 400) and close. uvicorn's sansio protocol only looks for the parsed request, so
        such a client would otherwise wait forever on an open socket."""
        if self.transport.is_closing():
            return
        answer = b"".join(self.conn.data_to_send())
        if not answer.startswith(b"HTTP/"):  # websockets only closes on an unparsable request
            body = b"Failed to open a WebSocket connection: did not receive a valid HTTP request.\n"
            answer = (
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(answer)
        self.transport.close()

    def write_frames(self, frames: bytes) -> None:
        # What websockets' send_text checks, and uvicorn's answer when the connection is gone.
        if self.disconnected or self.close_sent or self.conn.state is not State.OPEN:
            raise ClientDisconnected()
        if self.conn.extensions or self.conn.expect_continuation_frame:
            raise RuntimeError("pre-framed messages need a connection without extensions, between messages")
        self.transport.write(frames)

    async def send(self, message: Any) -> None:
        frames = message.get("comfygate.frames")
        if frames is None or message["type"] != "websocket.send":
            return await super().send(message)
        if not self.writable.is_set():  # the socket's buffer is full: wait like uvicorn's own send
            await self.writable.wait()
        self.write_frames(frames)


def _known_names(cls: type) -> set[str]:
    """Attributes a class has or its code touches (instance attributes are set in its methods)."""
    names = set(dir(cls))
    for klass in cls.__mro__:
        for value in vars(klass).values():
            for func in (value, getattr(value, "fget", None), getattr(value, "__func__", None)):
                code = getattr(func, "__code__", None)
                if code is not None:
                    names.update(code.co_names)
    return names


def missing_internals(
    protocol: type | None = None,
    connection: type = ServerProtocol,
    protocol_needs: Iterable[str] = PROTOCOL_NEEDS,
    connection_needs: Iterable[str] = CONNECTION_NEEDS,
) -> list[str]:
    """The uvicorn/websockets internals this module needs and cannot find (empty: safe to serve with)."""
    if _IMPORT_PROBLEM is not None:
        return [_IMPORT_PROBLEM]
    base = protocol or WebSocketsSansIOProtocol
    found = _known_names(base)
    missing = [f"{base.__name__}.{name}" for name in protocol_needs if name not in found]
    found = _known_names(connection)
    missing += [f"{connection.__name__}.{name}" for name in connection_needs if name not in found]
    return missing


def websocket_protocol(missing: list[str] | None = None) -> type[Any] | str:
    """The protocol for uvicorn's ``ws=``: ours, or uvicorn's stock one (logged) when internals changed."""
    missing = missing_internals() if missing is None else missing
    if missing:
        log.warning(
            "serving WebSockets with uvicorn's stock %s protocol (one write per message): this uvicorn lacks %s",
            STOCK_PROTOCOL if _IMPORT_PROBLEM is None else "auto",
            ", ".join(missing),
        )
        return STOCK_PROTOCOL if _IMPORT_PROBLEM is None else "auto"
    return CoalescingWebSocketProtocol
