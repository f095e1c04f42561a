"""A ComfyUI server as ComfyGate sees it: its client, its one WebSocket, its health and its load."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from backends.base import BackendBase, TaskHost
from backends.comfyui_events import ComfyUIEvent
from comfyui_client import ComfyUIClient, ComfyUIWebSocket
from core.busy_poll import BusyPoll
from core.errors import ComfyGateError, ComfyUIUnavailable, PartnerKeyLost
from core.task import OWN_PARTNER_KEY, Task

log = logging.getLogger("comfygate.backend")

PARTNER_KEY_FIELD = "api_key_comfy_org"  # extra_data key of Comfy.org's paid partner API nodes

EventSink = Callable[["ComfyUIBackend", ComfyUIEvent], None]
StateSink = Callable[["ComfyUIBackend", bool], Awaitable[None]]


class ComfyUIBackend(BackendBase):
    kind = "comfyui"
    remote = False
    live_health = True  # its WebSocket says when it is back: tasks pinned to it wait

    def __init__(
        self,
        name: str,
        server: str,
        http: httpx.AsyncClient,
        *,
        timeout: float = 30.0,
        fast_post: bool = True,
        busy_poll: BusyPoll | None = None,
        output_dir: Path | None = None,
        on_event: EventSink,
        on_state: StateSink,
        on_output: EventSink | None = None,
        partner_key: str | None = None,
    ) -> None:
        self.name = name
        # ComfyUI's output folder when it is on this machine (settings.comfyui_output_dir[s]): read, not /view.
        self.output_dir = output_dir
        self.client = ComfyUIClient(server, http, timeout=timeout, fast_post=fast_post, busy_poll=busy_poll)
        self._on_event = on_event
        self._on_state = on_state
        self.ws = ComfyUIWebSocket(
            self.client, self._event, self._state, on_output=partial(on_output, self) if on_output else None
        )
        self.queue_remaining = 0
        self.inflight: set[str] = set()  # task ids handed to this backend and not final
        self.running_prompt: str | None = None
        self.down_since: float | None = time.time()
        self.last_error: str | None = None
        self.object_info: dict[str, Any] | None = None
        # The node classes seen on this connection; routing needs them, so None keeps it out of rotation.
        self.node_classes: frozenset[str] | None = None
        self.output_classes: frozenset[str] = frozenset()
        self.probe_ok = True  # the last /system_stats probe answered
        self._object_info_lock = asyncio.Lock()
        # Detected on each connection (a server may be upgraded while down): its version, and whether it
        # has the jobs API (list/get/atomic cancel). None: not known yet, so the old routes are used.
        self.comfyui_version: str | None = None
        self.jobs_api: bool | None = None
        self.partner_key = partner_key  # this backend's own key for Comfy.org partner API nodes

    @property
    def url(self) -> str:
        return self.client.base_url

    @property
    def connected(self) -> bool:
        return self.ws.connected.is_set()

    @property
    def healthy(self) -> bool:
        """In rotation: WebSocket up, last probe answered, and its node classes known."""
        return self.ws.connected.is_set() and self.probe_ok and self.node_classes is not None

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
            self.probe_ok = True
            # Nodes can be installed while ComfyUI is down: refresh what it can run.
            self.object_info = None
            self.node_classes = None
            self.comfyui_version = None
            self.jobs_api = None
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
                info = await self.client.object_info()
                self.object_info = info
                self.node_classes = frozenset(info)
                # Its output nodes: once each of a prompt's has sent ``executed``, the run has nothing left.
                self.output_classes = frozenset(
                    name for name, spec in info.items() if isinstance(spec, dict) and spec.get("output_node")
                )
                return info
        return self.object_info

    async def refresh_object_info(self) -> bool:
        """Fetch object_info (on connect) so routing knows what this backend can run; False on failure."""
        try:
            await self.get_object_info()
        except ComfyGateError as exc:
            self.last_error = f"object_info: {exc.message}"
            return False
        return True

    def invalidate_object_info(self) -> None:
        """Input file lists inside object_info change on upload: fetch it again next time (classes stay)."""
        self.object_info = None

    def can_run(self, classes: set[str]) -> bool:
        """Unknown until object_info has been fetched: then assume yes, the backend will say no."""
        return self.node_classes is None or classes <= self.node_classes

    def describe_own(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "probe_ok": self.probe_ok,
            "node_classes": len(self.node_classes) if self.node_classes is not None else None,
            "load": self.load,
            "comfyui_version": self.comfyui_version,
            "features": {"jobs_api": self.jobs_api},
        }

    async def detect_features(self) -> None:
        """Learn what this server offers (once per connection), so newer routes are used only where they exist."""
        if self.jobs_api is not None:
            return
        stats = await self.probe()
        if stats is not None:
            version = (stats.get("system") or {}).get("comfyui_version")
            self.comfyui_version = version if isinstance(version, str) else None
        try:
            self.jobs_api = await self.client.jobs_api()
        except ComfyGateError as exc:
            log.info("%s: jobs API not detected (%s); using /queue and /history", self.name, exc.message)
            self.jobs_api = False

    async def probe(self) -> dict[str, Any] | None:
        """Ask ``/system_stats``; None when the backend does not answer."""
        try:
            stats = await self.client.system_stats()
        except ComfyGateError as exc:
            self.last_error = exc.message
            self.probe_ok = False
            return None
        self.probe_ok = True
        return stats

    # --- running tasks ---------------------------------------------------------------------------
    async def hand_over(self, task: Task, host: TaskHost, extra_data: dict[str, Any] | None = None) -> None:
        """POST the prompt under ComfyGate's prompt id; its WebSocket events then drive the task.

        A 200 may still carry node_errors: the outputs that failed validation are dropped from the run;
        they become the task's warnings. ``extra_data`` (a dispatch hook's) and a partner-node key go in
        the prompt's extra_data and nowhere else.
        """
        own_key = host.partner_key(task)
        if own_key is None and task.extra.get(OWN_PARTNER_KEY):
            raise PartnerKeyLost(
                "this task was submitted with its own api_key_comfy_org, which ComfyGate keeps in memory only, and "
                "ComfyGate restarted before ComfyUI had the task: it is not posted without it; submit it again",
                task_id=task.task_id,
            )
        key = own_key or self.partner_key
        if key:
            extra_data = {**(extra_data or {}), PARTNER_KEY_FIELD: key}
        try:
            answer = await self.client.post_prompt(
                task.workflow, client_id=self.ws.client_id, prompt_id=task.prompt_id, extra_data=extra_data
            )
        except ComfyUIUnavailable as exc:
            self.last_error = exc.message
            raise
        task.extra["number"] = answer.get("number")
        node_errors = answer.get("node_errors")
        if isinstance(node_errors, dict) and node_errors:
            task.warnings = partial_validation_warnings(node_errors, task.workflow)

    async def cancel(self, task: Task) -> str:
        """Delete it from the queue if it waits there, else interrupt it (targeted at its prompt id).

        With the jobs API one atomic call does either; asking the job first says which it was.
        """
        client = self.client
        if self.jobs_api:
            try:
                job = await client.get_job(task.prompt_id)
                if job is None:
                    return "gone"
                cancelled = await client.cancel_job(task.prompt_id)
                return "deleted" if cancelled and job.get("status") == "pending" else "interrupted"
            except ComfyGateError as exc:
                log.warning("could not cancel task %s on %s: %s", task.task_id, self.name, exc.message)
                return "unreachable"
        try:
            queue = await client.get_queue()
            pending = {item[1] for item in queue.get("queue_pending", [])}
            if task.prompt_id in pending:
                await client.delete_from_queue([task.prompt_id])
                queue = await client.get_queue()
                if task.prompt_id not in {item[1] for item in queue.get("queue_running", [])}:
                    return "deleted"
            await client.interrupt(task.prompt_id)
            return "interrupted"
        except ComfyGateError as exc:
            log.warning("could not stop task %s on %s: %s", task.task_id, self.name, exc.message)
            return "unreachable"


def partial_validation_warnings(node_errors: dict[str, Any], workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """ComfyUI accepted the prompt but dropped the outputs listed in node_errors: one warning per node."""
    warnings = []
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        errors = [e for e in entry.get("errors") or [] if isinstance(e, dict)]
        node = workflow.get(str(node_id))
        class_type = entry.get("class_type") or (node.get("class_type") if isinstance(node, dict) else None)
        reasons = "; ".join(f"{e.get('message', '')}: {e.get('details', '')}".strip(": ") for e in errors)
        warnings.append(
            {
                "type": "output_dropped",
                "node_id": str(node_id),
                "class_type": class_type,
                "message": f"node {node_id} ({class_type}) failed validation, so ComfyUI skipped "
                f"{', '.join(map(str, entry.get('dependent_outputs') or [])) or 'the outputs depending on it'}"
                + (f": {reasons}" if reasons else ""),
                "errors": errors,
                "dependent_outputs": [str(o) for o in entry.get("dependent_outputs") or []],
            }
        )
    return warnings
