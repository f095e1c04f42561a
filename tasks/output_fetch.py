"""How one finished output file gets from a ComfyUI backend into ``outputs/``, by the quickest safe way.

- Same host (the backend's ``output_dir`` is set, off by default): straight from ComfyUI's output
  folder, no HTTP at all; big files hard-linked (``local_outputs``). Anything odd falls back to ``/view``.
- Small files (≤ the cache's entry size): ``/view`` read into memory over the client's keep-alive
  connections, written with one thread hop (open, write, rename), and kept in the ``OutputCache`` so
  ``/api/image`` answers the client without touching the disk.
- Anything else: streamed from ``/view`` to disk in 1 MB pieces (memory stays flat for any size).

It used to be httpx's streaming download for every file: four thread hops (open, write, close,
rename) and httpx's per-request machinery, ~3.5 ms more than the ``/view`` itself on this machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from backends.comfyui import ComfyUIBackend
from tasks.local_outputs import fetch_local, write_file
from tasks.output_cache import OutputCache

T = TypeVar("T")


class OutputFetcher:
    def __init__(self, cache: OutputCache) -> None:
        self.cache = cache

    async def fetch(self, backend: ComfyUIBackend, item: dict[str, str], dest: Path, cache_key: str | None) -> int:
        """Bring ``item`` (``filename``, ``subfolder``, ``type``) to ``dest``; returns its size in bytes.

        ``cache_key``: the name ``/api/image`` serves it under (None: not kept in memory)."""
        filename, subfolder, kind = item["filename"], item["subfolder"], item["type"]
        if backend.output_dir is not None and kind == "output":
            keep = self.cache.max_entry if cache_key is not None else -1
            local = await in_thread_to_the_end(fetch_local, backend.output_dir, filename, subfolder, dest, keep)
            if local is not None:
                if local.data is not None and cache_key is not None:
                    self.cache.put(cache_key, local.data, local.mtime)
                return local.size
        if cache_key is not None and self.cache.max_entry > 0:
            data = await backend.client.fetch_small(filename, subfolder, kind, self.cache.max_entry)
            if data is not None:
                mtime = await in_thread_to_the_end(write_file, dest, data)
                self.cache.put(cache_key, data, mtime)
                return len(data)
        return await backend.client.download(filename, subfolder, kind, dest)


async def in_thread_to_the_end(function: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread``, but a cancelled caller still waits for the thread: a file it writes is then
    complete before the caller's cleanup removes it (a cancelled ``to_thread`` returns while the thread runs on)."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise
