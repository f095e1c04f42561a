"""A ComfyUI server shared by several replicas: only the holder of its lease keeps its WebSocket.

ComfyUI sends a prompt's execution events only to the ``client_id`` that submitted it. Every replica
posts to a backend under the same client id (derived from the backend's URL), and only the owner is
connected with it, so the owner hears every task's events and publishes them for all. The other
replicas see the backend through what the owner publishes in Redis (health, queue) and the cluster-wide
count of unfinished tasks; they still call its HTTP routes (object_info, uploads, /view) directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from backends.base import TaskHost
from backends.comfyui import ComfyUIBackend, EventSink, StateSink
from core.busy_poll import BusyPoll
from core.errors import ComfyUIUnavailable
from core.task import Task

STATE_FRESH = 6.0  # seconds an owner's published state stays believable without a refresh


def shared_client_id(prefix: str, url: str) -> str:
    """The same on every replica: the WebSocket a new owner opens gets the events of prompts posted before."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"comfygate:{prefix}:{url}").hex


class SharedBackend(ComfyUIBackend):
    def __init__(
        self,
        name: str,
        server: str,
        http: httpx.AsyncClient,
        *,
        prefix: str,
        lease_valid: Callable[[str], bool],
        timeout: float = 30.0,
        fast_post: bool = True,
        busy_poll: BusyPoll | None = None,
        output_dir: Path | None = None,
        on_event: EventSink,
        on_state: StateSink,
        on_output: EventSink | None = None,
        partner_key: str | None = None,
    ) -> None:
        super().__init__(
            name,
            server,
            http,
            timeout=timeout,
            fast_post=fast_post,
            busy_poll=busy_poll,
            output_dir=output_dir,
            on_event=on_event,
            on_state=on_state,
            on_output=on_output,
            partner_key=partner_key,
        )
        self.ws.client_id = shared_client_id(prefix, self.url)
        self._lease_valid = lease_valid
        self.owned = False
        # Set while its lease is being given back: no hand-over starts, those under way are waited for.
        self.closing = asyncio.Event()
        self.handing = 0  # hand-overs under way: from the record naming this backend to the one of their outcome
        self._handed = asyncio.Event()
        self._handed.set()
        self.remote_state: dict[str, Any] | None = None  # what the owner last published
        self.remote_seen = 0.0
        self.cluster_load = 0  # unfinished tasks on it, counted in Redis across replicas

    # --- ownership -------------------------------------------------------------------------------
    def start(self) -> None:
        """Nothing until the lease is ours (``take``)."""

    def take(self) -> None:
        self.owned = True
        self.closing.clear()
        self.ws.start()

    @contextlib.contextmanager
    def handing_over(self) -> Iterator[None]:
        """One hand-over to this backend, from the record that names it to the record of the outcome (posted,
        refused, unsure): the lease is only given back once none is under way, so the next owner reads the
        outcome instead of guessing it (and posting a prompt ComfyUI is still validating a second time)."""
        if not self.owned or self.closing.is_set():
            raise ComfyUIUnavailable(f"this replica is giving {self.name} up; retry", retry_after=1)
        self.handing += 1
        self._handed.clear()
        try:
            yield
        finally:
            self.handing -= 1
            if not self.handing:
                self._handed.set()

    async def handed(self, timeout: float) -> bool:
        """Wait until no hand-over is under way (True), at most ``timeout`` s (False)."""
        try:
            await asyncio.wait_for(self._handed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def give_up(self) -> None:
        """Close the WebSocket without the down/up bookkeeping: the new owner reconciles."""
        self.owned = False
        await self.ws.stop()
        self.ws.connected.clear()
        self.running_prompt = None
        self.inflight.clear()

    def _remote(self) -> dict[str, Any] | None:
        if self.remote_state is None or time.monotonic() - self.remote_seen > STATE_FRESH:
            return None
        return self.remote_state

    @property
    def owner(self) -> str | None:
        remote = self._remote()
        return None if remote is None else remote.get("owner")

    # --- health and load as the cluster sees them --------------------------------------------------
    @property
    def connected(self) -> bool:
        if self.owned:
            return self.ws.connected.is_set()
        remote = self._remote()
        return bool(remote and remote.get("connected"))

    @property
    def healthy(self) -> bool:
        if self.owned:
            return super().healthy
        remote = self._remote()
        return bool(remote and remote.get("healthy")) and self.node_classes is not None

    @property
    def load(self) -> int:
        return max(self.cluster_load, len(self.inflight), self.queue_remaining)

    def describe_own(self) -> dict[str, Any]:
        remote = self._remote() if not self.owned else None
        if remote is not None:
            self.queue_remaining = int(remote.get("queue_remaining") or 0)
        return {**super().describe_own(), "owned_here": self.owned, "owner": self.owner}

    def state(self, replica: str) -> dict[str, Any]:
        """What the owner publishes for the others."""
        return {
            "owner": replica,
            "connected": self.ws.connected.is_set(),
            "healthy": super().healthy,
            "queue_remaining": self.queue_remaining,
        }

    # --- hand-over: only the owner posts, and only while its lease is surely still its own ----------
    async def hand_over(self, task: Task, host: TaskHost, extra_data: dict[str, Any] | None = None) -> None:
        """``extra_data`` (dispatch hooks, partner-node key) goes with the prompt, as on a single replica."""
        if not self.owned or self.closing.is_set() or not self._lease_valid(self.name):
            raise ComfyUIUnavailable(f"this replica no longer owns {self.name}; retry", retry_after=1)
        await super().hand_over(task, host, extra_data)
