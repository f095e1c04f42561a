"""The workflow library in cluster mode: saved workflows in the object store, the same for every replica.

Same names, checks and answers as ``workflow.library`` (which keeps them in ``workflows/``); the files a
deployment ships in ``workflows/`` are copied in once, when they are not there yet.
"""

from __future__ import annotations

import json
from typing import Any

from cluster.objects import ObjectStore, StoreUnavailable
from core.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, ServiceBusy, WorkflowFormatError
from workflow.format import detect_format
from workflow.library import MAX_WORKFLOW_BYTES, WorkflowLibrary

PREFIX = "workflows/"


def _unavailable(exc: StoreUnavailable) -> ServiceBusy:
    return ServiceBusy(f"the object store is unreachable ({exc}); retry shortly", retry_after=2)


class SharedLibrary(WorkflowLibrary):
    def __init__(self, library: WorkflowLibrary, objects: ObjectStore) -> None:
        super().__init__(library.folder)
        self.objects = objects

    async def seed(self) -> None:
        """Copy the shipped workflows in (never over one saved since)."""
        shipped = await super().list()
        for item in shipped:
            data = (self.folder / item["name"]).read_bytes()
            await self.objects.put_bytes(PREFIX + item["name"], data, create=True)

    async def load(self, name: str) -> dict[str, Any]:
        key = PREFIX + self.path(name).name
        try:
            data = await self.objects.get_bytes(key)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc
        if data is None:
            raise NotFound(f"no saved workflow named {key[len(PREFIX) :]!r}; GET /api/workflows lists them")
        try:
            value: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise InvalidRequest(f"saved workflow {key[len(PREFIX) :]!r} is not valid JSON: {exc}") from exc
        return value

    async def save(self, name: str, workflow: dict[str, Any], *, overwrite: bool = False) -> str:
        filename = self.path(name).name
        data = json.dumps(workflow, indent=2, ensure_ascii=False).encode()
        if len(data) > MAX_WORKFLOW_BYTES:
            raise PayloadTooLarge(f"workflow is larger than {MAX_WORKFLOW_BYTES} bytes", limit=MAX_WORKFLOW_BYTES)
        try:
            created = await self.objects.put_bytes(PREFIX + filename, data, create=not overwrite)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc
        if not created:
            raise Conflict(f"a workflow named {filename!r} exists; send overwrite=true to replace it")
        return filename

    async def delete(self, name: str) -> str:
        filename = self.path(name).name
        try:
            if not await self.objects.exists(PREFIX + filename):
                raise NotFound(f"no saved workflow named {filename!r}")
            await self.objects.delete(PREFIX + filename)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc
        return filename

    async def list(self) -> list[dict[str, Any]]:
        try:
            entries = await self.objects.list_meta(PREFIX)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc
        items = []
        for key, size, modified in sorted(entries):  # (str, int, float)
            name = key[len(PREFIX) :]
            if "/" in name or name.startswith(".") or not name.endswith(".json"):
                continue
            items.append({"name": name, "size": size, "modified": modified, "format": await self._format(key)})
        return items

    async def _format(self, key: str) -> str | None:
        try:
            data = await self.objects.get_bytes(key)
            return detect_format(json.loads(data or b"null"))
        except (StoreUnavailable, ValueError, WorkflowFormatError):
            return None
