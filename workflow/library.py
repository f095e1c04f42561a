"""Saved workflows in ``workflows/``: JSON files whose names are checked before they touch the disk."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

from core.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, WorkflowFormatError
from security.safe_paths import check_filename, resolve_inside
from workflow.format import detect_format

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,120}$")
MAX_WORKFLOW_BYTES = 20 * 1024 * 1024


def normalise_name(name: str) -> str:
    """``txt2img`` → ``txt2img.json``; anything but a plain safe name is a 400 that says why."""
    check_filename(name, "workflow name")
    if not name.endswith(".json"):
        name = f"{name}.json"
    if not _NAME.match(name[:-5] or "_"):
        raise InvalidRequest(
            f"workflow name {name!r} may only hold letters, digits, spaces, '.', '_' and '-' "
            "and must start with a letter or digit"
        )
    return name


def file_format(path: Path) -> str | None:
    """Say "api" or "ui" for a saved file; None when unreadable or not a workflow (listed so it can be deleted)."""
    try:
        return detect_format(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, WorkflowFormatError):
        return None


class WorkflowLibrary:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: str) -> Path:
        return resolve_inside(self.folder, normalise_name(name), "workflow")

    async def load(self, name: str) -> dict[str, Any]:
        path = self.path(name)

        def read() -> dict[str, Any]:
            if not path.is_file():
                raise NotFound(f"no saved workflow named {path.name!r}; GET /api/workflows lists them")
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise InvalidRequest(f"saved workflow {path.name!r} is not valid JSON: {exc}") from exc

        return await asyncio.to_thread(read)

    async def save(self, name: str, workflow: dict[str, Any], *, overwrite: bool = False) -> str:
        path = self.path(name)
        text = json.dumps(workflow, indent=2, ensure_ascii=False)
        if len(text.encode()) > MAX_WORKFLOW_BYTES:
            raise PayloadTooLarge(f"workflow is larger than {MAX_WORKFLOW_BYTES} bytes", limit=MAX_WORKFLOW_BYTES)

        def write() -> None:
            self.folder.mkdir(parents=True, exist_ok=True)
            if path.exists() and not overwrite:
                raise Conflict(f"a workflow named {path.name!r} exists; send overwrite=true to replace it")
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

        await asyncio.to_thread(write)
        return path.name

    async def delete(self, name: str) -> str:
        path = self.path(name)

        def remove() -> None:
            if not path.is_file():
                raise NotFound(f"no saved workflow named {path.name!r}")
            path.unlink()

        await asyncio.to_thread(remove)
        return path.name

    async def list(self) -> list[dict[str, Any]]:
        def scan() -> list[dict[str, Any]]:
            if not self.folder.is_dir():
                return []
            items = []
            for entry in sorted(self.folder.glob("*.json")):
                if entry.is_file() and not entry.name.startswith("."):
                    stat = entry.stat()
                    items.append(
                        {
                            "name": entry.name,
                            "size": stat.st_size,
                            "modified": stat.st_mtime,
                            "format": file_format(entry),
                        }
                    )
            return items

        return await asyncio.to_thread(scan)
