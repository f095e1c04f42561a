"""ComfyUI's WebSocket frames, parsed into one typed event.

Text frames are ``{"type": ..., "data": {...}}``. Binary frames are ``[u32 event_type][payload]``:
type 1 is a preview image (``[u32 format 1=JPEG 2=PNG][bytes]``), type 3 a text message
(``[u32 len][node_id][text]``), type 4 a preview with a JSON metadata header
(``[u32 meta_len][json][bytes]``). See ``shared/comfyui-protocol/README.md``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

BINARY_PREVIEW_IMAGE = 1
BINARY_TEXT = 3
BINARY_PREVIEW_WITH_METADATA = 4

IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


@dataclass(slots=True)
class ComfyUIEvent:
    """One message from ComfyUI's /ws. ``type`` is ComfyUI's own name, or preview/text for binary."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None
    image_type: str | None = None

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")


class MalformedFrame(ValueError):
    """A frame ComfyUI would never send; logged and skipped by the listener."""


def parse_text_frame(text: str | bytes) -> ComfyUIEvent:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise MalformedFrame("text frame without a 'type'")
    data = msg.get("data")
    return ComfyUIEvent(type=msg["type"], data=data if isinstance(data, dict) else {})


def parse_binary_frame(frame: bytes) -> ComfyUIEvent:
    if len(frame) < 4:
        raise MalformedFrame("binary frame shorter than its header")
    (event_type,) = struct.unpack_from(">I", frame, 0)
    body = frame[4:]
    if event_type == BINARY_PREVIEW_IMAGE:
        if len(body) < 4:
            raise MalformedFrame("preview frame without an image format")
        (fmt,) = struct.unpack_from(">I", body, 0)
        return ComfyUIEvent(type="preview", image=bytes(body[4:]), image_type=IMAGE_FORMATS.get(fmt, "image/jpeg"))
    if event_type == BINARY_PREVIEW_WITH_METADATA:
        if len(body) < 4:
            raise MalformedFrame("preview frame without metadata length")
        (meta_len,) = struct.unpack_from(">I", body, 0)
        try:
            meta = json.loads(body[4 : 4 + meta_len])
        except ValueError as exc:
            raise MalformedFrame(f"preview metadata is not JSON: {exc}") from exc
        meta = meta if isinstance(meta, dict) else {}
        return ComfyUIEvent(
            type="preview",
            data=meta,
            image=bytes(body[4 + meta_len :]),
            image_type=meta.get("image_type", "image/png"),
        )
    if event_type == BINARY_TEXT:
        if len(body) < 4:
            raise MalformedFrame("text frame without node id length")
        (id_len,) = struct.unpack_from(">I", body, 0)
        node_id = body[4 : 4 + id_len].decode("utf-8", "replace")
        text = body[4 + id_len :].decode("utf-8", "replace")
        return ComfyUIEvent(type="text", data={"node": node_id, "text": text})
    return ComfyUIEvent(type=f"binary_{event_type}", data={"size": len(body)})


def parse_frame(frame: str | bytes) -> ComfyUIEvent:
    if isinstance(frame, str):
        return parse_text_frame(frame)
    return parse_binary_frame(frame)
