"""Media fixtures of the debugger tests, written with PyAV as ComfyUI's SaveVideo writes its files.

    python -m venv /tmp/av && /tmp/av/bin/pip install av numpy
    /tmp/av/bin/python tests/static/media/make_fixtures.py tests/static/media

comfyui_video.mp4 holds a `prompt` in its metadata (mp4 with `movflags=use_metadata_tags`, as ComfyUI);
clip.webm is a playable VP8 clip for the video player.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import av  # type: ignore[import-not-found]
import numpy as np  # type: ignore[import-not-found]

PROMPT = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 16711680},
        "_meta": {"title": "From the MP4"},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "from_mp4"}},
}


def write(path: str, codec: str, fmt: str, metadata: dict[str, Any]) -> None:
    options = {"movflags": "use_metadata_tags"} if fmt == "mp4" else {}
    with av.open(path, mode="w", format=fmt, options=options) as container:
        for key, value in metadata.items():
            container.metadata[key] = json.dumps(value)
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            pixels = np.full((64, 64, 3), (i * 30) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


if __name__ == "__main__":
    folder = sys.argv[1]
    write(f"{folder}/comfyui_video.mp4", "libx264", "mp4", {"prompt": PROMPT})
    write(f"{folder}/clip.webm", "libvpx", "webm", {})
