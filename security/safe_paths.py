"""Filenames that cannot leave their folder, whoever chose them (a caller, a backend, a workflow).

Everything that touches the disk with an outside name goes through here: traversal (``..``),
absolute paths, Windows separators and drive letters, NUL and control characters, and symlinks
pointing out of the folder are all refused or neutralised.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from core.errors import InvalidRequest, NotFound

_UNSAFE = re.compile(r"[^A-Za-z0-9._\- ()+@]")
MAX_NAME = 180


def sanitize_filename(name: str, default: str = "file") -> str:
    """Reduce any name to a plain basename made of safe characters (for names we pick ourselves)."""
    name = unicodedata.normalize("NFKC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        name = default
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) < 16 else name[:MAX_NAME]
    return name


def check_filename(name: str, what: str = "filename") -> str:
    """Validate a name a caller gave us (no silent rewriting: a bad name is a 400 that says why)."""
    if not name or not name.strip():
        raise InvalidRequest(f"{what} is empty")
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise InvalidRequest(f"{what} {name!r} contains control characters")
    if "/" in name or "\\" in name:
        raise InvalidRequest(f"{what} {name!r} must be a plain name, without '/' or '\\'")
    if name in {".", ".."} or name.startswith("."):
        raise InvalidRequest(f"{what} {name!r} must not start with '.'")
    if re.match(r"^[A-Za-z]:", name):
        raise InvalidRequest(f"{what} {name!r} must not name a drive")
    if len(name) > 255:
        raise InvalidRequest(f"{what} is longer than 255 characters")
    return name


def resolve_inside(folder: Path, name: str, what: str = "file") -> Path:
    """The path of ``name`` in ``folder``, refusing anything (symlinks included) that resolves outside."""
    check_filename(name, what)
    base = folder.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise NotFound(f"{what} {name!r} not found")
    return path


def unique_path(folder: Path, name: str) -> Path:
    """``name`` in ``folder``, with ``_1``, ``_2``... added before the extension when taken."""
    path = folder / name
    stem, ext = path.stem, path.suffix
    counter = 1
    while path.exists():
        path = folder / f"{stem}_{counter}{ext}"
        counter += 1
    return path
