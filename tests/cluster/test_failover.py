"""The cluster through failures: an owner killed, every replica restarted in turn, Redis or the store away.

Each test has its own servers (redis-server, moto's S3 server, two emulators, three replicas, nginx).
"Exactly once" is counted where it happens: every task has its own sampler seed, and the emulators'
``/history`` holds one entry per execution.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.cluster_procs import ClusterStack, Replica
from tests.cluster.clients import FINAL, Listener, sampler_workflow, seeds_run, submit


async def finals(client: httpx.AsyncClient, base: str, task_ids: list[str], timeout: float) -> dict[str, Any]:
    """Every task's body once it is final, asked of ``base`` (retrying a 503 or a refused connection)."""
    deadline = time.monotonic() + timeout
    done: dict[str, Any] = {}
    while len(done) < len(task_ids):
        if time.monotonic() > deadline:
            stuck = {
                t: (await client.get(f"{base}/api/task/{t}", timeout=10)).json() for t in task_ids if t not in done
            }
            raise AssertionError(f"not final in time: {stuck}")
        for task_id in task_ids:
            if task_id in done:
                continue
            try:
                answer = await client.get(f"{base}/api/task/{task_id}", timeout=10)
            except httpx.TransportError:
                continue
            if answer.status_code == 200 and answer.json()["status"] in FINAL:
                done[task_id] = answer.json()
        await asyncio.sleep(0.2)
    return done


def assert_ran_once(stack: ClusterStack, tasks: list[dict[str, Any]], seeds: dict[str, int]) -> None:
    ran = Counter(seeds_run([e.url for e in stack.emulators]))
    for task in tasks:
        assert ran[seeds[task["task_id"]]] == 1, f"task {task['task_id']} ran {ran[seeds[task['task_id']]]} times"
    assert sum(ran.values()) == len(tasks), f"{sum(ran.values())} executions for {len(tasks)} tasks"


async def assert_outputs_everywhere(client: httpx.AsyncClient, replicas: list[Replica], bodies: list[Any]) -> None:
    for body in bodies:
        assert body["outputs"], body
        for replica in replicas:
            for output in body["outputs"]:
                served = await client.get(f"{replica.url}{output['url']}", timeout=10)
                assert served.status_code == 200 and served.content, (replica.name, output)


async def test_kill_9_the_owner_in_the_middle_of_20_tasks(tmp_path: Path) -> None:
    stack = ClusterStack(tmp_path, step_delay=0.03)
    try:
        owners = stack.owners()
        victim = next(r for r in stack.replicas if r.name == owners["comfyui-1"])
        survivors = [r for r in stack.replicas if r is not victim]
        seeds: dict[str, int] = {}
        async with httpx.AsyncClient() as client, Listener(f"{survivors[0].ws_url}/ws") as listener:
            tasks = []
            for i in range(20):
                workflow = sampler_workflow(steps=20)
                task = await submit(client, survivors[i % 2].url, workflow)
                seeds[task["task_id"]] = workflow["3"]["inputs"]["seed"]
                tasks.append(task)
            ids = [t["task_id"] for t in tasks]
            await listener.until(lambda: sum(1 for t in ids if _final_in(listener, t)) >= 2 or None, timeout=60)
            running = sum(1 for t in ids if not _final_in(listener, t))
            assert running >= 8, "the kill must land while tasks still run and wait"
            victim.kill()
            bodies = await finals(client, survivors[0].url, ids, timeout=120)
            assert all(b["status"] == "completed" for b in bodies.values()), {
                k: (b["status"], b["error"]) for k, b in bodies.items() if b["status"] != "completed"
            }
            await listener.until(lambda: all(_final_in(listener, t) for t in ids) or None, timeout=30)
            for task_id in ids:  # each accepted task reaches its final state exactly once
                ends = [u for u in listener.updates(task_id) if u["status"] in FINAL]
                assert len(ends) == 1, (task_id, ends)
            assert_ran_once(stack, tasks, seeds)
            assert victim.name not in stack.wait_owned(exclude=victim.name).values()
            await assert_outputs_everywhere(client, survivors, list(bodies.values()))
    finally:
        stack.close()


def _final_in(listener: Listener, task_id: str) -> bool:
    return any(u["status"] in FINAL for u in listener.updates(task_id))


