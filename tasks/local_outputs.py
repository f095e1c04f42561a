"""Same-host fast path: take a finished output straight from ComfyUI's output folder instead of ``/view``.

When ComfyGate runs on the machine that runs ComfyUI (``COMFYUI_COMFYUI_OUTPUT_DIR``), an HTTP
download of a file that sits on the same disk is a waste: ``/view`` costs ~5 ms on a real server, and
a big output crosses two Python HTTP stacks. Names come from ComfyUI's messages, so they are checked
like any input: no absolute path, no ``..``, the real path (symlinks followed) must stay inside the real
output folder, and the file must be a regular file. Anything unexpected returns None and the caller
falls back to ``/view``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LocalFile:
    size: int
    mtime: float
    data: bytes | None  # the bytes when small enough to keep in memory, else None (linked or copied)


def locate(root: Path, filename: str, subfolder: str) -> str | None:
    """The real path of ``subfolder/filename`` inside ``root``, or None if it would leave it."""
    if not filename or "\x00" in filename or "\x00" in subfolder or os.path.isabs(subfolder or ""):
        return None
    parts = [p for p in (subfolder or "").replace("\\", "/").split("/") if p] + [filename]
    if any(p in (".", "..") for p in parts) or os.path.isabs(filename) or "/" in filename or "\\" in filename:
        return None
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath((real_root, real)) != real_root or real == real_root:
        return None
    return real


def fetch_local(root: Path, filename: str, subfolder: str, dest: Path, keep_below: int) -> LocalFile | None:
    """Bring one output from ComfyUI's folder to ``dest`` (blocking: run it in a thread).

    Small files (≤ ``keep_below`` bytes) are read once and written to ``dest`` (the bytes are returned for the
    in-memory cache); bigger ones are hard-linked (no copy at all), or copied by the kernel when the folders
    are on different filesystems. None: not there or not safe: use ``/view``.
    """
    path = locate(root, filename, subfolder)
    if path is None:
        return None
    try:
        # O_NONBLOCK: opening a FIFO planted there must not hang the thread (a regular file ignores it).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    tmp = dest.with_name(f".{dest.name}.local.part")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        size = info.st_size
        if size <= keep_below:
            data = _read_all(fd, size)
            return LocalFile(len(data), write_file(dest, data), data)
        if not _link_same_file(path, tmp, info.st_ino):
            with open(fd, "rb", closefd=False) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
        return LocalFile(size, info.st_mtime, None)
    except OSError:
        return None
    finally:
        os.close(fd)
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def _read_all(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _link_same_file(path: str, tmp: Path, inode: int) -> bool:
    """Hard-link ``path`` to ``tmp``; False when it cannot (other filesystem...) or the name was swapped."""
    try:
        os.link(path, tmp, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        return False
    # The name may have been swapped since it was opened: keep the link only if it is the same file.
    if os.lstat(tmp).st_ino == inode:
        return True
    tmp.unlink()
    return False


def write_file(path: Path, data: bytes, mtime_s: int | None = None) -> float:
    """Write ``data`` beside ``path``, then rename: no reader sees half a file (blocking: run it in a thread).

    Returns the file's modification time, which the in-memory copy's validators are derived from
    (``mtime_s``: set it to these whole seconds, chosen before the write, as write-behind does)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")  # unique: writers may race
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()  # the write itself sets the modification time
            if mtime_s is not None:
                os.utime(f.fileno(), ns=(mtime_s * 10**9, mtime_s * 10**9))
            mtime = os.fstat(f.fileno()).st_mtime
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return mtime
