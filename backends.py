"""A ComfyUI server as ComfyGate sees it: its client, its one WebSocket, its health and its load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from comfyui_client import ComfyUIClient, ComfyUIWebSocket
from comfyui_events import ComfyUIEvent
from errors import ComfyGateError

log = logging.getLogger("comfygate.backend")

EventSink = Callable[["ComfyUIBackend", ComfyUIEvent], None]
StateSink = Callable[["ComfyUIBackend", bool], Awaitable[None]]


class ComfyUIBackend:
    kind = "comfyui"

    def __init__(
        self,
        name: str,
        server: str,
        http: httpx.AsyncClient,
        *,
        timeout: float = 30.0,
        on_event: EventSink,
        on_state: StateSink,
    ) -> None:
        self.name = name
        self.client = ComfyUIClient(server, http, timeout=timeout)
        self._on_event = on_event
        self._on_state = on_state
        self.ws = ComfyUIWebSocket(self.client, self._event, self._state)
        self.queue_remaining = 0
        self.inflight: set[str] = set()  # task ids handed to this backend and not final
        self.running_prompt: str | None = None
        self.down_since: float | None = time.time()
        self.last_error: str | None = None
        self.object_info: dict[str, Any] | None = None
        self._object_info_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return self.client.base_url

    @property
    def healthy(self) -> bool:
        return self.ws.connected.is_set()

    @property
    def load(self) -> int:
        return max(len(self.inflight), self.queue_remaining)

    def start(self) -> None:
        self.ws.start()

    async def stop(self) -> None:
        await self.ws.stop()
        self.client.close()

    def _event(self, event: ComfyUIEvent) -> None:
        if event.type == "status":
            info = event.data.get("status", {}).get("exec_info", {})
            self.queue_remaining = int(info.get("queue_remaining", self.queue_remaining) or 0)
        self._on_event(self, event)

    async def _state(self, up: bool) -> None:
        if up:
            self.down_since = None
            self.last_error = None
            # Nodes can be installed while ComfyUI is down: refresh what it can run.
            self.object_info = None
        else:
            self.down_since = time.time()
            self.running_prompt = None
        await self._on_state(self, up)

    async def get_object_info(self) -> dict[str, Any]:
        """The backend's ``/object_info``, fetched once per connection (it is large: ~0.5 MB)."""
        if self.object_info is not None:
            return self.object_info
        async with self._object_info_lock:
            if self.object_info is None:
                self.object_info = await self.client.object_info()
        return self.object_info

    def can_run(self, classes: set[str]) -> bool:
        """Unknown until object_info has been fetched: then assume yes, the backend will say no."""
        return self.object_info is None or classes <= self.object_info.keys()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "healthy": self.healthy,
            "queue_remaining": self.queue_remaining,
            "inflight": len(self.inflight),
            "down_since": self.down_since,
            "last_error": self.last_error,
        }

    async def probe(self) -> dict[str, Any] | None:
        """Ask ``/system_stats``; None when the backend does not answer."""
        try:
            return await self.client.system_stats()
        except ComfyGateError as exc:
            self.last_error = exc.message
            return None
