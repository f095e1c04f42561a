"""The objects one ComfyGate instance owns, created by the app's lifespan and reached by dependency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from config import Settings
from event_hub import EventHub
from task_manager import TaskManager
from tasks import TaskStore
from workflow_library import WorkflowLibrary


@dataclass
class Services:
    settings: Settings
    http: httpx.AsyncClient
    store: TaskStore
    hub: EventHub
    manager: TaskManager
    library: WorkflowLibrary
    extras: dict[str, Any] = field(default_factory=dict)

    async def object_info(self, backend: str | None = None) -> dict[str, Any]:
        """object_info of the pinned backend, else of the first reachable one (cached per connection)."""
        from errors import ServiceBusy

        manager = self.manager
        if backend:
            return await manager.choose_backend(set(), backend).get_object_info()
        for candidate in manager.backends.values():
            if candidate.healthy:
                return await candidate.get_object_info()
        raise ServiceBusy("no ComfyUI backend is reachable to describe its nodes", retry_after=5)


async def get_services(request: Request) -> Services:
    """A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    on every request (7% of ComfyGate's CPU per submission in the throughput benchmark)."""
    return request.app.state.services
