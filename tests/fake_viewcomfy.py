"""A real (loopback, uvicorn-in-a-thread) fake of the ViewComfy serverless API, for tests.

It behaves like the real server as far as its published clients reveal: checks the ``client_id`` /
``client_secret`` headers, parses the form with Starlette exactly as a FastAPI server would (both
urlencoded and multipart), answers 201 JSON or, with ``logs=true``, an SSE stream. Every request is
recorded (``fake.requests``) so tests can count them and inspect the encoding.

Endpoints (all ``POST``; ``fake.url(path)`` builds the URL):

``/infer``      the real thing: 201 JSON result, or SSE (log_message, error, keepalives, prompt_result);
                ``?mode=json`` / ``?mode=sse`` forces one regardless of ``logs``
``/slow``       cold start: waits ``?delay=`` seconds (default 0.3), then like ``/infer``
``/hang``       never answers; returns once the client has gone away (for read-timeout tests)
``/boom``       500 (or ``?status=``) with a non-JSON body
``/ok200``      a valid result but with status 200 (the published client treats it as an error)
``/truncated``  SSE that closes without a ``prompt_result``
``/extra-key``  201 whose result has an extra key
``/parsed``     parses the body with ``api.viewcomfy_form.parse_infer_form`` and echoes it in ``prompt``
Wrong credentials on any endpoint: 401 with a JSON error body.

Also: ``closed_port()`` (a port nothing listens on) and ``DropAfterRequest`` (a raw socket server
that reads one request and hangs up without answering).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from api.viewcomfy_form import parse_infer_form
from backends.viewcomfy.protocol import FileOutput, result_to_json
from backends.viewcomfy.sse import SSE_KEEPALIVE, sse_event
from core.errors import ComfyGateError

PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    media_type: str
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str | None, bytes, str | None]] = field(default_factory=dict)


def make_result(prompt: dict[str, Any] | None = None, status: str = "success") -> dict[str, Any]:
    """A result with exactly the six keys and one small PNG output."""
    return result_to_json(
        {
            "prompt_id": str(uuid.uuid4()),
            "status": status,
            "completed": True,
            "execution_time_seconds": 0.01,
            "prompt": prompt or {},
            "outputs": [FileOutput.from_bytes("ComfyUI_00001_.png", PNG_BYTES, "image/png")],
        }
    )


class FakeViewComfy:
    def __init__(self, client_id: str = "test-client-id", client_secret: str = "test-client-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = Starlette(
            routes=[
                Route("/infer", self._infer, methods=["POST"]),
                Route("/slow", self._slow, methods=["POST"]),
                Route("/hang", self._hang, methods=["POST"]),
                Route("/boom", self._boom, methods=["POST"]),
                Route("/ok200", self._ok200, methods=["POST"]),
                Route("/truncated", self._truncated, methods=["POST"]),
                Route("/extra-key", self._extra_key, methods=["POST"]),
                Route("/parsed", self._parsed, methods=["POST"]),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeViewComfy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake ViewComfy server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeViewComfy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str = "/infer") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def last(self) -> RecordedRequest:
        with self._lock:
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- request handling --------------------------------------------------------------------------

    async def _record(self, request: Request, *, parse: bool = True) -> RecordedRequest:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
        rec = RecordedRequest(path=request.url.path, headers=dict(request.headers), media_type=media_type)
        if parse:
            form = await request.form(max_part_size=32 * 1024 * 1024)
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    rec.files[key] = (value.filename, await value.read(), value.content_type)
                else:
                    rec.fields[key] = value
            await form.close()
        with self._lock:
            self.requests.append(rec)
        return rec

    def _auth_error(self, request: Request) -> Response | None:
        if (
            request.headers.get("client_id") != self.client_id
            or request.headers.get("client_secret") != self.client_secret
        ):
            return JSONResponse({"error": "Unauthorized", "message": "invalid client credentials"}, 401)
        return None

    def _form_error(self, rec: RecordedRequest) -> Response | None:
        missing = [name for name in ("params", "workflow_api", "logs") if name not in rec.fields]
        if missing:
            return JSONResponse({"error": "Unprocessable", "message": f"missing fields {missing}"}, 422)
        return None

    async def _answer(self, rec: RecordedRequest, mode: str | None = None) -> Response:
        """SSE when ``logs=true`` (or ``?mode=sse``), else JSON (or ``?mode=json`` to force it)."""
        result = make_result({"fields": rec.fields, "files": sorted(rec.files)})
        if mode == "sse" or (mode != "json" and rec.fields.get("logs") == "true"):
            return StreamingResponse(self._events(result), status_code=201, media_type="text/event-stream")
        return JSONResponse(result, status_code=201)

    async def _events(self, result: dict[str, Any]) -> AsyncIterator[bytes]:
        yield SSE_KEEPALIVE
        yield sse_event("log_message", "loading checkpoint")
        await asyncio.sleep(0.01)
        # One event split across chunks, CRLF line endings, a comment in the middle.
        yield b"event: log_mes"
        await asyncio.sleep(0.01)
        yield b"sage\r\n: a comment\r\ndata: step 1/2\r"
        await asyncio.sleep(0.01)
        yield b"\n\r\n"
        yield SSE_KEEPALIVE
        yield sse_event("error", "node 7: out of memory,\nretrying on CPU")
        yield sse_event("log_message", "step 2/2")
        yield sse_event("prompt_result", result)
        yield sse_event("log_message", "after the result (a client must have stopped reading)")

    async def _infer(self, request: Request) -> Response:
        rec = await self._record(request)
        mode = request.query_params.get("mode")
        return self._auth_error(request) or self._form_error(rec) or await self._answer(rec, mode)

    async def _slow(self, request: Request) -> Response:
        rec = await self._record(request)
        await asyncio.sleep(float(request.query_params.get("delay", "0.3")))
        return self._auth_error(request) or self._form_error(rec) or await self._answer(rec)

    async def _hang(self, request: Request) -> Response:
        await self._record(request)
        for _ in range(200):  # at most ~10 s; polling is the only way Starlette reports a gone client
            if await request.is_disconnected():
                break
            await asyncio.sleep(0.05)
        return JSONResponse({"error": "too late"}, 504)

    async def _boom(self, request: Request) -> Response:
        await self._record(request)
        status = int(request.query_params.get("status", "500"))
        return PlainTextResponse("Internal Server Error: worker crashed", status_code=status)

    async def _ok200(self, request: Request) -> Response:
        rec = await self._record(request)
        return self._auth_error(request) or JSONResponse(make_result({"fields": rec.fields}), status_code=200)

    async def _truncated(self, request: Request) -> Response:
        await self._record(request)
        if (denied := self._auth_error(request)) is not None:
            return denied

        async def events() -> AsyncIterator[bytes]:
            yield sse_event("log_message", "starting")
            yield sse_event("error", "worker lost")
            yield b'event: prompt_result\ndata: {"unterminated": '  # no blank line: never dispatched

        return StreamingResponse(events(), status_code=201, media_type="text/event-stream")

    async def _extra_key(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({**make_result(), "surprise": 1}, status_code=201)

    async def _parsed(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(RecordedRequest(path=request.url.path, headers=dict(request.headers), media_type=""))
        if (denied := self._auth_error(request)) is not None:
            return denied
        try:
            parsed = await parse_infer_form(request)
        except ComfyGateError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status_code)
        echo = {
            "logs": parsed.logs,
            "params": parsed.params,
            "workflow_api": parsed.workflow_api,
            "content_type": parsed.content_type,
            "files": {
                key: {"filename": f.filename, "size": len(f.content), "content_type": f.content_type}
                for key, f in parsed.files.items()
            },
        }
        result = make_result(echo)
        if parsed.logs:
            return StreamingResponse(self._events(result), status_code=201, media_type="text/event-stream")
        return JSONResponse(result, status_code=201)


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DropAfterRequest:
    """Raw TCP server: reads the request head, then closes without a response (request was sent)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass

    def __enter__(self) -> DropAfterRequest:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/infer"
