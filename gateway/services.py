"""The objects one ComfyGate instance owns, created by the app's lifespan and reached by dependency."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from config import PROJECT_DIR, Settings
from events.bus import EventBus
from tasks.manager import TaskManager
from tasks.store import TaskStore
from workflow.library import WorkflowLibrary


@dataclass
class Services:
    settings: Settings
    http: httpx.AsyncClient
    store: TaskStore
    hub: EventBus
    manager: TaskManager
    library: WorkflowLibrary
    extras: dict[str, Any] = field(default_factory=dict)

    async def local_outputs(self, outputs: list[dict[str, Any]]) -> None:
        """Make sure these output files are on this machine's disk: written (a just-finished small output is
        written behind, see ``OutputFetcher``), and in cluster mode fetched from the shared store when
        another replica downloaded them. Whoever reads ``outputs/`` calls this first."""
        for item in outputs:
            await self.manager.outputs.fetcher.settled(str(item.get("filename", "")))
        cluster = self.extras.get("cluster")
        if cluster is not None:
            await cluster.localize(outputs)

    async def object_info(self, backend: str | None = None, *, stale_ok: bool = False) -> dict[str, Any]:
        """object_info of the pinned backend, else every ComfyUI backend's node classes merged.

        A ViewComfy backend has no object_info: ``stand_in_object_info`` answers for it. ``stale_ok``
        (submissions): a ComfyUI backend that is down counts with its last object_info, so the task can
        be held until it is back; other callers get a 503 while no ComfyUI backend is reachable.
        """
        from core.errors import ServiceBusy

        manager = self.manager
        if backend:
            chosen = manager.find_backend(backend)
            if chosen.name in manager.pool.comfyui:
                return await manager.object_info(chosen.name, stale_ok=stale_ok)
            return await self.stand_in_object_info()
        try:
            return await manager.object_info(stale_ok=stale_ok)
        except ServiceBusy:
            if any(b.healthy for b in manager.backends.values() if b.name not in manager.pool.comfyui):
                return await self.stand_in_object_info()  # only a ViewComfy backend is up
            raise

    async def stand_in_object_info(self) -> dict[str, Any]:
        """What ViewComfy tasks are validated against, since ViewComfy cannot describe its nodes.

        ``settings.viewcomfy_object_info`` (an /object_info export of the ComfyUI the deployment was built
        on) when set; else a reachable ComfyUI backend's (same nodes, most likely); else the recorded core
        nodes in ``emulator/data/object_info.json``. Custom nodes must come from one of the first two.
        """
        path = self.settings.viewcomfy_object_info
        if path is None:
            for candidate in self.manager.comfyui_backends():
                if candidate.healthy:
                    return await candidate.get_object_info()
            path = PROJECT_DIR / "emulator" / "data" / "object_info.json"
        cached = self.extras.get("stand_in_object_info")
        if cached is not None and cached[0] == path:
            return cached[1]
        info = await asyncio.to_thread(_read_json, path)
        self.extras["stand_in_object_info"] = (path, info)
        return info


def _read_json(path: Path) -> dict[str, Any]:
    from core.errors import InvalidRequest

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read the object_info file {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"the object_info file {path} is not a JSON object of node classes")
    return value
