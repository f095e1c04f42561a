"""Clients of a ComfyGate cluster for the tests: submissions, SSE and /ws listeners, workflows, checks."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.procs import http_json

FINAL = {"completed", "failed", "interrupted", "timeout"}
ORDER = {"pending": 0, "queued": 1, "running": 2, "completed": 3, "failed": 3, "interrupted": 3, "timeout": 3}
SD = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "sd_txt2img_api.json").read_text())


def sampler_workflow(steps: int = 10) -> dict[str, Any]:
    """Text to image: a sampler with ``steps`` progress events and one saved image (a fresh seed each)."""
    workflow = copy.deepcopy(SD)
    workflow["3"]["inputs"]["steps"] = steps
    workflow["3"]["inputs"]["seed"] = random.randrange(1 << 40)
    workflow["5"]["inputs"].update(width=64, height=64)
    return workflow


async def submit(client: httpx.AsyncClient, base: str, workflow: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(f"{base}/api/workflow/submit", json={"workflow": workflow}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def sse_events(
    client: httpx.AsyncClient, url: str, last_id: str | None = None, limit: int | None = None
) -> list[tuple[str | None, str, dict[str, Any]]]:
    """(id, event, data) of a task's SSE stream: ``limit`` events, or all until the stream ends."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    got: list[tuple[str | None, str, dict[str, Any]]] = []
    async with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in event:
                    got.append((event.get("id"), event.get("event", "message"), json.loads(event["data"])))
                    if limit is not None and len(got) >= limit:
                        return got
                event = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
    return got


class Listener:
    """A /ws client that keeps every message of the tasks it is told about."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "hello":
                    self.ready.set()
                self.messages.append(message)
                changed, self.changed = self.changed, asyncio.Event()
                changed.set()

    def updates(self, task_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "task_update" and m.get("task_id") == task_id]

    async def until(self, found: Any, timeout: float = 60) -> Any:
        """Wait until ``found()`` returns something (checked on every message)."""

        async def wait() -> Any:
            while (result := found()) is None:
                changed = self.changed
                await changed.wait()
            return result

        return await asyncio.wait_for(wait(), timeout)

    async def final(self, task_id: str, timeout: float = 60) -> dict[str, Any]:
        return await self.until(lambda: next((m for m in self.updates(task_id) if m["status"] in FINAL), None), timeout)

    async def status(self, task_id: str, status: str, timeout: float = 60) -> None:
        await self.until(lambda: next((m for m in self.updates(task_id) if m["status"] == status), None), timeout)


def assert_in_order(updates: list[dict[str, Any]]) -> None:
    """Statuses never go back; progress never goes back while running; exactly one final update, last."""
    ranks = [ORDER[u["status"]] for u in updates]
    assert ranks == sorted(ranks), [u["status"] for u in updates]
    finals = [u for u in updates if u["status"] in FINAL]
    assert len(finals) == 1 and updates[-1] is finals[0], [u["status"] for u in updates]
    percents = [u["progress"].get("percent") for u in updates if u["status"] == "running" and u.get("progress")]
    percents = [p for p in percents if p is not None]
    assert percents == sorted(percents), percents


def seeds_run(emulator_urls: list[str]) -> list[int]:
    """The sampler seed of every prompt the emulators ran (their whole /history): one per execution."""
    seeds = []
    for url in emulator_urls:
        status, history = http_json(f"{url}/history", timeout=10)
        assert status == 200
        for entry in history.values():
            prompt = entry["prompt"][2]
            seeds += [node["inputs"]["seed"] for node in prompt.values() if node.get("class_type") == "KSampler"]
    return seeds


def posted_twice(emulator_urls: list[str]) -> dict[str, int]:
    """Prompt ids the emulators accepted more than once, on one backend or across several (a real ComfyUI
    runs a repeated prompt id again and keeps one history entry for it: /history cannot show it)."""
    counts: Counter[str] = Counter()
    for url in emulator_urls:
        status, body = http_json(f"{url}/emulator/posted", timeout=10)
        assert status == 200
        counts.update(body["posted"])
    return {prompt_id: n for prompt_id, n in counts.items() if n > 1}
