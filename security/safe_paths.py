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
    if not name:
        raise InvalidRequest(f"{what} is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidRequest(f"{what} {name!r} contains control characters (line breaks, tabs, NUL...)")
    if not name.strip():
        raise InvalidRequest(f"{what} {name!r} is only spaces")
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


def write_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Store ``data`` under ``name`` in ``folder``, or ``name_1``, ``name_2``... when taken: the name is
    claimed by creating the file (``O_EXCL``), so concurrent writers of one name never share a file.
    Blocking: call through a thread."""
    stem, ext = Path(name).stem, Path(name).suffix
    counter = 0
    while True:
        path = folder / (name if counter == 0 else f"{stem}_{counter}{ext}")
        try:
            with open(path, "xb") as file:
                file.write(data)
            return path
        except FileExistsError:
            counter += 1


# Types a browser only displays: no script runs in them, whatever the bytes say (with nosniff).
_PASSIVE_PREFIXES = ("image/", "audio/", "video/")
_PASSIVE_TYPES = frozenset({"text/plain", "application/json"})
# What an active output (an SVG, HTML, XML, script...) may do when opened anyway: nothing.
ACTIVE_OUTPUT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def is_active_type(media_type: str) -> bool:
    """True for types a browser may run script in (SVG, HTML, XML, JavaScript, PDF, unknown text...)."""
    media = media_type.split(";", 1)[0].strip().lower()
    if media == "image/svg+xml":
        return True
    return not (media.startswith(_PASSIVE_PREFIXES) or media in _PASSIVE_TYPES)


def output_headers(media_type: str) -> dict[str, str]:
    """Headers for serving a file a workflow wrote: never sniffed into another type; an active one is
    a download that cannot run script on ComfyGate's origin (ComfyUI has an SVG saver, nodes write HTML)."""
    headers = {"X-Content-Type-Options": "nosniff"}
    if is_active_type(media_type):
        headers["Content-Security-Policy"] = ACTIVE_OUTPUT_CSP
    return headers
