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
from bench.procs import http_json, wait_until
from tests.cluster.clients import FINAL, Listener, posted_twice, sampler_workflow, seeds_run, submit


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
    twice = posted_twice([e.url for e in stack.emulators])
    assert not twice, f"prompts posted more than once: {twice}"


async def completed_once(
    client: httpx.AsyncClient, base: str, stack: ClusterStack, tasks: list[dict[str, Any]], seeds: dict[str, int]
) -> dict[str, Any]:
    """Every task completed (asked of ``base``), each run exactly once, no prompt posted twice: their bodies."""
    bodies = await finals(client, base, [t["task_id"] for t in tasks], timeout=120)
    assert all(b["status"] == "completed" for b in bodies.values()), {
        k: (b["status"], b["error"]) for k, b in bodies.items() if b["status"] != "completed"
    }
    assert_ran_once(stack, tasks, seeds)
    return bodies


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
            bodies = await completed_once(client, survivors[0].url, stack, tasks, seeds)
            await listener.until(lambda: all(_final_in(listener, t) for t in ids) or None, timeout=30)
            for task_id in ids:  # each accepted task reaches its final state exactly once
                ends = [u for u in listener.updates(task_id) if u["status"] in FINAL]
                assert len(ends) == 1, (task_id, ends)
            assert victim.name not in stack.wait_owned(exclude=victim.name).values()
            await assert_outputs_everywhere(client, survivors, list(bodies.values()))
    finally:
        stack.close()


def _final_in(listener: Listener, task_id: str) -> bool:
    return any(u["status"] in FINAL for u in listener.updates(task_id))


async def test_graceful_stop_of_an_owner_while_its_posts_are_in_flight(tmp_path: Path) -> None:
    """ComfyUI validates a prompt before it answers (~5 ms alone, ~140 ms in a burst of 50: transcript
    50_bench): an owner that stops hands its backend over while some of its posts are still under way.
    The next owner must not post them again (ComfyUI would run a repeated prompt id twice)."""
    stack = ClusterStack(tmp_path, step_delay=0.01)
    try:
        for emulator in stack.emulators:  # every POST /prompt holds ComfyUI's loop for 150 ms
            assert http_json(f"{emulator.url}/emulator/costs", {"name": "realistic", "validate_ms": 150})[0] == 200
        owners = stack.owners()
        victim = next(r for r in stack.replicas if r.name == owners["comfyui-1"])
        others = [r for r in stack.replicas if r is not victim]
        seeds: dict[str, int] = {}
        async with httpx.AsyncClient() as client:

            async def one(i: int) -> dict[str, Any]:
                workflow = sampler_workflow(steps=3)
                task = await submit(client, others[i % 2].url, workflow)  # posted by the owner, not by the request
                seeds[task["task_id"]] = workflow["3"]["inputs"]["seed"]
                return task

            flow = asyncio.gather(*(one(i) for i in range(16)))
            await asyncio.sleep(0.6)  # about half of the posts are answered by then
            await asyncio.to_thread(victim.stop)
            tasks = await flow
            await completed_once(client, others[0].url, stack, tasks, seeds)
    finally:
        stack.close()


async def test_a_backend_handed_to_a_new_replica_while_its_posts_are_in_flight(tmp_path: Path) -> None:
    """A replica that joins gets a backend from one that owned both (a rebalance, no restart): the previous
    owner is posting to it at that moment (150 ms of validation each). No prompt may be posted twice."""
    stack = ClusterStack(tmp_path, replicas=1, step_delay=0.01)
    try:
        for emulator in stack.emulators:
            assert http_json(f"{emulator.url}/emulator/costs", {"name": "realistic", "validate_ms": 150})[0] == 200
        (first,) = stack.replicas
        assert set(stack.owners().values()) == {first.name}
        seeds: dict[str, int] = {}
        tasks: list[dict[str, Any]] = []
        async with httpx.AsyncClient() as client:
            handed = asyncio.Event()

            async def flow() -> None:
                after = 3  # batches once the backend has changed hands
                for _ in range(60):  # 4 at a time, one batch after another: posts are always under way
                    batch = [sampler_workflow(steps=3) for _ in range(4)]
                    answers = await asyncio.gather(*(submit(client, first.url, w) for w in batch))
                    for workflow, task in zip(batch, answers, strict=True):
                        seeds[task["task_id"]] = workflow["3"]["inputs"]["seed"]
                        tasks.append(task)
                    after -= handed.is_set()
                    if not after:
                        return

            async def join() -> None:
                await asyncio.sleep(0.5)
                second = Replica(tmp_path, "replica-z", [e.url for e in stack.emulators], stack.env)
                stack.replicas.append(second)
                stack.started.append(second)
                await asyncio.to_thread(second.wait_ready)
                shared = lambda: len(set(stack.owners().values())) == 2  # noqa: E731
                await asyncio.to_thread(wait_until, shared, "a backend handed to the new replica", None, 30)
                handed.set()

            await asyncio.gather(flow(), join())
            assert handed.is_set()
            await completed_once(client, first.url, stack, tasks, seeds)
    finally:
        stack.close()


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
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
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
                errors.append(f"still refused after 60 s: {retried}")

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
            await completed_once(client, stack.nginx.url, stack, tasks, seeds)
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
            bodies = await completed_once(client, stack.replicas[1].url, stack, tasks, seeds)
            await assert_outputs_everywhere(client, stack.replicas, list(bodies.values()))
            after = await submit(client, stack.replicas[2].url, sampler_workflow(steps=2))
            (body,) = (await finals(client, stack.replicas[0].url, [after["task_id"]], timeout=30)).values()
            assert body["status"] == "completed"
    finally:
        stack.close()
