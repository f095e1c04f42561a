"""Advanced ComfyGate use: image upload, the workflow library, WebSocket progress and interrupt.

    COMFYGATE_URL=http://localhost:8000 python examples/advanced_usage.py

1. uploads an input image (a small PNG made here with the standard library),
2. saves a model-free workflow (LoadImage → ImageInvert → SaveImage) into the library,
3. runs it by name with the uploaded image, following its progress on ComfyGate's WebSocket,
4. starts a long txt2img run and interrupts it once it is running,
5. deletes the saved workflow again.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import zlib

import httpx
import websockets

COMFYGATE_URL = os.environ.get("COMFYGATE_URL", "http://localhost:8000")
API_KEY = os.environ.get("COMFYGATE_API_KEY")
FINAL = {"completed", "failed", "interrupted", "timeout"}

INVERT_WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Input image"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "examples/inverted"}},
}


def tiny_png(width: int = 64, height: int = 48) -> bytes:
    """A gradient PNG from the standard library alone (no Pillow needed for the example)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 4 % 256, y * 5 % 256, 128)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def ws_url(task_id: str) -> str:
    base = COMFYGATE_URL.replace("https://", "wss://").replace("http://", "ws://")
    url = f"{base}/ws?task_id={task_id}"
    return f"{url}&token={API_KEY}" if API_KEY else url


async def follow(task_id: str, interrupt_with: httpx.AsyncClient | None = None) -> dict:
    """Print progress of one task from the WebSocket; optionally interrupt it once it runs."""
    async with websockets.connect(ws_url(task_id), max_size=None) as ws:
        interrupted = False
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") != "task_update" or msg.get("task_id") != task_id:
                continue
            progress = msg.get("progress") or {}
            step = f" step {progress['value']}/{progress['max']}" if progress.get("max") else ""
            print(f"  {msg['status']:<11} {progress.get('percent', 0):5.1f}% {progress.get('node_title') or ''}{step}")
            if interrupt_with is not None and not interrupted and msg["status"] == "running" and progress.get("value"):
                print("  -> interrupting")
                await interrupt_with.post(f"/api/interrupt/{msg['prompt_id']}")
                interrupted = True
            if msg["status"] in FINAL:
                return msg
    raise RuntimeError("the WebSocket closed before the task ended")


async def main() -> int:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    async with httpx.AsyncClient(base_url=COMFYGATE_URL, headers=headers, timeout=60) as http:
        print("1. uploading an input image")
        up = await http.post("/api/upload/image", files={"image": ("example.png", tiny_png(), "image/png")})
        up.raise_for_status()
        image_name = up.json()["name"]
        print(f"   ComfyUI knows it as {image_name!r}")

        print("2. saving a workflow to the library")
        saved = await http.post(
            "/api/workflow/upload",
            files={"file": ("example_invert.json", json.dumps(INVERT_WORKFLOW), "application/json")},
            data={"overwrite": "true"},
        )
        saved.raise_for_status()
        name = saved.json()["name"]
        editable = [p["key"] for p in saved.json()["params"]]
        print(f"   saved as {name}; editable parameters: {', '.join(editable)}")

        print("3. running it by name, following progress on the WebSocket")
        submitted = await http.post(
            "/api/workflow/submit", json={"workflow_name": name, "params": {"1.image": image_name}}
        )
        submitted.raise_for_status()
        result = await follow(submitted.json()["task_id"])
        print(f"   {result['status']}: {[o['url'] for o in result.get('outputs') or []]}")

        print("4. a long txt2img run, interrupted once it is running")
        long_run = await http.post(
            "/api/workflow/submit",
            json={"workflow_name": "sd_txt2img_api.json", "params": {"3.steps": 200, "3.seed": -1}},
        )
        long_run.raise_for_status()
        ended = await follow(long_run.json()["task_id"], interrupt_with=http)
        print(f"   ended {ended['status']}")

        print("5. cleaning up the library")
        (await http.delete(f"/api/workflow/{name}")).raise_for_status()
        ok = result["status"] == "completed" and ended["status"] == "interrupted"
        print("done" if ok else "something went wrong")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
