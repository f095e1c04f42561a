"""An async client for one ComfyUI server: its HTTP routes and its one WebSocket.

Every call goes through one shared ``httpx.AsyncClient`` (keep-alive). No httpx or websockets
exception leaves this module: callers see ``ComfyUIUnavailable``, ``PromptRejected`` or
``ComfyUINotFound`` (see ``errors.py``). ComfyUI answers 403 to a foreign ``Origin``, so no browser
header is ever forwarded: requests carry only what this module sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from backends.comfyui_events import ComfyUIEvent, MalformedFrame, parse_frame
from core.busy_poll import BusyPoll
from core.errors import ComfyUIError, ComfyUINotFound, ComfyUIUnavailable, PostUnsure, PromptRejected

log = logging.getLogger("comfygate.comfyui")

CHUNK = 1024 * 1024


def normalise_server(server: str) -> str:
    """``127.0.0.1:8188`` or ``http://host:8188/`` → ``http://host:8188``."""
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = f"http://{server}"
    return server


class _RawResponse:
    """The little of ``httpx.Response`` that ``post_prompt`` reads."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


# What a raw exchange raises when the connection breaks, times out or carries something that is not HTTP.
_BROKEN = (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


class RequestSent(Exception):
    """A request failed after it had left: the server may have received and acted on it."""


class SentRequest:
    """A GET written on a kept connection before anyone awaits its answer (``_KeepAlivePoster.send_get``)."""

    __slots__ = ("reader", "writer", "taken")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.taken = False

    def abandon(self) -> None:
        """Nobody will read the answer (the download was cancelled before it started): drop the connection."""
        if not self.taken:
            self.taken = True
            self.writer.close()


class _KeepAlivePoster:
    """POST /prompt and small GET /view over a few keep-alive HTTP/1.1 connections of its own: the calls on
    every task's path.

    httpx spends ~1 ms of CPU per request here (connection-pool bookkeeping, a poll() per pooled
    connection, anyio stream layers): nearly half of ComfyGate's CPU per task in the throughput
    benchmark. ComfyUI (aiohttp) answers /prompt with a small Content-Length body, so little is needed.
    Only plain http; a connection the server has closed is noticed (EOF seen) before it is reused.
    """

    def __init__(self, base_url: str, busy_poll: BusyPoll | None = None, size: int = 16) -> None:
        parts = urlsplit(base_url)
        self.busy_poll = busy_poll or BusyPoll(0)  # window 0: off
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc
        self.size = size
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, timeout: float) -> _RawResponse:
        """POST ``body``; a failure once the request has been written is raised as ``RequestSent`` (the server
        may have acted on it), one before (no connection) as itself."""
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        conn = self._take()
        async with asyncio.timeout(timeout):
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        writer.write(head.encode("latin-1") + body)
        self.busy_poll.expect_answer()
        try:
            response = await self._answer(reader, writer, -1, timeout)
        except _BROKEN as exc:
            raise RequestSent(f"{type(exc).__name__}: {exc}") from exc
        assert response is not None  # no size limit: always read
        return response

    def _get_request(self, path: str) -> bytes:
        return f"GET {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n\r\n".encode("latin-1")

    def send_get(self, path: str) -> SentRequest | None:
        """Write a GET now, on an idle kept connection (None when there is none), without waiting: the
        request leaves in this loop turn instead of when the task that reads the answer first runs."""
        conn = self._take()
        if conn is None:
            return None
        conn[1].write(self._get_request(path))
        self.busy_poll.expect_answer()
        return SentRequest(*conn)

    async def get_small(
        self, path: str, limit: int, timeout: float, sent: SentRequest | None = None
    ) -> _RawResponse | None:
        """GET ``path`` (or read the answer of ``sent``); None when the body is larger than ``limit`` bytes
        (or of unknown length).

        A GET is safe to repeat: a kept connection that the server closed meanwhile is retried once on a new one.
        """
        request = self._get_request(path)
        try:
            if sent is not None and not sent.taken:
                sent.taken = True
                return await self._answer(sent.reader, sent.writer, limit, timeout)
            return await self._exchange(request, limit, timeout, fresh=False)
        except (ConnectionError, asyncio.IncompleteReadError):
            return await self._exchange(request, limit, timeout, fresh=True)

    async def _exchange(self, request: bytes, limit: int, timeout: float, fresh: bool = False) -> _RawResponse | None:
        conn = None if fresh else self._take()
        async with asyncio.timeout(timeout):
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(request)
        self.busy_poll.expect_answer()
        return await self._answer(reader, writer, limit, timeout)

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int, timeout: float
    ) -> _RawResponse | None:
        """Read the answer to the request just written on this connection; keep the connection if it may be."""
        async with asyncio.timeout(timeout):
            try:
                result = await self._read_response(reader, limit)
            except BaseException:
                writer.close()
                raise
        if result is None:
            writer.close()  # its body was not read: this connection cannot carry another request
            return None
        status, content, keep = result
        self._give_back(reader, writer, keep)
        return _RawResponse(status, content)

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader, limit: int = -1) -> tuple[int, bytes, bool] | None:
        """Status, body and whether the connection may be kept; None (body left unread) when a successful
        answer's body is larger than ``limit`` (≥ 0) or of unknown length."""
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, keep = -1, False, not lines[0].startswith("HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                keep = "close" not in value
        if limit >= 0 and (length < 0 or length > limit) and status < 300:
            return None
        if chunked:
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts), keep
        if length >= 0:
            return status, await reader.readexactly(length), keep
        return status, await reader.read(), False

    def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            return reader, writer
        return None

    def _give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool) -> None:
        if keep and len(self._idle) < self.size:
            self._idle.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _view_path(filename: str, subfolder: str, type: str) -> str:
    return "/view?" + urlencode({"filename": filename, "subfolder": subfolder, "type": type})


class ComfyUIClient:
    """HTTP side of one ComfyUI server."""

    def __init__(
        self,
        server: str,
        http: httpx.AsyncClient,
        *,
        timeout: float = 30.0,
        fast_post: bool = True,
        busy_poll: BusyPoll | None = None,
    ) -> None:
        self.base_url = normalise_server(server)
        scheme = "wss" if self.base_url.startswith("https://") else "ws"
        self.ws_base = f"{scheme}://{self.base_url.split('://', 1)[1]}"
        self.http = http
        self.timeout = timeout
        plain_http = self.base_url.startswith("http://")
        self._poster = _KeepAlivePoster(self.base_url, busy_poll) if fast_post and plain_http else None

    async def _post_fast(self, path: str, body: dict[str, Any]) -> _RawResponse | httpx.Response:
        """POST ``body`` as JSON through the keep-alive poster (plain http), else through httpx."""
        if self._poster is None:
            return await self._request("POST", path, json=body)
        data = json.dumps(body).encode()
        try:
            response = await self._poster.post(path, data, self.timeout)
        except RequestSent as exc:
            raise PostUnsure(
                f"ComfyUI at {self.base_url} did not answer POST {path} after the request left ({exc}); "
                "it may have taken it",
                backend=self.base_url,
            ) from exc
        except TimeoutError as exc:
            raise ComfyUIUnavailable(f"ComfyUI at {self.base_url} timed out on POST {path}") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            raise ComfyUIUnavailable(
                f"ComfyUI at {self.base_url} is unreachable ({type(exc).__name__}: {exc})",
                backend=self.base_url,
            ) from exc
        self._refuse_missing_or_forbidden(response.status_code, "POST", path)
        return response

    def close(self) -> None:
        """Close the poster's idle connections (httpx's client is closed by its owner)."""
        if self._poster is not None:
            self._poster.close()

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url})"

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = await self.http.request(method, f"{self.base_url}{path}", **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing was sent
            raise ComfyUIUnavailable(
                f"ComfyUI at {self.base_url} is unreachable ({type(exc).__name__}: {exc})", backend=self.base_url
            ) from exc
        except httpx.HTTPError as exc:  # the request left: a POST may have been acted on
            timed_out = isinstance(exc, httpx.TimeoutException)
            failure = "timed out" if timed_out else f"failed ({type(exc).__name__}: {exc})"
            if method == "POST":
                raise PostUnsure(
                    f"ComfyUI at {self.base_url} {failure} on {method} {path} after the request left; "
                    "it may have taken it",
                    backend=self.base_url,
                ) from exc
            raise ComfyUIUnavailable(
                f"ComfyUI at {self.base_url} {failure} on {method} {path}", backend=self.base_url
            ) from exc
        self._refuse_missing_or_forbidden(response.status_code, method, path)
        return response

    def _refuse_missing_or_forbidden(self, status: int, method: str, path: str) -> None:
        """A 404 (no such route, e.g. not ComfyUI) or 403 (ComfyUI's origin check) is never worth a retry."""
        if status == 404:
            raise ComfyUINotFound(f"ComfyUI has no {path}", backend=self.base_url)
        if status == 403:
            raise ComfyUIError(f"ComfyUI at {self.base_url} refused {method} {path} (403)", backend=self.base_url)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ComfyUIError(
                f"ComfyUI answered {response.status_code} to {method} {path}: {response.text[:500]}",
                backend=self.base_url,
                upstream_status=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUIError(f"ComfyUI sent a non-JSON answer to {method} {path}") from exc

    # --- prompts -----------------------------------------------------------------------------
    async def post_prompt(
        self,
        prompt: dict[str, Any],
        *,
        client_id: str | None = None,
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
        front: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt}
        if client_id:
            body["client_id"] = client_id
        if prompt_id:
            body["prompt_id"] = prompt_id
        if extra_data:
            body["extra_data"] = extra_data
        if front:
            body["front"] = True
        response = await self._post_fast("/prompt", body)
        if response.status_code == 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {"error": {"message": response.text}}
            raise PromptRejected(payload.get("error"), payload.get("node_errors"))
        if response.status_code >= 400:
            raise ComfyUIError(
                f"ComfyUI answered {response.status_code} to POST /prompt: {response.text[:500]}",
                backend=self.base_url,
                upstream_status=response.status_code,
            )
        return response.json()

    async def get_prompt(self) -> dict[str, Any]:
        return await self._json("GET", "/prompt")

    async def get_history(self, prompt_id: str | None = None, max_items: int | None = None) -> dict[str, Any]:
        path = f"/history/{prompt_id}" if prompt_id else "/history"
        params = {"max_items": max_items} if max_items else None
        return await self._json("GET", path, params=params)

    async def get_queue(self) -> dict[str, Any]:
        return await self._json("GET", "/queue")

    async def delete_from_queue(self, prompt_ids: list[str]) -> None:
        await self._json_or_empty("POST", "/queue", json={"delete": prompt_ids})

    async def clear_queue(self) -> None:
        await self._json_or_empty("POST", "/queue", json={"clear": True})

    async def interrupt(self, prompt_id: str | None = None) -> None:
        await self._json_or_empty("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {})

    # --- the jobs API of newer servers (NEWER-SERVERS.md); callers check `jobs_api()` first ---------
    async def jobs_api(self) -> bool:
        """Whether this server has the jobs API: a 404 on the route (older servers) says no."""
        try:
            answer = await self._json("GET", "/api/jobs", params={"limit": 1})
        except ComfyUINotFound:
            return False
        return isinstance(answer, dict) and isinstance(answer.get("jobs"), list)

    async def get_job(self, prompt_id: str) -> dict[str, Any] | None:
        """One job (status pending/in_progress/completed/failed/cancelled), or None: the server never had it."""
        try:
            job = await self._json("GET", f"/api/jobs/{prompt_id}")
        except ComfyUINotFound:
            return None
        return job if isinstance(job, dict) else None

    async def cancel_job(self, prompt_id: str) -> bool:
        """Atomic cancel of a queued or running job; True when the server says it is cancelled."""
        answer = await self._json("POST", f"/api/jobs/{prompt_id}/cancel")
        return bool(isinstance(answer, dict) and answer.get("cancelled"))

    async def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        await self._json_or_empty("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    async def _json_or_empty(self, method: str, path: str, **kwargs: Any) -> None:
        response = await self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ComfyUIError(f"ComfyUI answered {response.status_code} to {method} {path}")

    # --- info ----------------------------------------------------------------------------------
    async def object_info(self) -> dict[str, Any]:
        return await self._json("GET", "/object_info", timeout=max(self.timeout, 60.0))

    async def system_stats(self) -> dict[str, Any]:
        return await self._json("GET", "/system_stats")

    # --- files ---------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def view(self, filename: str, subfolder: str = "", type: str = "output") -> AsyncIterator[httpx.Response]:
        """Stream one file from ``/view``; the body is read by the caller in chunks."""
        url = f"{self.base_url}/view"
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        try:
            async with self.http.stream("GET", url, params=params, timeout=self.timeout) as response:
                if response.status_code == 404:
                    raise ComfyUINotFound(f"ComfyUI has no {type} file {subfolder}/{filename}".replace("//", "/"))
                if response.status_code >= 400:
                    raise ComfyUIError(f"ComfyUI answered {response.status_code} to /view of {filename}")
                yield response
        except httpx.HTTPError as exc:
            raise ComfyUIUnavailable(f"download of {filename} from {self.base_url} failed: {exc}") from exc

    def send_view(self, filename: str, subfolder: str, type: str) -> SentRequest | None:
        """Ask ``/view`` for a file now; ``fetch_small(..., sent=)`` reads the answer (None: nothing sent)."""
        if self._poster is None:
            return None
        return self._poster.send_get(_view_path(filename, subfolder, type))

    async def fetch_small(
        self, filename: str, subfolder: str, type: str, limit: int, sent: SentRequest | None = None
    ) -> bytes | None:
        """One file from ``/view`` into memory over the keep-alive connections; None if larger than ``limit``
        (or when this client has no raw connections: https)."""
        if self._poster is None:
            return None
        try:
            response = await self._poster.get_small(_view_path(filename, subfolder, type), limit, self.timeout, sent)
        except TimeoutError as exc:
            raise ComfyUIUnavailable(f"ComfyUI at {self.base_url} timed out on /view of {filename}") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            raise ComfyUIUnavailable(f"download of {filename} from {self.base_url} failed: {exc}") from exc
        if response is None:
            return None
        if response.status_code == 404:
            raise ComfyUINotFound(f"ComfyUI has no {type} file {subfolder}/{filename}".replace("//", "/"))
        if response.status_code >= 400:
            raise ComfyUIError(f"ComfyUI answered {response.status_code} to /view of {filename}")
        return response.content

    async def download(self, filename: str, subfolder: str, type: str, dest: Path) -> int:
        """Stream a file to ``dest`` (written beside it, then renamed); returns its size."""
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        size = 0
        fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            async with self.view(filename, subfolder, type) as response:
                buffer = bytearray()
                async for chunk in response.aiter_raw(CHUNK):
                    buffer += chunk
                    size += len(chunk)
                    if len(buffer) >= CHUNK:
                        await asyncio.to_thread(os.write, fd, bytes(buffer))
                        buffer.clear()
                if buffer:
                    await asyncio.to_thread(os.write, fd, bytes(buffer))
            await asyncio.to_thread(os.close, fd)
            fd = -1
            await asyncio.to_thread(os.replace, tmp, dest)
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp.exists():
                tmp.unlink(missing_ok=True)
        return size

    async def upload_image(
        self, filename: str, data: bytes, *, type: str = "input", subfolder: str = "", overwrite: bool = False
    ) -> dict[str, Any]:
        files = {"image": (filename, data, "application/octet-stream")}
        form = {"type": type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        return await self._json("POST", "/upload/image", files=files, data=form)


EventHandler = Callable[[ComfyUIEvent], None]
StateHandler = Callable[[bool], Awaitable[None]]


class ComfyUIWebSocket:
    """The one WebSocket to a ComfyUI server, kept open with reconnects and exponential backoff.

    Every prompt ComfyGate submits to this server carries ``client_id`` so its execution messages
    arrive here. ``on_state(True)`` runs after every (re)connect so the owner can reconcile what it
    missed: ComfyUI does not replay messages sent while a client was away.

    ComfyUI sends a short run's messages in one burst (14 within 0.14 ms for EmptyImage → SaveImage, in
    the recordings). Every frame of a burst is read before any is handled, and ``on_output`` sees each
    ``executed`` as it is read: its files are asked for before the frames in front of it are handled
    (~0.3 ms of work in a trace, issue 18). ``on_event`` still gets every event once, in order.
    """

    def __init__(
        self,
        client: ComfyUIClient,
        on_event: EventHandler,
        on_state: StateHandler,
        *,
        on_output: EventHandler | None = None,
        client_id: str | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.client_id = client_id or uuid.uuid4().hex
        self.on_event = on_event
        self.on_output = on_output
        self._unhandled: deque[ComfyUIEvent] = deque()  # read, not handled yet (``_handle`` runs next turn)
        self.on_state = on_state
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self.connects = 0

    @property
    def url(self) -> str:
        return f"{self.client.ws_base}/ws?clientId={self.client_id}"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"comfyui-ws {self.client.base_url}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self.min_backoff
        while True:
            try:
                # No permessage-deflate: on loopback or a LAN it only burns CPU on both ends, per message
                # (a third of the emulator's extra cost per task when ComfyGate listens).
                async with connect(self.url, max_size=None, open_timeout=10, ping_interval=20, compression=None) as ws:
                    self._ws = ws
                    self.connects += 1
                    backoff = self.min_backoff
                    # Ask for previews with metadata (prompt id, node) rather than anonymous images.
                    await ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                    self.connected.set()
                    log.info("connected to %s", self.client.ws_base)
                    await self._safe_state(True)
                    async for frame in ws:  # frames already received come without a loop turn between
                        try:
                            event = parse_frame(frame)
                        except MalformedFrame as exc:
                            log.warning("skipping a malformed frame from %s: %s", self.client.base_url, exc)
                            continue
                        self._read(event)
            except asyncio.CancelledError:
                self._handle()
                raise
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.debug("websocket to %s: %s", self.client.base_url, exc)
            except Exception:  # a handler bug must not kill the only listener of this server
                log.exception("websocket listener for %s failed; reconnecting", self.client.base_url)
            self._ws = None
            self._handle()  # what was read is handled before the owner hears the connection is gone
            if self.connected.is_set():
                self.connected.clear()
                log.warning("lost the websocket to %s; reconnecting", self.client.ws_base)
                await self._safe_state(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _read(self, event: ComfyUIEvent) -> None:
        if self.on_output is not None and event.type == "executed":
            self._call(self.on_output, event)
        self._unhandled.append(event)
        if len(self._unhandled) == 1:
            asyncio.get_running_loop().call_soon(self._handle)

    def _handle(self) -> None:
        """Every event read so far, in order (once the burst it came in has been read)."""
        while self._unhandled:
            self._call(self.on_event, self._unhandled.popleft())

    def _call(self, handler: EventHandler, event: ComfyUIEvent) -> None:
        try:
            handler(event)
        except Exception:  # a handler bug must not cost the other events, nor the connection
            log.exception("handling %s from %s failed", event.type, self.client.base_url)

    async def _safe_state(self, up: bool) -> None:
        try:
            await self.on_state(up)
        except Exception:
            log.exception("state handler for %s failed", self.client.base_url)
