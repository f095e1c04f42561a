"""Serving an asset's bytes: small files read in one go, big ones streamed; HTTP Range either way.

Starlette's ``FileResponse`` stats, opens, reads and closes a file in four thread hops: for the
typical output (a few hundred kB) that is most of the download's cost on a busy machine. A file up to
``SMALL`` bytes is read with one hop and answered from memory (a single byte range supported: what
the SDK sends); bigger files, and multi-range requests, go to ``FileResponse`` (streamed, bounded memory).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

from fastapi.responses import FileResponse, Response

SMALL = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _read_small(path: Path) -> bytes | None:
    """The whole file if it is at most SMALL bytes, None if bigger; FileNotFoundError if it is gone."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(path)
        if info.st_size > SMALL:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(SMALL + 1)
    finally:
        os.close(fd)


async def content_response(path: Path, media_type: str, range_header: str | None) -> Response:
    """The bytes at ``path`` (FileNotFoundError when they are gone)."""
    data = await asyncio.to_thread(_read_small, path)
    if data is None or len(data) > SMALL or (range_header and "," in range_header):
        return FileResponse(path, media_type=media_type)
    headers = {"accept-ranges": "bytes"}
    if not range_header:
        return Response(data, media_type=media_type, headers=headers)
    match = _RANGE.match(range_header.strip())
    size = len(data)
    if match is None or match.groups() == ("", ""):
        return Response(data, media_type=media_type, headers=headers)  # not a byte range we read: ignore it
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(size - int(last), 0), size - 1  # the last N bytes
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    headers["content-range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start : end + 1], status_code=206, media_type=media_type, headers=headers)
