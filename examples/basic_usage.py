"""Generate one image through ComfyGate with plain httpx.

    COMFYGATE_URL=http://localhost:8000 python examples/basic_usage.py "a lighthouse at dawn"

Uses the bundled `sd_txt2img_api.json` from ComfyGate's workflow library; the node ids below
(6 = positive prompt, 7 = negative, 3 = KSampler, 5 = latent size) are that workflow's. Set
COMFYGATE_API_KEY when ComfyGate has API keys turned on.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

COMFYGATE_URL = os.environ.get("COMFYGATE_URL", "http://localhost:8000")
API_KEY = os.environ.get("COMFYGATE_API_KEY")
FINAL = {"completed", "failed", "interrupted", "timeout"}


def client() -> httpx.Client:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    return httpx.Client(base_url=COMFYGATE_URL, headers=headers, timeout=60)


def generate_image(
    prompt: str,
    negative_prompt: str = "blurry, low quality",
    seed: int = -1,
    steps: int = 20,
    width: int = 512,
    height: int = 512,
    out_dir: str | Path = ".",
    timeout: float = 300,
) -> list[Path]:
    """Run txt2img and save the images; returns their paths. seed=-1 picks a fresh random seed."""
    params = {
        "6.text": prompt,
        "7.text": negative_prompt,
        "3.seed": seed,
        "3.steps": steps,
        "5.width": width,
        "5.height": height,
    }
    with client() as http:
        response = http.post("/api/workflow/submit", json={"workflow_name": "sd_txt2img_api.json", "params": params})
        if response.status_code != 200:
            raise RuntimeError(f"submit failed ({response.status_code}): {response.json().get('message')}")
        submitted = response.json()
        print(f"task {submitted['task_id']} queued with seed {submitted['params'].get('3.seed')}")

        deadline = time.monotonic() + timeout
        while True:
            task = http.get(f"/api/task/{submitted['task_id']}").json()
            if task["status"] in FINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {submitted['task_id']} still {task['status']} after {timeout} s")
            time.sleep(0.25)
        if task["status"] != "completed":
            raise RuntimeError(f"task {task['status']}: {(task.get('error') or {}).get('message')}")

        saved = []
        for output in task["outputs"]:
            if output["type"] != "output":
                continue
            path = Path(out_dir) / output["filename"]
            with http.stream("GET", output["url"]) as download, path.open("wb") as f:
                download.raise_for_status()
                for chunk in download.iter_bytes():
                    f.write(chunk)
            saved.append(path)
        return saved


if __name__ == "__main__":
    text = sys.argv[1] if len(sys.argv) > 1 else "a lighthouse at dawn, oil painting"
    paths = generate_image(text, steps=int(os.environ.get("STEPS", "20")), width=256, height=256)
    for p in paths:
        print(f"saved {p} ({p.stat().st_size} bytes)")
