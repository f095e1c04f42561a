"""Load without loss: 50 clients submit, poll and listen while the ComfyUI emulator is restarted once.

Every accepted task must end in a final status (as seen over REST and, for listeners, over the
WebSocket), no task id or prompt id may appear twice, and the only 5xx allowed is a 503 with
Retry-After. CI runs ~8 s; ``COMFYGATE_LOAD_SECONDS=60`` runs the full minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from tests.conftest import FINAL, Gate
from tests.protocol import load_workflow

SECONDS = float(os.environ.get("COMFYGATE_LOAD_SECONDS", "8"))
CLIENTS = int(os.environ.get("COMFYGATE_LOAD_CLIENTS", "50"))
POLL = 0.2
SETTLE = 45.0  # after the load: time for every accepted task to reach a final status


@dataclass
class Tally:
    accepted: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # 5xx without Retry-After, unexpected 4xx, lost tasks
    rest_final: dict[str, str] = field(default_factory=dict)
    ws_final: dict[str, str] = field(default_factory=dict)


async def wait_final_rest(http: httpx.AsyncClient, task_id: str, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        response = await http.get(f"/api/task/{task_id}")
        tally.statuses[response.status_code] += 1
        if response.status_code != 200:
            tally.bad.append(f"GET task {task_id}: {response.status_code} {response.text[:200]}")
            return
        status = response.json()["status"]
        if status in FINAL:
            tally.rest_final[task_id] = status
            return
        await asyncio.sleep(POLL)


async def wait_final_ws(ws_url: str, task_id: str, tally: Tally, deadline: float) -> None:
    """Listen on /ws?task_id=...; a late subscriber is told where the task stands, so nothing is missed."""
    # max_queue=None: a bounded client queue stops reading when full, and then never sees the server's
    # close frame (close waits its 10 s timeout); that is the client's back-pressure, not ComfyGate's.
    async with websockets.connect(f"{ws_url}/ws?task_id={task_id}", open_timeout=20, max_queue=None) as ws:
        while time.monotonic() < deadline:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
            if message.get("type") == "task_update" and message.get("task_id") == task_id:
                if message.get("status") in FINAL:
                    tally.ws_final[task_id] = message["status"]
                    return


async def client(index: int, gate: Gate, http: httpx.AsyncClient, tally: Tally, stop_at: float) -> None:
    listens = index % 5 == 0
    number = 0
    while time.monotonic() < stop_at:
        number += 1
        workflow = load_workflow("invert_save.json")
        workflow["1"]["inputs"]["color"] = (index * 10_000 + number) % 0xFFFFFF
        workflow["1"]["inputs"]["width"] = workflow["1"]["inputs"]["height"] = 32
        try:
            response = await http.post("/api/workflow/submit", json={"workflow": workflow})
        except httpx.HTTPError as exc:
            tally.bad.append(f"submit transport error: {exc!r}")
            continue
        tally.statuses[response.status_code] += 1
        if response.status_code == 503:
            if not response.headers.get("retry-after"):
                tally.bad.append(f"503 without Retry-After: {response.text[:200]}")
            await asyncio.sleep(min(float(response.headers.get("retry-after") or 1), 0.3))
            continue
        if response.status_code != 200:
            tally.bad.append(f"submit {response.status_code}: {response.text[:300]}")
            await asyncio.sleep(0.2)
            continue
        task_id = response.json()["task_id"]
        tally.accepted.append(task_id)
        deadline = max(stop_at, time.monotonic()) + SETTLE
        if listens:
            await asyncio.gather(
                wait_final_ws(gate.ws_url, task_id, tally, deadline), wait_final_rest(http, task_id, tally, deadline)
            )
        else:
            await wait_final_rest(http, task_id, tally, deadline)


async def test_load_without_loss_across_an_emulator_restart(emulator: Any, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([emulator.url], history_limit=100_000, max_pending_tasks=10_000, backend_down_grace=2.0)
    tally = Tally()
    started = time.monotonic()
    stop_at = started + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=gate.url, timeout=30, limits=limits) as http:
        clients = [asyncio.create_task(client(i, gate, http, tally, stop_at)) for i in range(CLIENTS)]
        await asyncio.sleep(SECONDS / 2)
        await asyncio.to_thread(emulator.restart)
        restarted_at = time.monotonic() - started
        await asyncio.wait_for(asyncio.gather(*clients), timeout=SECONDS + SETTLE + 30)
        drained_at = time.monotonic() - started
        listing = (await http.get("/api/tasks", params={"limit": 1000})).json()
        all_tasks = []
        offset = 0
        while True:
            page = (await http.get("/api/tasks", params={"limit": 1000, "offset": offset})).json()
            all_tasks.extend(page["tasks"])
            offset += len(page["tasks"])
            if not page["tasks"] or offset >= page["total"]:
                break

    accepted = tally.accepted
    assert not tally.bad, tally.bad[:10]
    assert accepted, "no task was accepted at all"
    assert len(set(accepted)) == len(accepted), "a task id was handed out twice"
    missing = [t for t in accepted if t not in tally.rest_final]
    assert not missing, f"{len(missing)} accepted tasks never reached a final status: {missing[:5]}"
    listened = [t for t in accepted if t in tally.ws_final]
    assert listened and all(tally.ws_final[t] == tally.rest_final[t] for t in listened)
    assert all(s < 500 or s == 503 for s in tally.statuses), tally.statuses
    # The store agrees: each accepted task exactly once, no prompt id shared, all final.
    ids = [t["task_id"] for t in all_tasks]
    prompts = [t["prompt_id"] for t in all_tasks]
    assert listing["total"] == len(accepted) == len(ids) == len(set(ids))
    assert set(ids) == set(accepted) and len(set(prompts)) == len(prompts)
    assert all(t["status"] in FINAL for t in all_tasks)
    outcome = Counter(tally.rest_final.values())
    assert outcome["completed"] > 0 and restarted_at < SECONDS
    print(
        f"load: {len(accepted)} tasks in {SECONDS:g} s (restart at {restarted_at:.1f} s, all final at "
        f"{drained_at:.1f} s), {dict(outcome)}, HTTP {dict(tally.statuses)}"
    )
