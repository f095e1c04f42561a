"""``core/ASSET`` references in a submitted workflow, and getting their bytes onto the right backend.

At submit, every ``{"__type": "core/ASSET", "info": {"id": ...}}`` is looked up (``info.id`` is
authoritative, ``hash``/``file_path`` only hints) and replaced by a content-addressed input name
(``v2_<hash>.<ext>``), so the workflow ComfyGate stores and shows is the one that runs. The task keeps
the list of blobs it needs (``task.extra["v2_inputs"]``: names and where the bytes are, never the bytes).
Uploading happens at dispatch (``prepare_for_backend``, a task-manager dispatch hook): the backend that
actually runs the job receives them, whichever the pool picked, again after a failover, and a backend
that already has a name (uploaded within ``CACHE_SECONDS``) is not sent it again.
"""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from api.v2.asset_store import AssetRecord, AssetStore
from api.v2.errors import V2Error
from backends.base import Backend
from backends.comfyui import ComfyUIBackend
from core.errors import InvalidRequest
from core.task import Task

ASSET_TYPE = "core/ASSET"
CACHE_SECONDS = 300.0
_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type") == ASSET_TYPE


def find_refs(workflow: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(node id, input name, reference) of every core/ASSET reference in a node's inputs."""
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name, value in inputs.items():
            if is_ref(value):
                yield str(node_id), str(name), value


def ref_id(ref: Any) -> str | None:
    info = ref.get("info") if isinstance(ref, dict) else None
    asset_id = info.get("id") if isinstance(info, dict) else None
    return asset_id if isinstance(asset_id, str) and asset_id else None


def input_name(record: AssetRecord) -> str:
    """The backend-side file name: content-addressed, with an extension ComfyUI's loaders recognise."""
    hex_digest = (record.hash or "")[len("blake3:") :] or record.id.replace("-", "")
    ext = Path(record.file_path or "").suffix.lower()
    if not _EXT.match(ext):
        ext = (mimetypes.guess_extension(record.content_type or "") or ".bin").lower()
    return f"v2_{hex_digest[:32]}{ext}"


def resolve(
    workflow: dict[str, Any], records: dict[str, AssetRecord | None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The workflow with every reference replaced, and the inputs the task needs uploaded.

    ``records`` maps each referenced id to its record (None: unknown). Any unknown or malformed reference
    refuses the whole submission (422 missing_asset), naming every one of them.
    """
    missing = []
    inputs: dict[str, dict[str, Any]] = {}
    resolved = {
        k: (dict(v, inputs=dict(v["inputs"])) if isinstance(v, dict) and isinstance(v.get("inputs"), dict) else v)
        for k, v in workflow.items()
    }
    for node_id, name, ref in find_refs(workflow):
        asset_id = ref_id(ref)
        record = records.get(asset_id) if asset_id else None
        if record is None:
            missing.append(
                {
                    "node_id": node_id,
                    "input": name,
                    "id": asset_id,
                    "reason": "unknown asset id" if asset_id else "a core/ASSET reference needs info.id",
                }
            )
            continue
        file_name = input_name(record)
        resolved[node_id]["inputs"][name] = file_name
        inputs[file_name] = {"name": file_name, "asset": record.id, "kind": record.kind, "location": record.location}
    if missing:
        first = missing[0]
        raise V2Error(
            422,
            "missing_asset",
            f"node {first['node_id']} input {first['input']!r}: {first['reason']}"
            + (f" {first['id']!r}" if first["id"] else "")
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; upload it with POST /api/v2/assets first",
            {"missing": missing},
        )
    return resolved, list(inputs.values())


class BackendInputs:
    """Uploads a task's inputs to the backend it is being dispatched to (from the dispatch hook).

    ``comfyui`` finds a backend among the pool's ComfyUI servers (the ones with an input folder);
    ``written(name)`` returns once an output file of that name is on disk (it may be written behind);
    ``fetch(kind, location, path)`` puts an asset's bytes there when they are not (cluster mode: another replica's).
    """

    def __init__(
        self,
        store: AssetStore,
        comfyui: Callable[[str], ComfyUIBackend | None],
        written: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.comfyui = comfyui
        self.written = written
        self.fetch: Callable[[str, str, Path], Awaitable[None]] | None = None
        self._sent: dict[tuple[str, str], float] = {}  # (backend name, file name) → when sent

    async def prepare_for_backend(self, task: Task, backend: Backend) -> None:
        inputs = task.extra.get("v2_inputs") or []
        if not inputs:
            return
        target = self.comfyui(backend.name)
        if target is None:
            raise InvalidRequest(f"backend {backend.name} cannot receive input files (job {task.task_id})")
        now = time.monotonic()
        for item in inputs:
            key = (backend.name, item["name"])
            if now - self._sent.get(key, -CACHE_SECONDS) < CACHE_SECONDS:
                continue
            path = self.store.file_of(
                AssetRecord(
                    id=item["asset"],
                    kind=item["kind"],
                    hash=None,
                    size=0,
                    content_type="",
                    file_path=None,
                    location=item["location"],
                )
            )
            if item["kind"] != "upload" and self.written is not None:
                await self.written(path.name)
            if self.fetch is not None:
                await self.fetch(item["kind"], item["location"], path)
            try:
                data = await self.store.run(path.read_bytes)
            except OSError as exc:
                raise InvalidRequest(
                    f"asset {item['asset']} of job {task.task_id} is gone (deleted after the submit?): {exc.strerror}"
                ) from exc
            await target.client.upload_image(item["name"], data, overwrite=True)
            self._sent[key] = time.monotonic()
        if len(self._sent) > 10_000:
            cutoff = now - CACHE_SECONDS
            self._sent = {k: t for k, t in self._sent.items() if t > cutoff}
