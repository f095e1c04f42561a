"""Generate many images concurrently, with a concurrency limit and a progress bar.

    COMFYGATE_URL=http://localhost:8000 python examples/batch_generate.py prompts.txt --concurrency 4

Without a prompts file it uses a few built-in prompts. Progress comes from ComfyGate's WebSocket,
so nothing is polled: one listener follows every task of the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import websockets

COMFYGATE_URL = os.environ.get("COMFYGATE_URL", "http://localhost:8000")
API_KEY = os.environ.get("COMFYGATE_API_KEY")
FINAL = {"completed", "failed", "interrupted", "timeout"}
DEFAULT_PROMPTS = ["a red fox in snow", "a city at night, neon", "a bowl of fruit, still life", "a sailboat at sunset"]


def ws_url() -> str:
    url = COMFYGATE_URL.replace("https://", "wss://").replace("http://", "ws://") + "/ws"
    return f"{url}?token={API_KEY}" if API_KEY else url


def draw(done: int, failed: int, total: int) -> None:
    width = 30
    filled = int(width * (done + failed) / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {done + failed}/{total} done, {failed} failed", end="", file=sys.stderr, flush=True)


async def run_batch(prompts: list[str], concurrency: int, steps: int, out_dir: Path) -> dict[str, dict]:
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    results: dict[str, dict] = {}
    finished: dict[str, asyncio.Future[dict]] = {}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=COMFYGATE_URL, headers=headers, timeout=60) as http:
        async with websockets.connect(ws_url(), max_size=None) as ws:

            async def listen() -> None:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "task_update" and msg["status"] in FINAL:
                        future = finished.get(msg["task_id"])
                        if future is not None and not future.done():
                            future.set_result(msg)

            listener = asyncio.create_task(listen())

            async def one(prompt: str) -> None:
                async with limit:
                    response = await http.post(
                        "/api/workflow/submit",
                        json={
                            "workflow_name": "sd_txt2img_api.json",
                            "params": {"6.text": prompt, "3.seed": -1, "3.steps": steps},
                        },
                    )
                    if response.status_code != 200:
                        results[prompt] = {"status": "rejected", "error": response.json()}
                        return
                    task_id = response.json()["task_id"]
                    finished[task_id] = asyncio.get_running_loop().create_future()
                    task = await http.get(f"/api/task/{task_id}")  # it may have ended before we listened
                    if task.json()["status"] in FINAL:
                        finished[task_id].set_result(task.json())
                    update = await finished[task_id]
                    results[prompt] = update
                    for output in update.get("outputs") or []:
                        if output["type"] == "output":
                            data = await http.get(output["url"])
                            await asyncio.to_thread((out_dir / output["filename"]).write_bytes, data.content)
                    ok = sum(1 for r in results.values() if r["status"] == "completed")
                    draw(ok, len(results) - ok, len(prompts))

            draw(0, 0, len(prompts))
            await asyncio.gather(*(one(p) for p in prompts))
            listener.cancel()
    print(file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompts", nargs="?", help="a text file with one prompt per line")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--steps", type=int, default=int(os.environ.get("STEPS", "20")))
    parser.add_argument("--out", default="batch_outputs")
    args = parser.parse_args()
    prompts = DEFAULT_PROMPTS
    if args.prompts:
        prompts = [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run_batch(prompts, args.concurrency, args.steps, Path(args.out)))
    completed = sum(1 for r in results.values() if r["status"] == "completed")
    print(f"{completed}/{len(prompts)} completed; images in {args.out}/")
    return 0 if completed == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
