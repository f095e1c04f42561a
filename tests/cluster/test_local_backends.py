"""What a replica keeps for itself in cluster mode: a ViewComfy backend (each replica has its own client of
it; a task sent there is driven by the replica that took it), and what only that replica's memory or disk
holds (a per-request partner-node key, a v2 job's uploaded assets).

The ViewComfy server is a single ComfyGate (its ViewComfy-compatible endpoint) in front of an emulator of
its own; the cluster has three replicas and two ComfyUI emulators, so one replica owns none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.v2.conftest import load_image_workflow, png
from tests.cluster.clients import FINAL, sampler_workflow, seeds_run
from tests.cluster.viewcomfy_stack import ViewComfyStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewComfyStack]:
    stack = ViewComfyStack(tmp_path_factory.mktemp("local"))
    try:
        yield stack
    finally:
        stack.close()


async def final(client: httpx.AsyncClient, url: str, timeout: float = 60) -> dict:
    """A task's body from ``url`` once it is final."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client.get(url, timeout=10)).json()
        if body["status"] in FINAL or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.2)


async def test_a_viewcomfy_task_runs_from_any_replica_and_is_seen_everywhere(stack: ViewComfyStack) -> None:
    replicas = stack.cluster.replicas
    async with httpx.AsyncClient() as client:
        for replica in replicas:  # whether it owns a ComfyUI server or not
            answer = await client.post(
                f"{replica.url}/api/workflow/submit",
                json={"workflow": sampler_workflow(steps=3), "backend": "viewcomfy"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            task_id = answer.json()["task_id"]
            body = await final(client, f"{replica.url}/api/task/{task_id}")
            assert body["status"] == "completed" and body["backend"] == "viewcomfy", body
            [output] = body["outputs"]
            for other in replicas:  # its record and its output reach every replica
                seen = await final(client, f"{other.url}/api/task/{task_id}", timeout=10)
                assert seen["status"] == "completed", (other.name, seen)
                served = await client.get(f"{other.url}{output['url']}", timeout=10)
                assert served.status_code == 200 and served.content, (other.name, output)


async def test_a_viewcomfy_task_is_stopped_from_another_replica(stack: ViewComfyStack) -> None:
    a, b, _ = stack.cluster.replicas
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{a.url}/api/workflow/submit",
            json={"workflow": sampler_workflow(steps=3000), "backend": "viewcomfy"},  # ~30 s
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        task_id = answer.json()["task_id"]
        stopped = await client.post(f"{b.url}/api/interrupt/{task_id}")
        assert stopped.status_code == 200, stopped.text
        body = await final(client, f"{b.url}/api/task/{task_id}", timeout=15)
        assert body["status"] == "interrupted", body


async def test_a_v2_job_with_an_uploaded_asset_runs_where_the_asset_is_or_is_refused(stack: ViewComfyStack) -> None:
    """v2 assets are kept by the replica that took the upload (not shared yet): a job using one is posted by
    that replica to a ComfyUI server it owns, or refused with a 503 that says why (one replica owns none)."""
    outcomes = []
    async with httpx.AsyncClient() as client:
        for i, replica in enumerate(stack.cluster.replicas):
            owned = (await client.get(f"{replica.url}/api/health")).json()["cluster"]["owned"]
            files = {"file": ("in.png", png((10, 20, 30 + i)), "image/png")}
            uploaded = await client.post(f"{replica.url}/api/v2/assets", data={"file_path": "in.png"}, files=files)
            assert uploaded.status_code == 201, uploaded.text
            workflow = load_image_workflow()
            workflow["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": uploaded.json()["id"]}}
            answer = await client.post(f"{replica.url}/api/v2/jobs", json={"workflow": workflow}, timeout=30)
            if not owned:
                assert answer.status_code == 503, answer.text
                assert "uploaded v2 assets" in answer.text and answer.headers["Retry-After"]
                outcomes.append(None)
                continue
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            body = await final(client, f"{replica.url}/api/task/{job_id}")
            assert body["status"] == "completed" and body["backend"] in owned, body
            outcomes.append(job_id)
    assert None in outcomes and any(outcomes)


async def test_viewcomfy_tasks_that_waited_in_the_shared_queue_are_taken_when_a_replica_has_room(
    tmp_path: Path,
) -> None:
    """One unfinished task per backend at most: of three ViewComfy tasks sent to one replica at once, two wait in
    the shared queue (all three were handed over before: a task was counted only once stored), and a replica
    whose own ViewComfy client has room takes each (they waited for good: only ComfyUI servers' owners took
    tasks from that queue)."""
    stack = ViewComfyStack(tmp_path, replica_env={"COMFYUI_MAX_BACKEND_QUEUE": "1"})
    try:
        replica = stack.cluster.replicas[0]
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(  # at once: each sees the others counted, not only the stored ones
                *(
                    client.post(
                        f"{replica.url}/api/workflow/submit",
                        json={"workflow": sampler_workflow(steps=100), "backend": "viewcomfy"},
                        timeout=30,
                    )
                    for _ in range(3)
                )
            )
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            assert sorted(a.json()["status"] for a in answers) == ["pending", "pending", "queued"], [
                a.json() for a in answers
            ]
            bodies = [await final(client, f"{replica.url}/api/task/{a.json()['task_id']}") for a in answers]
        assert [b["status"] for b in bodies] == ["completed"] * 3, bodies
        assert all(b["backend"] == "viewcomfy" for b in bodies)
        assert len(seeds_run([stack.vc_emulator.url])) == 3  # each ran once
    finally:
        stack.close()
