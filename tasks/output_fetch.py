"""How one finished output file gets from a ComfyUI backend into ``outputs/``, by the quickest safe way.

- Small files (≤ the cache's entry size): ``/view`` read into memory over the client's keep-alive
  connections, written with one thread hop (open, write, rename), and kept in the ``OutputCache`` so
  ``/api/image`` answers the client without touching the disk.
- Anything else: streamed from ``/view`` to disk in 1 MB pieces (memory stays flat for any size).

It used to be httpx's streaming download for every file: four thread hops (open, write, close,
rename) and httpx's per-request machinery, ~3.5 ms more than the ``/view`` itself on this machine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from backends.comfyui import ComfyUIBackend
from tasks.output_cache import OutputCache


class OutputFetcher:
    def __init__(self, cache: OutputCache) -> None:
        self.cache = cache

    async def fetch(self, backend: ComfyUIBackend, item: dict[str, str], dest: Path, cache_key: str | None) -> int:
        """Bring ``item`` (``filename``, ``subfolder``, ``type``) to ``dest``; returns its size in bytes.

        ``cache_key``: the name ``/api/image`` serves it under (None: not kept in memory)."""
        filename, subfolder, kind = item["filename"], item["subfolder"], item["type"]
        if cache_key is not None and self.cache.max_entry > 0:
            data = await backend.client.fetch_small(filename, subfolder, kind, self.cache.max_entry)
            if data is not None:
                mtime = await asyncio.to_thread(write_file, dest, data)
                self.cache.put(cache_key, data, mtime)
                return len(data)
        return await backend.client.download(filename, subfolder, kind, dest)


def write_file(path: Path, data: bytes) -> float:
    """Write ``data`` beside ``path``, then rename: no reader sees half a file (blocking: run it in a thread).

    Returns the file's modification time, which the in-memory copy's validators are derived from."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()  # the write itself sets the modification time
            mtime = os.fstat(f.fileno()).st_mtime
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return mtime
