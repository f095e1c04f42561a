"""Async client for ViewComfy's current API: schedule a run, follow it over socket.io, poll, cancel, download.

Like the published client it opens one socket.io connection per run (credentials in the connect ``auth``,
websocket transport, namespace ``/``) before scheduling, and names its ``sid`` in the schedule form; the
run's events then arrive on that connection. Nothing is assumed about the event payloads beyond what
the published clients read. HTTP goes through the shared httpx client; every failure is a
``ViewComfyError`` / ``ViewComfyUnavailable`` whose message never holds the credentials.

Retries are narrow, as in the older client: scheduling starts a *paid* run, so only failures that prove
the request never left are retried. Results and cancel are idempotent and retried by their callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import httpx
import socketio  # type: ignore[import-untyped]  # no py.typed in python-socketio
from pydantic import ValidationError

from backends.viewcomfy.client import _create_unique, _status_error, _transport_error, absolute_url
from backends.viewcomfy.current_protocol import (
    CANCEL_PATH,
    RESULTS_PATH,
    SCHEDULE_PATH,
    Event,
    LinkResult,
    Scheduled,
    from_record,
)
from core.errors import ViewComfyError, ViewComfyUnavailable
from security.safe_paths import sanitize_filename
from security.url_guard import UnsafeURL, guarded_send

log = logging.getLogger("comfygate.viewcomfy")

EVENT_QUEUE = 1000  # events buffered per run; a log line flood beyond it drops the oldest
DOWNLOAD_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One socket.io event of a run, or ``closed`` when the connection ended."""

    name: str
    data: Any = None


class EventChannel:
    """One socket.io connection for one run: its events, in order, through a bounded queue."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False, http_session=session)
        self.queue: asyncio.Queue[RunEvent] = asyncio.Queue(EVENT_QUEUE)
        for event in Event:
            self.sio.on(event.value, self._handler(event.value))
        self.sio.on("disconnect", self._closed)

    def _handler(self, name: str) -> Any:
        async def handle(data: Any = None) -> None:
            self._put(RunEvent(name, data))

        return handle

    async def _closed(self, *reason: Any) -> None:
        self._put(RunEvent("closed"))

    def _put(self, event: RunEvent) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(event)

    @property
    def sid(self) -> str | None:
        return self.sio.get_sid("/")

    async def connect(self, url: str, auth: dict[str, str], timeout: float) -> None:
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=timeout)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class ViewComfyCentralClient:
    """The central API at ``api_base``, for the deployment ``deployment`` (its ``view_comfy_api_url``)."""

    def __init__(
        self,
        api_base: str,
        deployment: str,
        client_id: str | None,
        client_secret: str | None,
        *,
        http: httpx.AsyncClient,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        connect_retries: int = 2,
        retry_backoff: float = 0.5,
    ) -> None:
        url = absolute_url(api_base, "the ViewComfy API URL")
        self.api_base = str(url).rstrip("/")
        self.host = url.host
        self.deployment = deployment
        self._auth = {k: v for k, v in (("client_id", client_id), ("client_secret", client_secret)) if v is not None}
        self._http = http
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self.retry_backoff = retry_backoff
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ViewComfyCentralClient(api_base={self.api_base!r}, credentials={'***' if self._auth else None})"

    # ------------------------------------------------------------------------------ events
    async def open_events(self) -> EventChannel | None:
        """A socket.io connection for one run, or ``None`` when it cannot connect (the run is then polled)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()  # socket.io's transport: one pool for every run's socket
        channel = EventChannel(self._session)
        try:
            await channel.connect(self.api_base, self._auth, self.connect_timeout)
        except Exception as exc:  # socketio.exceptions.ConnectionError, OSError, aiohttp errors
            log.warning(
                "ViewComfy socket.io at %s unavailable (%s); the run will be polled", self.api_base, type(exc).__name__
            )
            await channel.aclose()
            return None
        return channel

    async def aclose(self) -> None:
        """Close the socket.io transport's connection pool (the httpx client belongs to the app)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    # ------------------------------------------------------------------------------ HTTP calls
    async def schedule(
        self, prompt_id: str, params: Mapping[str, Any], workflow_api: Mapping[str, Any] | None, sid: str | None
    ) -> Scheduled:
        """POST the run; 201 with ``{"data": {...}}`` or a ViewComfyError."""
        fields = {
            "prompt_id": prompt_id,
            "view_comfy_api_url": self.deployment,
            "params": json.dumps(dict(params), separators=(",", ":")),
        }
        if workflow_api is not None:
            fields["workflow_api"] = json.dumps(dict(workflow_api), separators=(",", ":"))
        if sid:
            fields["sid"] = sid
        # Starts a paid run: only a failure to connect (nothing was sent) is tried again.
        response = await self._call("POST", SCHEDULE_PATH, 201, retries=self.connect_retries, data=fields)
        try:
            return Scheduled.model_validate(response.json()["data"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise ViewComfyError(
                "ViewComfy answered the schedule with an unexpected body", status=201, body=response.text[:2000]
            ) from None

    async def results(self, prompt_ids: list[str]) -> dict[str, LinkResult]:
        """The runs' records by prompt id (ids ViewComfy does not know are absent)."""
        response = await self._call("GET", RESULTS_PATH, 200, params={"prompt_ids": prompt_ids})
        try:
            records = response.json()
            found = [from_record(r) for r in records]
        except (ValueError, TypeError, AttributeError, ValidationError) as exc:
            raise ViewComfyError(
                f"ViewComfy answered the results call with an unexpected body ({exc})", status=200
            ) from None
        return {r.prompt_id: r for r in found}

    async def cancel(self, prompt_id: str) -> Any:
        body = {"prompt_id": prompt_id, "view_comfy_api_url": self.deployment}
        response = await self._call("POST", CANCEL_PATH, 201, json=body)
        with contextlib.suppress(ValueError):
            return response.json()
        return None

    async def download(
        self, url: str, dest_dir: Path, name: str, *, max_bytes: int, allow_private: bool = False
    ) -> tuple[Path, int]:
        """GET one output link into a new file in ``dest_dir``, streamed; no credentials go with it.

        A link on the API's own host is trusted like the API; any other host (object storage) must
        resolve to a public address (the SSRF guard), unless ``allow_private``.
        """
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ViewComfyError(f"the link of output {name!r} is not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ViewComfyError(f"the link of output {name!r} must be an absolute http(s) URL")
        path, handle = await asyncio.to_thread(_new_file, dest_dir, name)
        size = 0
        try:
            with handle:
                if parsed.host == self.host:
                    response = await self._http.send(
                        self._http.build_request("GET", parsed, timeout=self._timeout()), stream=True
                    )
                else:
                    response = await guarded_send(
                        self._http, "GET", parsed, allow_private=allow_private, timeout=self.timeout, what="output link"
                    )
                try:
                    if response.status_code != 200:
                        raise ViewComfyError(
                            f"downloading output {name!r} answered HTTP {response.status_code}",
                            status=response.status_code,
                        )
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ViewComfyError(f"output {name!r} is larger than {max_bytes} bytes")
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await response.aclose()
        except UnsafeURL as exc:
            path.unlink(missing_ok=True)
            raise ViewComfyError(f"refusing the link of output {name!r}: {exc.message}") from None
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise ViewComfyUnavailable(f"downloading output {name!r} failed ({type(exc).__name__})") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, size

    async def _call(self, method: str, path: str, expected: int, *, retries: int = 0, **kwargs: Any) -> httpx.Response:
        """One call with the credentials; ``expected`` status or a ViewComfyError (never an httpx error)."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method, self.api_base + path, headers=self._auth, timeout=self._timeout(), **kwargs
                )
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= retries:
                    raise _transport_error(exc, sent=False) from None
                attempt += 1
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
            except httpx.HTTPError as exc:
                raise _transport_error(exc, sent=True) from None
        if response.status_code != expected:
            raise await _status_error(response)
        return response

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


def _new_file(dest_dir: Path, name: str) -> tuple[Path, IO[bytes]]:
    """A new file named after ``name`` (untrusted: basename only, never overwriting) in ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    return _create_unique(dest_dir.resolve(), sanitize_filename(name, "output"))
