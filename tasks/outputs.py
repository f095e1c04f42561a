"""A task's output files: fetched the moment ComfyUI names them, gathered when the run is over.

ComfyUI announces each output node's files in ``executed``, while the prompt may still run other
nodes; ``execution_success`` follows. Fetching only then put the whole download after the run. Here a
file's download starts at ``executed``; the task is complete once every output node of its prompt has
reported and every file is in hand, which can be before ``execution_success`` arrives.

Why that is safe: ComfyUI executes only the output nodes and their ancestors, each output node after
everything it depends on, and checks for interrupts before a node, never after the last. Once every
output node has sent ``executed``, nothing is left that could fail or be interrupted. A prompt with an
output node that never sends ``executed`` (no UI output, e.g. SaveImageWebsocket) or that fails is not
complete until ``execution_success``; one that fails has its started downloads cancelled and the files
already fetched removed, so a failed task leaves no outputs behind.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from backends.comfyui import ComfyUIBackend
from config import Settings
from core.task import Task
from security.safe_paths import content_type, sanitize_filename
from tasks.output_cache import OutputCache
from tasks.output_fetch import OutputFetcher
from tasks.runtime import Jobs

log = logging.getLogger("comfygate.tasks")

FileKey = tuple[str, str, str, str]  # node id, filename, subfolder, type


def named_files(node_outputs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(node id, item) for every file the node outputs name: ``{"images": [{"filename", ...}], ...}``."""
    found: list[tuple[str, dict[str, Any]]] = []
    for node_id, output in node_outputs.items():
        if not isinstance(output, dict):
            continue
        for items in output.values():
            if isinstance(items, list):
                found += [(node_id, i) for i in items if isinstance(i, dict) and isinstance(i.get("filename"), str)]
    return found


class Outputs:
    """Downloads of output files per task, started early and awaited once."""

    def __init__(self, settings: Settings, temp_dir: Path, jobs: Jobs) -> None:
        # Just-finished small outputs, in memory for /api/image (api/routers/core.py).
        self.cache = OutputCache(settings.output_cache_bytes, settings.output_cache_file_bytes)
        self.fetcher = OutputFetcher(self.cache)
        self.settings = settings
        self.temp_dir = temp_dir
        self.jobs = jobs
        self._started: dict[str, dict[FileKey, asyncio.Task[dict[str, Any]]]] = {}

    def named(self, task: Task, backend: ComfyUIBackend, node_id: str, output: Any) -> None:
        """ComfyUI's ``executed``: start fetching that node's files now, while the prompt runs on."""
        for _, item in named_files({node_id: output}):
            self._fetch(task, backend, node_id, item)

    def all_reported(self, task: Task, backend: ComfyUIBackend) -> bool:
        """Has every output node of the task's prompt sent ``executed``? (False when unknown.)"""
        classes = backend.output_classes
        if not classes:
            return False
        outputs = [
            n for n, spec in task.workflow.items() if isinstance(spec, dict) and spec.get("class_type") in classes
        ]
        return bool(outputs) and all(n in task.node_outputs for n in outputs)

    async def gather(self, task: Task, backend: ComfyUIBackend) -> list[dict[str, Any]]:
        """Every file of every node output, in order; the downloads already running are awaited, not repeated."""
        jobs = [self._fetch(task, backend, node_id, item) for node_id, item in named_files(task.node_outputs)]
        return list(await asyncio.gather(*jobs)) if jobs else []

    def forget(self, task: Task) -> None:
        """The task is complete: its files stay, the bookkeeping goes."""
        self._started.pop(task.task_id, None)

    def drop(self, task: Task) -> None:
        """The task did not complete: stop its downloads and remove what they already wrote."""
        for job in (self._started.pop(task.task_id, None) or {}).values():
            if not job.done():
                job.cancel()
            elif not job.cancelled() and job.exception() is None:
                self.jobs.spawn(self._remove(job.result()), name=f"remove output of {task.task_id}")

    async def _remove(self, output: dict[str, Any]) -> None:
        self.cache.discard(output["filename"])
        folder = self.settings.outputs_dir if output["type"] == "output" else self.temp_dir
        await asyncio.to_thread((folder / output["filename"]).unlink, missing_ok=True)

    def _fetch(
        self, task: Task, backend: ComfyUIBackend, node_id: str, item: dict[str, Any]
    ) -> asyncio.Task[dict[str, Any]]:
        """The download of one file: started now unless it already is."""
        started = self._started.setdefault(task.task_id, {})
        key = (node_id, str(item["filename"]), str(item.get("subfolder") or ""), str(item.get("type") or ""))
        job = started.get(key)
        if job is None:
            job = started[key] = asyncio.ensure_future(self._download(task, backend, node_id, item))
            job.add_done_callback(_retrieved)
        return job

    async def _download(
        self, task: Task, backend: ComfyUIBackend, node_id: str, item: dict[str, Any]
    ) -> dict[str, Any]:
        remote = item.get("type") if isinstance(item.get("type"), str) and item.get("type") else "output"
        kind = "output" if remote == "output" else "temp"  # a backend's answer never picks a local folder
        folder = self.settings.outputs_dir if kind == "output" else self.temp_dir
        local = f"{task.task_id[:8]}_{sanitize_filename(item['filename'])}"
        subfolder = str(item.get("subfolder") or "")
        wanted = {"filename": str(item["filename"]), "subfolder": subfolder, "type": str(remote)}
        dest = folder / local
        try:
            size = await self.fetcher.fetch(backend, wanted, dest, local if kind == "output" else None)
        except asyncio.CancelledError:  # the task failed meanwhile: what this download wrote is not an output
            self.cache.discard(local)
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise
        query = "" if kind == "output" else "?type=temp"
        return {
            "filename": local,
            "content_type": content_type(local),
            "size": size,
            "node_id": node_id,
            "type": kind,
            "url": f"/api/image/{local}{query}",
            "comfyui": {"filename": item["filename"], "subfolder": subfolder, "type": remote},
        }


def _retrieved(job: asyncio.Future[Any]) -> None:
    """A download's failure is reported by ``gather``; one nobody awaits (the task failed) is not an error."""
    if not job.cancelled():
        job.exception()
