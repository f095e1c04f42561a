"""Tiny real media files for the emulator's video, audio and 3D nodes, with no codec library.

A browser must be able to play what the emulator saves, so these are valid files, not placeholders:
WebM (each frame a VP8 key frame taken from a Pillow-encoded lossy WebP, muxed as Matroska), WAV (a sine
tone through the standard library's ``wave``) and GLB (binary glTF 2.0 with one triangle).
"""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from collections.abc import Sequence

from PIL import Image

# ---- WebM ------------------------------------------------------------------------------------------


def _element(element_id: int, payload: bytes) -> bytes:
    """An EBML element: its id, an 8-byte size, the payload."""
    id_bytes = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return id_bytes + b"\x01" + len(payload).to_bytes(7, "big") + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _float(element_id: int, value: float) -> bytes:
    return _element(element_id, struct.pack(">d", value))


def _vp8_key_frame(image: Image.Image) -> bytes:
    """The VP8 bitstream of one frame: Pillow writes a simple lossy WebP = RIFF + one 'VP8 ' chunk."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "WEBP", quality=80, method=0)
    data = buf.getvalue()
    offset = 12
    while offset + 8 <= len(data):
        fourcc, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if fourcc == b"VP8 ":
            return data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    raise ValueError("Pillow did not write a lossy VP8 WebP")


def webm(frames: Sequence[Image.Image], fps: float) -> bytes:
    """A playable VP8 WebM of `frames` at `fps` (every frame a key frame)."""
    if not frames:
        raise ValueError("no frames")
    width, height = frames[0].size
    step_ms = 1000.0 / max(fps, 0.01)
    header = _element(
        0x1A45DFA3,
        _uint(0x4286, 1)
        + _uint(0x42F7, 1)
        + _uint(0x42F2, 4)
        + _uint(0x42F3, 8)
        + _element(0x4282, b"webm")
        + _uint(0x4287, 2)
        + _uint(0x4285, 2),
    )
    info = _element(
        0x1549A966,
        _uint(0x2AD7B1, 1_000_000)
        + _element(0x4D80, b"comfyui-emulator")
        + _element(0x5741, b"comfyui-emulator")
        + _float(0x4489, step_ms * len(frames)),
    )
    video = _element(0xE0, _uint(0xB0, width) + _uint(0xBA, height))
    track = _element(0xAE, _uint(0xD7, 1) + _uint(0x73C5, 1) + _uint(0x83, 1) + _element(0x86, b"V_VP8") + video)
    blocks = b""
    for index, frame in enumerate(frames):
        timecode = round(index * step_ms)
        if timecode > 32767:
            raise ValueError("video longer than one cluster (32 s)")
        blocks += _element(0xA3, b"\x81" + struct.pack(">h", timecode) + b"\x80" + _vp8_key_frame(frame))
    cluster = _element(0x1F43B675, _uint(0xE7, 0) + blocks)
    return header + _element(0x18538067, info + _element(0x1654AE6B, track) + cluster)


# ---- WAV -------------------------------------------------------------------------------------------


def wav_tone(seconds: float, frequency: float = 440.0, sample_rate: int = 22_050) -> bytes:
    """A mono 16-bit sine tone."""
    count = max(1, int(seconds * sample_rate))
    samples = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * frequency * n / sample_rate))) for n in range(count)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples)
    return buf.getvalue()


# ---- GLB -------------------------------------------------------------------------------------------


def glb_triangle(size: float = 1.0) -> bytes:
    """Binary glTF 2.0 holding one triangle (positions only)."""
    positions = struct.pack("<9f", 0, 0, 0, size, 0, 0, 0, size, 0)
    document = {
        "asset": {"version": "2.0", "generator": "comfyui-emulator"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": len(positions)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [size, size, 0],
            }
        ],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary = positions + b"\0" * (-len(positions) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
