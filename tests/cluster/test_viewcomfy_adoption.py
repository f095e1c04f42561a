"""A replica killed (kill -9) while it drives a ViewComfy task: one survivor brings the task to its end, once.

A ViewComfy backend is each replica's own, so no lease moves with it: survivors see the replica's alive key
expire and one of them claims the task (``Cluster._adopt_orphans``). With ViewComfy's current API the run
goes on over there and is polled, so the task completes with its outputs; the first API (one SSE POST,
base64 outputs) cannot be asked for a past run, so the task fails with ``replica_lost``.

A replica stopped gracefully (SIGTERM, a rolling restart) leaves a current-API run going: it neither cancels it nor
ends its task, and deletes its alive key, so a survivor adopts the task about a second later and completes it; a
first-API run that ends within the shutdown grace completes on the stopping replica.

The ViewComfy server is a single ComfyGate (both of its ViewComfy-compatible APIs) in front of an emulator
of its own; the cluster has three replicas, so two survivors race for the task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.cluster.clients import FINAL, Listener, sampler_workflow, seeds_run
from tests.cluster.viewcomfy_stack import ViewComfyStack

STEPS = 1000  # ~10 s at the ViewComfy server's step delay: still running when its replica is killed
GRACE_STEPS = 250  # ~2.5 s: ends within the stopping replica's shutdown grace (5 s)
STOP_STEPS = 500  # ~5 s: still running once a graceful stop has returned
ADOPT_WITHIN = 45.0  # the alive key's 6 s (3 lease TTLs of 2 s), a look every second, the rest of the run


def _stack(tmp_path: Path, api: str) -> Iterator[ViewComfyStack]:
    stack = ViewComfyStack(tmp_path, api, emulators=1)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(params=["direct", "current"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewComfyStack]:
    yield from _stack(tmp_path, request.param)


@pytest.fixture
def current_stack(tmp_path: Path) -> Iterator[ViewComfyStack]:
    yield from _stack(tmp_path, "current")


@pytest.fixture
def direct_stack(tmp_path: Path) -> Iterator[ViewComfyStack]:
    yield from _stack(tmp_path, "direct")


def _running_with_progress(listener: Listener, task_id: str) -> bool | None:
    return any(u["status"] == "running" and u["progress"].get("log") for u in listener.updates(task_id)) or None


async def test_a_killed_replicas_viewcomfy_task_ends_once_on_a_survivor(stack: ViewComfyStack) -> None:
    victim, *survivors = stack.cluster.replicas
    api = "current" if "COMFYUI_VIEWCOMFY_API" in stack.cluster.env else "direct"
    workflow = sampler_workflow(steps=STEPS)
    async with (
        httpx.AsyncClient() as client,
        Listener(f"{survivors[0].ws_url}/ws") as first,
        Listener(f"{survivors[1].ws_url}/ws") as second,
    ):
        answer = await client.post(
            f"{victim.url}/api/workflow/submit", json={"workflow": workflow, "backend": "viewcomfy"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["task_id"]
        await first.until(lambda: _running_with_progress(first, task_id), timeout=30)  # under way on ViewComfy

        victim.kill()
        killed = time.monotonic()
        ends = [await listener.final(task_id, timeout=ADOPT_WITHIN) for listener in (first, second)]
        took = time.monotonic() - killed
        body = (await client.get(f"{survivors[0].url}/api/task/{task_id}", timeout=10)).json()
        assert body["status"] in FINAL and body["backend"] == "viewcomfy", body
        if api == "current":  # the run went on over there: polled, its outputs collected as usual
            assert body["status"] == "completed", (body["status"], body["error"])
            [output] = body["outputs"]
            for survivor in survivors:
                served = await client.get(f"{survivor.url}{output['url']}", timeout=10)
                assert served.status_code == 200 and served.content, (survivor.name, output)
            # One execution over there (its seed was bumped by ViewComfy's rule, so it is counted, not matched).
            assert len(seeds_run([stack.vc_emulator.url])) == 1, "the run was not started again"
        else:  # the first API cannot be asked for the run's result
            assert body["status"] == "failed", body
            assert body["error"]["type"] == "replica_lost" and victim.name in body["error"]["message"], body["error"]
            assert "submit it again" in body["error"]["message"], body["error"]
        assert all(end["status"] == body["status"] for end in ends), ends

        await asyncio.sleep(3)  # (time for a second final update to show, were there one)
        for listener in (first, second):  # exactly once: one final update, heard on every survivor
            finals = [u for u in listener.updates(task_id) if u["status"] in FINAL]
            assert len(finals) == 1, finals
        print(f"{api}: {body['status']} {took:.1f} s after the kill")


async def test_a_gracefully_stopped_replicas_viewcomfy_run_goes_on_and_a_survivor_completes_it(
    current_stack: ViewComfyStack,
) -> None:
    stack = current_stack
    victim, *survivors = stack.cluster.replicas
    redis = Redis.from_url(stack.cluster.redis.url)
    async with (
        httpx.AsyncClient() as client,
        Listener(f"{survivors[0].ws_url}/ws") as first,
        Listener(f"{survivors[1].ws_url}/ws") as second,
    ):
        workflow = sampler_workflow(steps=STOP_STEPS)
        answer = await client.post(
            f"{victim.url}/api/workflow/submit", json={"workflow": workflow, "backend": "viewcomfy"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["task_id"]
        await first.until(lambda: _running_with_progress(first, task_id), timeout=30)

        await asyncio.to_thread(victim.stop)  # SIGTERM, as a rolling restart does
        stopped = time.monotonic()
        # A survivor claims it at its next look (about a second), not once the alive key expires (6 s here).
        while not await redis.exists(f"cg:claim:{task_id}"):
            assert time.monotonic() - stopped < 3.0, "no survivor adopted the task promptly"
            await asyncio.sleep(0.05)
        adopted = time.monotonic() - stopped
        ends = [await listener.final(task_id, timeout=30) for listener in (first, second)]
        took = time.monotonic() - stopped
        body = (await client.get(f"{survivors[0].url}/api/task/{task_id}", timeout=10)).json()
        # The run was neither cancelled nor started again: it completed over there, once, and was collected.
        assert body["status"] == "completed", (body["status"], body["error"])
        assert took < 8.0, f"completed {took:.1f} s after the stop"
        assert len(seeds_run([stack.vc_emulator.url])) == 1, "the run was not started again"
        [output] = body["outputs"]
        served = await client.get(f"{survivors[1].url}{output['url']}", timeout=10)
        assert served.status_code == 200 and served.content, output
        assert all(end["status"] == "completed" for end in ends), ends

        await asyncio.sleep(2)  # (time for a second final update to show, were there one)
        for listener in (first, second):
            finals = [u for u in listener.updates(task_id) if u["status"] in FINAL]
            assert len(finals) == 1, finals
        print(f"adopted {adopted:.1f} s, completed {took:.1f} s after the graceful stop")
    await redis.aclose()


async def _stopped_while_running(client: httpx.AsyncClient, victim: Any, listener: Listener, steps: int) -> str:
    """A ViewComfy task submitted to ``victim``, stopped gracefully once the run shows progress: its id."""
    workflow = sampler_workflow(steps=steps)
    answer = await client.post(
        f"{victim.url}/api/workflow/submit", json={"workflow": workflow, "backend": "viewcomfy"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["task_id"]
    await listener.until(lambda: _running_with_progress(listener, task_id), timeout=30)
    await asyncio.to_thread(victim.stop)
    return task_id


async def test_a_gracefully_stopped_replica_lets_its_first_api_run_end_within_the_grace(
    direct_stack: ViewComfyStack,
) -> None:
    """The first API cannot be asked for a past run: the stopping replica lets the run end first (it would have been
    failed ``replica_lost`` otherwise), within COMFYUI_SHUTDOWN_GRACE."""
    stack = direct_stack
    victim, *survivors = stack.cluster.replicas
    async with httpx.AsyncClient() as client, Listener(f"{survivors[0].ws_url}/ws") as first:
        task_id = await _stopped_while_running(client, victim, first, GRACE_STEPS)
        end = await first.final(task_id, timeout=10)
        assert end["status"] == "completed", end
        body = (await client.get(f"{survivors[0].url}/api/task/{task_id}", timeout=10)).json()
        assert body["status"] == "completed", (body["status"], body["error"])
        [output] = body["outputs"]
        served = await client.get(f"{survivors[1].url}{output['url']}", timeout=10)
        assert served.status_code == 200 and served.content, output
        assert len(seeds_run([stack.vc_emulator.url])) == 1


async def test_a_first_api_run_longer_than_the_grace_is_failed_once_by_a_survivor(direct_stack: ViewComfyStack) -> None:
    """What still runs once the grace is over is ended as on a crash: a survivor adopts it (the stopping replica's
    alive key is deleted, not left to expire) and fails it ``replica_lost``, once."""
    stack = direct_stack
    victim, *survivors = stack.cluster.replicas
    async with httpx.AsyncClient() as client, Listener(f"{survivors[0].ws_url}/ws") as first:
        task_id = await _stopped_while_running(client, victim, first, STEPS)
        end = await first.final(task_id, timeout=10)
        assert end["status"] == "failed", end
        body = (await client.get(f"{survivors[0].url}/api/task/{task_id}", timeout=10)).json()
        assert body["error"]["type"] == "replica_lost" and victim.name in body["error"]["message"], body["error"]
        await asyncio.sleep(2)  # (time for a second final update to show, were there one)
        assert len([u for u in first.updates(task_id) if u["status"] in FINAL]) == 1
