"""Lean loopback clients for the benchmarks: keep-alive HTTP/1.1 and a WebSocket reader.

The benchmark measures servers on a 2-core machine, so its own clients must cost as little CPU as
possible: httpx and the websockets library spend tens of microseconds per message in Python, which
would be charged to whichever server runs next to them. These clients do the minimum (no TLS, no
compression, no redirects, Content-Length bodies only) and stamp each WebSocket frame with the time
its bytes arrived (``time.time()``, one stamp per socket read).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


def split_url(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8188`` → ``("127.0.0.1", 8188)``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme in ("https", "wss") else 80)


class HttpError(RuntimeError):
    """A connection that broke or answered something this client cannot read."""


class HttpConn:
    """One keep-alive HTTP/1.1 connection; requests are sequential."""

    def __init__(self, url: str) -> None:
        self.host, self.port = split_url(url)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def request(
        self, method: str, path: str, body: Any = None, *, sink: Callable[[bytes], None] | None = None
    ) -> tuple[int, bytes]:
        """Send one request (``body`` is JSON-encoded unless bytes); returns status and body.

        With ``sink`` the body is handed over chunk by chunk and not kept (big downloads).
        """
        if self._writer is not None and (self._reader is None or self._reader.at_eof()):
            await self.close()  # the server closed it while idle (keep-alive timeout)
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if data is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (data or b""))
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError(f"{method} {path}: connection closed ({exc})") from exc
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = -1
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            payload = await self._read_chunked(sink)
        elif length >= 0:
            payload = await self._read_length(length, sink)
        else:
            payload = await self._reader.read()
            close = True
        if close:
            await self.close()
        return status, payload

    async def _read_length(self, length: int, sink: Callable[[bytes], None] | None) -> bytes:
        assert self._reader is not None
        if sink is None:
            return await self._reader.readexactly(length)
        left = length
        while left:
            chunk = await self._reader.read(min(left, 1 << 20))
            if not chunk:
                raise HttpError("body cut short")
            sink(chunk)
            left -= len(chunk)
        return b""

    async def _read_chunked(self, sink: Callable[[bytes], None] | None) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            chunk = await self._reader.readexactly(size)
            await self._reader.readexactly(2)
            if sink is None:
                parts.append(chunk)
            else:
                sink(chunk)

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, payload = await self.request(method, path, body)
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode("utf-8", "replace")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self._reader = self._writer = None


class HttpPool:
    """``size`` keep-alive connections handed out one request at a time."""

    def __init__(self, url: str, size: int = 8) -> None:
        self._idle: asyncio.Queue[HttpConn] = asyncio.Queue()
        self._all = [HttpConn(url) for _ in range(size)]
        for conn in self._all:
            self._idle.put_nowait(conn)

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        conn = await self._idle.get()
        try:
            return await conn.json(method, path, body)
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()


# ----------------------------------------------------------------------------------- WebSocket
FrameHandler = Callable[[int, bytes, float], None]  # opcode, payload, arrival time (time.time())


def _mask_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN set, masked as RFC 6455 requires."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if n:
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    else:
        body = b""
    return head + mask + body


class WsReader(asyncio.Protocol):
    """A WebSocket client that hands every complete message to ``on_frame`` with its arrival time.

    Answers pings, reports a close (``closed`` is set, ``close_code`` kept); never sends anything else
    unless asked (``send_text``).
    """

    def __init__(self, on_frame: FrameHandler) -> None:
        self.on_frame = on_frame
        self.transport: Any = None  # asyncio's or uvloop's transport
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.messages = 0
        self._fragments: list[bytes] = []
        self._frag_opcode = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.handshaken.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0] + " ":
                self.handshaken.set_exception(HttpError(f"WebSocket refused: {head.splitlines()[0]}"))
                return
            self.handshaken.set_result(None)
        self._parse(now)

    def _parse(self, now: float) -> None:
        buf = self.buffer
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload, now)
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x9:  # ping
            self._write(_mask_frame(0xA, payload))
            return
        if opcode == 0xA:
            return
        if opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._write(_mask_frame(0x8, payload[:2]))
            if self.transport is not None:
                self.transport.close()
            return
        if opcode == 0x0:
            self._fragments.append(payload)
            if not fin:
                return
            payload, opcode = b"".join(self._fragments), self._frag_opcode
            self._fragments = []
        elif not fin:
            self._fragments, self._frag_opcode = [payload], opcode
            return
        self.messages += 1
        self.on_frame(opcode, payload, now)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_text(self, text: str) -> None:
        self._write(_mask_frame(0x1, text.encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        if not self.handshaken.done():
            self.handshaken.set_exception(HttpError(f"WebSocket closed during the handshake ({exc})"))
        self.closed.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def ws_connect(url: str, on_frame: FrameHandler, timeout: float = 10.0) -> WsReader:
    """Open ``ws://host:port/path?query`` and return its reader once the handshake is done."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(lambda: WsReader(on_frame), host, port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert proto.transport is not None
    proto.transport.write(request.encode())
    await asyncio.wait_for(proto.handshaken, timeout)
    return proto
