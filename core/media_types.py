"""Media types of output files: the content type a file is served with and the kind of output it is.

Python's `mimetypes` misses or varies on several formats ComfyUI writes (WebM, FLAC, GLB, ...), and what is
missing would be served as application/octet-stream and not play in a browser.
"""

from __future__ import annotations

import mimetypes
import posixpath
from typing import Literal

Kind = Literal["image", "video", "audio", "text", "3d", "file"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif", ".tif", ".tiff", ".svg"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac"})
MODEL_EXTENSIONS = frozenset({".glb", ".gltf", ".obj", ".ply", ".stl", ".fbx", ".usdz", ".splat", ".spz", ".ksplat"})
# Content types Python's mimetypes may not know (or gets wrong) for these outputs.
EXTRA_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".m4v": "video/mp4",
    ".flac": "audio/flac",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".wav": "audio/wav",
    ".avif": "image/avif",
    ".webp": "image/webp",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".stl": "model/stl",
    ".ply": "application/x-ply",
    ".fbx": "application/octet-stream",
    ".usdz": "model/vnd.usdz+zip",
    ".splat": "application/octet-stream",
    ".spz": "application/octet-stream",
    ".ksplat": "application/octet-stream",
    ".latent": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}


def _extension(name: str) -> str:
    return posixpath.splitext(name.lower())[1]


def content_type(name: str) -> str:
    """The content type an output file is served with, by its name."""
    ext = _extension(name)
    if ext in EXTRA_TYPES:
        return EXTRA_TYPES[ext]
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def kind_of(name: str) -> Kind:
    ext = _extension(name)
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in MODEL_EXTENSIONS:
        return "3d"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return "file"
