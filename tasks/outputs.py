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
from backends.comfyui_outputs import OutputRef, node_output_refs
from comfyui_client import SentRequest
from config import Settings
from core.errors import ComfyUINotFound
from core.media_types import content_type
from core.task import Task
from security.safe_paths import sanitize_filename
from tasks.output_cache import OutputCache
from tasks.output_fetch import OutputFetcher
from tasks.runtime import Jobs

log = logging.getLogger("comfygate.tasks")

FileKey = tuple[str, str, str, str, str]  # node id, key, filename (or text index), subfolder, type
MAX_TEXT_BYTES = 10 * 1024 * 1024  # a text output longer than this is cut when saved
INLINE_TEXT_BYTES = 16 * 1024  # and the first this many bytes are kept on the task itself


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
        self._names: dict[str, set[str]] = {}  # local names given to each task's outputs

    def named(self, task: Task, backend: ComfyUIBackend, node_id: str, output: Any) -> None:
        """ComfyUI's ``executed``: start fetching that node's files now, while the prompt runs on."""
        for index, ref in enumerate(node_output_refs(node_id, output)):
            self._fetch(task, backend, ref, index)

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
        """Every output of every node (images, video, audio, 3D, text, bare names), in order; the downloads
        already running are awaited, not repeated."""
        refs = [
            (ref, i)
            for node_id, output in task.node_outputs.items()
            for i, ref in enumerate(node_output_refs(str(node_id), output))
        ]
        if not refs:
            return []
        results = await asyncio.gather(*(self._fetch(task, backend, ref, i) for ref, i in refs), return_exceptions=True)
        outputs: list[dict[str, Any]] = []
        for (ref, index), result in zip(refs, results, strict=True):
            if isinstance(result, ComfyUINotFound):
                # Fetched early, at ``executed``, a file another node of the prompt writes later (Preview3D
                # naming a SaveGLB's file without a link to it) was not there yet; the run is over now.
                result = await self._fetch(task, backend, ref, index, again=True)
            elif isinstance(result, BaseException):
                raise result
            outputs.append(result)
        return outputs

    def forget(self, task: Task) -> None:
        """The task is complete: its files stay, the bookkeeping goes."""
        self._started.pop(task.task_id, None)
        self._names.pop(task.task_id, None)

    def drop(self, task: Task) -> None:
        """The task did not complete: stop its downloads and remove what they already wrote."""
        self._names.pop(task.task_id, None)
        for job in (self._started.pop(task.task_id, None) or {}).values():
            if not job.done():
                job.cancel()
            elif not job.cancelled() and job.exception() is None:
                self.jobs.spawn(self._remove(job.result()), name=f"remove output of {task.task_id}")

    async def _remove(self, output: dict[str, Any]) -> None:
        self.cache.discard(output["filename"])  # unpinned: a write-behind not started yet never starts
        await self.fetcher.settled(output["filename"])  # one under way ends before the unlink
        folder = self.settings.outputs_dir if output["type"] == "output" else self.temp_dir
        await asyncio.to_thread((folder / output["filename"]).unlink, missing_ok=True)

    def _fetch(
        self, task: Task, backend: ComfyUIBackend, ref: OutputRef, index: int, *, again: bool = False
    ) -> asyncio.Task[dict[str, Any]]:
        """The download (or save, for a text) of one output: started now unless it already is (``again``:
        start it anew)."""
        started = self._started.setdefault(task.task_id, {})
        name = ref.filename if ref.kind != "text" else f"text:{index}"
        key = (ref.node_id, ref.key, name, ref.subfolder, ref.type)
        job = None if again else started.get(key)
        if job is None:
            if ref.kind == "text":
                job = asyncio.ensure_future(self._save_text(task, ref, index))
            else:
                job = self._start_download(task, backend, ref)
            started[key] = job
            job.add_done_callback(_retrieved)
        return job

    def _start_download(self, task: Task, backend: ComfyUIBackend, ref: OutputRef) -> asyncio.Task[dict[str, Any]]:
        """The download's request leaves now; the task that reads the answer runs from the next loop turn."""
        kind = "output" if ref.type == "output" else "temp"  # a backend's answer never picks a local folder
        local = self._local_name(task, f"{task.task_id[:8]}_{sanitize_filename(ref.filename)}")
        wanted = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        cache_key = local if kind == "output" else None
        sent = self.fetcher.begin(backend, wanted, cache_key)
        job = asyncio.ensure_future(self._download(backend, ref, kind, local, wanted, cache_key, sent))
        if sent is not None:  # cancelled before it ran: nobody reads the answer on that connection
            job.add_done_callback(lambda _: sent.abandon())
        return job

    async def _download(
        self,
        backend: ComfyUIBackend,
        ref: OutputRef,
        kind: str,
        local: str,
        wanted: dict[str, str],
        cache_key: str | None,
        sent: SentRequest | None,
    ) -> dict[str, Any]:
        folder = self.settings.outputs_dir if kind == "output" else self.temp_dir
        dest = folder / local
        try:
            size = await self.fetcher.fetch(backend, wanted, dest, cache_key, sent)
        except asyncio.CancelledError:  # the task failed meanwhile: what this download wrote is not an output
            self.cache.discard(local)
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise
        entry = _entry(ref, local, kind, size)
        entry["comfyui"] = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type, **dict(ref.extra)}
        return entry

    def _local_name(self, task: Task, name: str) -> str:
        """``name``, or ``name`` with ``_2``, ``_3``... when another output of the task already has it (two
        names a backend sent can sanitise to one: ``..`` and ``""`` both become ``file``)."""
        used = self._names.setdefault(task.task_id, set())
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        candidate, counter = name, 1
        while candidate in used:
            counter += 1
            candidate = f"{stem}_{counter}{dot}{ext}"
        used.add(candidate)
        return candidate

    async def _save_text(self, task: Task, ref: OutputRef, index: int) -> dict[str, Any]:
        """A text output (PreviewAny, LLM nodes) becomes a .txt file like any other output, inlined when short."""
        data = (ref.text or "").encode("utf-8")[:MAX_TEXT_BYTES]
        local = sanitize_filename(f"{task.task_id[:8]}_{ref.node_id}_text_{index}.txt")
        await asyncio.to_thread((self.settings.outputs_dir / local).write_bytes, data)
        entry = _entry(ref, local, "output", len(data))
        entry["text"] = data[:INLINE_TEXT_BYTES].decode("utf-8", errors="ignore")
        if len(data) > INLINE_TEXT_BYTES:
            entry["text_truncated"] = True
        entry["comfyui"] = {"key": ref.key}
        return entry


def _entry(ref: OutputRef, local: str, kind: str, size: int) -> dict[str, Any]:
    query = "" if kind == "output" else "?type=temp"
    entry: dict[str, Any] = {
        "filename": local,
        "kind": ref.kind,
        "content_type": "text/plain; charset=utf-8" if ref.kind == "text" else content_type(local),
        "size": size,
        "node_id": ref.node_id,
        "type": kind,
        "url": f"/api/image/{local}{query}",
    }
    if ref.animated:
        entry["animated"] = True
    return entry


def _retrieved(job: asyncio.Future[Any]) -> None:
    """A download's failure is reported by ``gather``; one nobody awaits (the task failed) is not an error."""
    if not job.cancelled():
        job.exception()
