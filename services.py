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
        """object_info of the pinned backend, else every backend's node classes merged (cached per connection)."""
        return await self.manager.object_info(backend)


def get_services(request: Request) -> Services:
    return request.app.state.services