async def test_rolling_restart_while_50_tasks_flow(tmp_path: Path) -> None:
    """Every replica stopped and started again, one after another, behind nginx, while tasks come in."""
    stack = ClusterStack(tmp_path, step_delay=0.01)
    errors: list[str] = []
    retried = Counter[int]()
    seeds: dict[str, int] = {}
    tasks: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient() as client:

            async def submit_one() -> None:
                workflow = sampler_workflow(steps=10)
                key = uuid.uuid4().hex  # the same key on every retry: at most one task per submission
                while True:
                    try:
                        answer = await client.post(
                            f"{stack.nginx.url}/api/workflow/submit",
                            json={"workflow": workflow},
                            headers={"Idempotency-Key": key},
                            timeout=30,
                        )
                    except httpx.TransportError as exc:
                        errors.append(f"transport: {exc!r}")
                        return
                    if answer.status_code == 200:
                        seeds[answer.json()["task_id"]] = workflow["3"]["inputs"]["seed"]
                        tasks.append(answer.json())
                        return
                    if answer.status_code in (503, 409):  # retryable: the replica drains, or the key is in use
                        retried[answer.status_code] += 1
                        await asyncio.sleep(0.2)
                        continue
                    errors.append(f"{answer.status_code}: {answer.text[:300]}")
                    return

            async def flow() -> None:
                for _ in range(50):
                    await submit_one()
                    await asyncio.sleep(0.25)

            async def restart_all() -> None:
                await asyncio.sleep(1.0)
                for replica in stack.replicas:
                    await asyncio.to_thread(replica.stop)
                    await asyncio.sleep(0.5)
                    replica.start()
                    await asyncio.to_thread(replica.wait_ready)
                    await asyncio.sleep(1.0)

            await asyncio.gather(flow(), restart_all())
            assert not errors, errors
            assert len({t["task_id"] for t in tasks}) == 50
            ids = [t["task_id"] for t in tasks]
            bodies = await finals(client, stack.nginx.url, ids, timeout=120)
            assert all(b["status"] == "completed" for b in bodies.values()), {
                k: (b["status"], b["error"]) for k, b in bodies.items() if b["status"] != "completed"
            }
            assert_ran_once(stack, tasks, seeds)
            assert all(r.starts == 2 for r in stack.replicas)
    finally:
        stack.close()


@pytest.mark.parametrize("outage", ["redis", "store"])
async def test_redis_or_store_away_for_5_s(tmp_path: Path, outage: str) -> None:
    stack = ClusterStack(tmp_path, step_delay=0.03)
    try:
        seeds: dict[str, int] = {}
        async with httpx.AsyncClient() as client:
            tasks = []
            for i in range(12):
                workflow = sampler_workflow(steps=25)
                task = await submit(client, stack.replicas[i % 3].url, workflow)
                seeds[task["task_id"]] = workflow["3"]["inputs"]["seed"]
                tasks.append(task)
            await asyncio.sleep(1.5)
            started = time.monotonic()
            if outage == "redis":
                await asyncio.to_thread(stack.redis.stop)
            else:
                stack.s3.pause()
            # While it is away: every replica says so (a load balancer drains them) and refuses writes.
            drained: set[str] = set()
            refused = None
            while time.monotonic() - started < 5.0:
                for replica in stack.replicas:
                    health = await client.get(f"{replica.url}/api/health", timeout=5)
                    if health.status_code == 503:
                        assert health.json()["cluster"]["redis" if outage == "redis" else "storage"] is False
                        assert health.headers["Retry-After"]
                        drained.add(replica.name)
                if refused is None and drained:
                    workflow = sampler_workflow(steps=2)
                    answer = await client.post(
                        f"{stack.replicas[0].url}/api/workflow/submit", json={"workflow": workflow}
                    )
                    if answer.status_code == 503:
                        refused = answer.json()
                    else:  # accepted just before the replica noticed: then it was stored, and must run
                        assert answer.status_code == 200, answer.text
                        seeds[answer.json()["task_id"]] = workflow["3"]["inputs"]["seed"]
                        tasks.append(answer.json())
                await asyncio.sleep(0.3)
            assert drained == {r.name for r in stack.replicas}
            assert refused is not None and refused["error"] == "cluster_unavailable"
            assert ("Redis" if outage == "redis" else "object store") in refused["message"]
            if outage == "redis":
                await asyncio.to_thread(stack.redis.start)
            else:
                stack.s3.resume()
            for replica in stack.replicas:  # back by itself
                await asyncio.to_thread(replica.wait_ready, 30)
            ids = [t["task_id"] for t in tasks]
            bodies = await finals(client, stack.replicas[1].url, ids, timeout=120)
            assert all(b["status"] == "completed" for b in bodies.values()), {
                k: (b["status"], b["error"]) for k, b in bodies.items() if b["status"] != "completed"
            }
            assert_ran_once(stack, tasks, seeds)
            await assert_outputs_everywhere(client, stack.replicas, list(bodies.values()))
            after = await submit(client, stack.replicas[2].url, sampler_workflow(steps=2))
            (body,) = (await finals(client, stack.replicas[0].url, [after["task_id"]], timeout=30)).values()
            assert body["status"] == "completed"
    finally:
        stack.close()
