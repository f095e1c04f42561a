"""How one finished output file gets from a ComfyUI backend into ``outputs/``, by the quickest safe way.

- Same host (the backend's ``output_dir`` is set, off by default): straight from ComfyUI's output
  folder, no HTTP at all; big files hard-linked (``local_outputs``). Anything odd falls back to ``/view``.
- Small files (≤ the cache's entry size): ``/view`` read into memory over the client's keep-alive
  connections and kept in the ``OutputCache`` so ``/api/image`` answers the client without touching the
  disk. With ``write_behind`` the file is in hand (and the task may complete) as soon as the bytes are:
  the disk write (one thread hop: open, write, rename; ~0.6 ms of the critical path on this machine)
  runs behind, its cache entry pinned until the file is on disk, and shutdown waits for it. Without it
  (cluster mode copies the file to shared storage next) the write is awaited.
- Anything else: streamed from ``/view`` to disk in 1 MB pieces (memory stays flat for any size).

It used to be httpx's streaming download for every file: four thread hops (open, write, close,
rename) and httpx's per-request machinery, ~3.5 ms more than the ``/view`` itself on this machine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from backends.comfyui import ComfyUIBackend
from comfyui_client import SentRequest
from tasks.local_outputs import fetch_local, write_file
from tasks.output_cache import OutputCache

T = TypeVar("T")
log = logging.getLogger("comfygate.tasks")
WRITE_DELAY_S = 0.005  # a write-behind starts this much later (see _write_behind)
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0  # a failed write-behind is tried again after 1, 2, 4... s


class OutputFetcher:
    def __init__(self, cache: OutputCache, *, write_behind: bool = True) -> None:
        self.cache = cache
        self.write_behind = write_behind
        self._writing: dict[str, asyncio.Future[float]] = {}  # write-behind in progress, by file name
        self.closing = False
        # Writes waiting to start (deferred by WRITE_DELAY_S, or failed and to be tried again), by file name.
        self._waiting: dict[str, tuple[asyncio.TimerHandle, tuple[Any, ...]]] = {}

    def begin(self, backend: ComfyUIBackend, item: dict[str, str], cache_key: str | None) -> SentRequest | None:
        """Send the ``/view`` request of a small download now, in the caller's loop turn (ComfyUI's
        ``executed`` usually arrives with the run's last frames; their handling no longer delays it)."""
        if cache_key is None or self.cache.max_entry <= 0:
            return None
        if backend.output_dir is not None and item["type"] == "output":
            return None
        return backend.client.send_view(item["filename"], item["subfolder"], item["type"])

    async def fetch(
        self,
        backend: ComfyUIBackend,
        item: dict[str, str],
        dest: Path,
        cache_key: str | None,
        sent: SentRequest | None = None,
    ) -> int:
        """Bring ``item`` (``filename``, ``subfolder``, ``type``) to ``dest``; returns its size in bytes.

        ``cache_key``: the name ``/api/image`` serves it under (None: not kept in memory); ``sent``: what
        ``begin`` sent for it."""
        filename, subfolder, kind = item["filename"], item["subfolder"], item["type"]
        if backend.output_dir is not None and kind == "output":
            keep = self.cache.max_entry if cache_key is not None else -1
            local = await in_thread_to_the_end(fetch_local, backend.output_dir, filename, subfolder, dest, keep)
            if local is not None:
                if local.data is not None and cache_key is not None:
                    self.cache.put(cache_key, local.data, local.mtime)
                return local.size
        if cache_key is not None and self.cache.max_entry > 0:
            data = await backend.client.fetch_small(filename, subfolder, kind, self.cache.max_entry, sent)
            if data is not None:
                if self.write_behind and self.cache.can_pin(len(data)):
                    self._write_behind(dest, data, cache_key)
                    return len(data)
                mtime = await in_thread_to_the_end(write_file, dest, data)
                self.cache.put(cache_key, data, mtime)
                return len(data)
        return await backend.client.download(filename, subfolder, kind, dest)

    def _write_behind(self, dest: Path, data: bytes, cache_key: str) -> None:
        """Serve ``data`` from memory now and write it to ``dest`` in a worker thread (started at once, so
        no cancellation can stop it half-way); the entry stays pinned until the file is there. A failed
        write (disk full) keeps the bytes pinned and is tried again later: nothing is lost while the
        process lives, and once the pinned budget is used up new outputs take the awaited path, where a
        failed write fails their task."""
        mtime_s = int(time.time())  # whole seconds: the file's st_mtime is then exactly this float
        self.cache.put(cache_key, data, float(mtime_s), pinned=True)
        # Not at once: the task completes, its listeners hear it and its output is served first; a worker
        # thread writing meanwhile would contend with the loop for the GIL (~0.2 ms on that path).
        args = (dest, data, cache_key, mtime_s, 0)
        self._waiting[dest.name] = (asyncio.get_running_loop().call_later(WRITE_DELAY_S, self._start, *args), args)

    def _start_write(self, dest: Path, data: bytes, cache_key: str, mtime_s: int, failures: int) -> None:
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, functools.partial(write_file, dest, data, mtime_s))
        self._writing[dest.name] = write

        def written(job: asyncio.Future[float]) -> None:
            error = None if job.cancelled() else job.exception()
            if error is not None and self.cache.is_pinned(cache_key) and self.closing and not failures:
                self._start_write(dest, data, cache_key, mtime_s, 1)  # failed as shutdown began: the last try
                return
            if error is not None and self.cache.is_pinned(cache_key) and not self.closing:
                delay = min(RETRY_FIRST_S * 2**failures, RETRY_MAX_S)
                log.error(
                    "could not write output %s (%s): kept in memory, trying again in %g s", dest.name, error, delay
                )
                args = (dest, data, cache_key, mtime_s, failures + 1)
                self._waiting[dest.name] = (loop.call_later(delay, self._start, *args), args)
                return
            if self._writing.get(dest.name) is job:
                del self._writing[dest.name]
            self.cache.unpin(cache_key)
            if error is not None:
                log.error("output %s was never written (%s): only ComfyUI's own copy is left", dest.name, error)

        write.add_done_callback(written)

    def _start(self, dest: Path, data: bytes, cache_key: str, mtime_s: int, failures: int) -> None:
        self._waiting.pop(dest.name, None)
        if self.cache.is_pinned(cache_key):  # not dropped meanwhile (its task failed after all)
            self._start_write(dest, data, cache_key, mtime_s, failures)
        else:
            self._writing.pop(dest.name, None)

    async def settled(self, name: str | None = None) -> None:
        """Wait for the write-behind of the output file ``name`` (None: of every file) to end, whatever its
        outcome: whoever reads ``outputs/`` rather than the cache calls this first. A write still waiting
        to start (deferred, or to be tried again) starts now."""
        for waiting in list(self._waiting) if name is None else [name]:
            handle, args = self._waiting.get(waiting, (None, None))
            if handle is not None and args is not None:
                handle.cancel()
                self._start(*args)
        jobs = list(self._writing.values()) if name is None else [j for j in [self._writing.get(name)] if j]
        if jobs:
            await asyncio.wait(jobs)

    async def close(self) -> None:
        """Shutdown: every file written behind is written (or reported lost) before the process ends."""
        self.closing = True
        while True:
            await self.settled()
            await asyncio.sleep(0)  # the callbacks of writes that just ended run (one may start a last try)
            if not self._waiting and all(job.done() for job in self._writing.values()):
                return


async def in_thread_to_the_end(function: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread``, but a cancelled caller still waits for the thread: a file it writes is then
    complete before the caller's cleanup removes it (a cancelled ``to_thread`` returns while the thread runs on)."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise
