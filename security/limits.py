"""Request body limits as a pure ASGI middleware: size (413) and JSON nesting depth (422).

Why here and not in the routes: FastAPI reads and parses a JSON body before any route code runs, and
Python's ``json`` recurses once per nesting level, so 100,000 ``[`` would reach the recursion limit (or
a later ``deepcopy``/``dumps`` would) long before a route could object. The body is therefore checked
on its way in:

* ``Content-Length`` above ``max_request_bytes`` → 413 at once, nothing read.
* A streamed (chunked) body is counted as it is read; past the limit the app's answer, whatever it
  is, is replaced by the 413.
* JSON bodies (``application/json``, ``*+json``, or no content type, which FastAPI parses as JSON) are
  read whole (they are bounded by the size limit) and their bracket depth is counted without recursion
  before the app sees them: deeper than ``max_json_depth`` → 422.
* The same JSON bodies may not hold a value no JSON answer can carry (a lone UTF-16 surrogate, NaN,
  Infinity, 1e400, an integer over 4300 digits; see ``json_safety``): 422 naming the field. Once
  accepted, such a value would make every listing that shows its task fail.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from core.errors import UnsafeJSONValue
from security.json_safety import check_body, strict_loads

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[\[\]{}]")
_OPENERS = frozenset(b"[{")


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


# A JSON body larger than this is checked (here) and parsed (the submit route) in a worker thread: its CPU
# would otherwise hold every other request and WebSocket of the process (~10 ms a MB).
OFF_LOOP_BYTES = 256 * 1024


def json_depth(data: bytes | str, stop_after: int | None = None) -> int:
    """Deepest bracket nesting of a JSON text, without recursion (strings are skipped).

    Stops counting once ``stop_after`` is passed, so a hostile body costs no more than it must.
    """
    raw = data.encode() if isinstance(data, str) else data
    if b"[" not in raw and b"{" not in raw:
        return 0
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group()[0] in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    return deepest
        else:
            depth -= 1
    return deepest


class JSONTooDeep(ValueError):
    pass


def safe_json_loads(text: str | bytes, max_depth: int = 64, root: str | None = None) -> Any:
    """``json.loads`` that refuses (ValueError) nesting deeper than ``max_depth`` instead of recursing,
    and values ComfyGate could not answer with (``UnsafeJSON``, a ValueError naming the field under ``root``).

    For JSON that arrives inside something else (a form field, a WebSocket message).
    """
    if json_depth(text, max_depth) > max_depth:
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return strict_loads(text, root)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI parses a body without a content type as JSON
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _json_response(status: int, error: str, message: str, **extra: Any) -> tuple[Message, Message]:
    body = json.dumps({"error": error, "message": message, **extra}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class _CountedBody:
    """One request's body counted as the app reads it; past the limit the app's answer becomes a 413."""

    __slots__ = ("max_bytes", "size", "over", "started", "_receive", "_send", "_too_large")

    def __init__(
        self, max_bytes: int, receive: Receive, send: Send, too_large: Callable[[Send], Awaitable[None]]
    ) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.over = False
        self.started = False  # a response has started: nothing else may be sent
        self._receive, self._send, self._too_large = receive, send, too_large

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.max_bytes:
                self.over = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            if message["type"] == "http.response.start":
                await self.refuse()
            return  # the app's own answer (often a 400 about a broken body) is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def refuse(self) -> None:
        """The 413, once, unless a response already started."""
        if not self.started:
            self.started = True
            await self._too_large(self._send)


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_request_bytes
        self.max_depth = settings.max_json_depth

    async def _send_json(self, send: Send, status: int, error: str, message: str, **extra: Any) -> None:
        start, body = _json_response(status, error, message, **extra)
        await send(start)
        await send(body)

    async def too_large(self, send: Send) -> None:
        await self._send_json(
            send,
            413,
            "payload_too_large",
            f"the request body is larger than the limit of {self.max_bytes} bytes",
            limit=self.max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope.get("headers", []))
        if scope["type"] != "http" or not has_body:  # no body to limit (SSE and the like stay untouched)
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._send_json(send, 400, "invalid_request", "Content-Length is not a number")
                return
            if declared > self.max_bytes:
                await self.too_large(send)
                return
        if _is_json(headers.get("content-type")):
            await self.check_json(scope, receive, send)
        else:
            await self.stream_counted(scope, receive, send)

    def refusal(self, body: bytes) -> tuple[str, str, dict[str, Any]] | None:
        """(error, message, extra) for a JSON body nested too deep or holding a value nothing can answer
        with (lone surrogate, NaN, Infinity, 1e400, a 5000-digit integer: see json_safety), else None."""
        if json_depth(body, self.max_depth) > self.max_depth:
            message = f"the JSON body is nested deeper than {self.max_depth} levels"
            return "json_too_deep", message, {"limit": self.max_depth}
        unsafe = check_body(body)
        if unsafe is not None:
            return UnsafeJSONValue.code, str(unsafe), {"field": unsafe.field}
        return None

    async def check_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole (bounded) JSON body, check its depth, then replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self.too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            if len(body) > OFF_LOOP_BYTES:
                refusal = await asyncio.to_thread(self.refusal, body)
            else:
                refusal = self.refusal(body)
            if refusal is not None:
                await self._send_json(send, 422, *refusal[:2], **refusal[2])
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def stream_counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the body through while counting; past the limit, answer 413 whatever the app says."""
        body = _CountedBody(self.max_bytes, receive, send, self.too_large)
        try:
            await self.app(scope, body.receive, body.send)
        except BodyTooLarge:
            pass
        except Exception:
            if not body.over:
                raise
        if body.over:
            await body.refuse()
