"""What a ComfyUI node reports as its output, read as files to fetch (or text to keep), each with its kind.

ComfyUI has no one shape for outputs (NEWER-SERVERS.md): images under `images` (video savers too, with
`animated: [true]`, there is no `videos` key), VideoHelperSuite's `gifs`, `audio`, `3d` file records, text
as plain strings under `text`, and 3D files as bare relative names (Preview3D's `result`). File records may
be of `type` output, temp or input. This module turns any of them into `OutputRef`s, and says which kind
(`image`, `video`, `audio`, `text`, `3d`, `file`) each one is (`core.media_types`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from core.media_types import Kind, kind_of

TEXT_KEYS = frozenset({"text"})
FLAG_KEYS = frozenset({"animated"})  # lists of booleans beside `images`, not outputs


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One output of one node: a file on the backend (filename/subfolder/type) or a text."""

    node_id: str
    key: str  # the key it was reported under (images, gifs, audio, 3d, text, result, ...)
    kind: Kind
    filename: str = ""
    subfolder: str = ""
    type: str = "output"
    text: str | None = None
    animated: bool = False
    extra: tuple[tuple[str, Any], ...] = ()  # small details worth passing on (gifs' format, frame_rate)


def _record(node_id: str, key: str, item: dict[str, Any], animated: bool) -> OutputRef | None:
    filename = item.get("filename")
    if not isinstance(filename, str):  # even "" is asked for: the backend said it wrote a file
        return None
    subfolder = item.get("subfolder")
    subfolder = subfolder if isinstance(subfolder, str) else ""
    remote = item.get("type")
    remote = remote if isinstance(remote, str) and remote else "output"
    details = tuple((k, item[k]) for k in ("format", "frame_rate") if isinstance(item.get(k), str | int | float))
    return OutputRef(node_id, key, kind_of(filename), filename, subfolder, remote, None, animated, details)


def _bare_name(node_id: str, key: str, name: str) -> OutputRef | None:
    """A bare relative path in the output folder (Preview3D): a file only when it has a media extension."""
    if kind_of(name) == "file" or "\\" in name or name.startswith("/"):
        return None
    subfolder, filename = posixpath.split(name)
    return OutputRef(node_id, key, kind_of(filename), filename, subfolder, "output")


def node_output_refs(node_id: str, output: Any) -> list[OutputRef]:
    """Every output in one node's reported `output` (the `executed` message or history `outputs`)."""
    if not isinstance(output, dict):
        return []
    flags = output.get("animated")
    refs: list[OutputRef] = []
    for key, items in output.items():
        if key in FLAG_KEYS or not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            ref: OutputRef | None = None
            if key in TEXT_KEYS and isinstance(item, str):
                ref = OutputRef(str(node_id), key, "text", text=item)
            elif isinstance(item, dict):
                animated = bool(key == "images" and isinstance(flags, list) and index < len(flags) and flags[index])
                ref = _record(str(node_id), key, item, animated)
            elif isinstance(item, str):
                ref = _bare_name(str(node_id), key, item)
            if ref is not None:
                refs.append(ref)
    return refs


def output_refs(node_outputs: dict[str, Any]) -> list[OutputRef]:
    """Every output of a prompt, node by node."""
    return [ref for node_id, output in node_outputs.items() for ref in node_output_refs(str(node_id), output)]
