"""What a replica keeps for itself in cluster mode: a ViewComfy backend (each replica has its own client of
it; a task sent there is driven by the replica that took it), and what only that replica's memory or disk
holds (a per-request partner-node key); and the v2 assets, uploaded to one replica and known to all.

The ViewComfy server is a single ComfyGate (its ViewComfy-compatible endpoint) in front of an emulator of
its own; the cluster has three replicas and two ComfyUI emulators, so one replica owns none of them.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from cluster.objects import ObjectStore
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


async def upload(client: httpx.AsyncClient, base: str, data: bytes, file_path: str = "in.png") -> dict:
    files = {"file": (file_path, data, "image/png")}
    answer = await client.post(f"{base}/api/v2/assets", data={"file_path": file_path}, files=files, timeout=30)
    assert answer.status_code == (201 if answer.json().get("created_new") else 200), answer.text
    return answer.json()


async def stored(stack: ViewComfyStack, url: str) -> bool:
    """Whether the cluster's object store has ``url`` (s3://bucket/prefix/key)."""
    env = stack.cluster.s3.env()
    prefix, _, key = url.rpartition("/assets/")
    settings = SimpleNamespace(
        storage_region="us-east-1",
        storage_endpoint=env["COMFYUI_STORAGE_ENDPOINT"],
        storage_key_id=SecretStr(env["COMFYUI_STORAGE_KEY_ID"]),
        storage_secret=SecretStr(env["COMFYUI_STORAGE_SECRET"]),
    )
    return await ObjectStore(prefix, settings).exists(f"assets/{key}")  # type: ignore[arg-type]


def asset_job(asset_id: str) -> dict:
    """LoadImage (the asset) → ImageScale 128x96 → ImageBlur → SaveImage."""
    workflow = load_image_workflow()
    workflow["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": asset_id}}
    return workflow


async def test_an_uploaded_v2_asset_is_known_to_every_replica_until_deleted(stack: ViewComfyStack) -> None:
    """An upload on A is read on B and C (record, bytes, by hash, from-hash); a delete on B is a 404 everywhere,
    and the bytes go with the last record over them."""
    a, b, c = stack.cluster.replicas
    data = png((1, 2, 3))
    async with httpx.AsyncClient() as client:
        asset = await upload(client, a.url, data)
        assert asset["created_new"] is True
        seen = await client.get(f"{b.url}/api/v2/assets/{asset['id']}")
        assert seen.status_code == 200, seen.text
        assert {k: seen.json()[k] for k in ("id", "hash", "size_bytes", "file_path")} == {
            "id": asset["id"],
            "hash": asset["hash"],
            "size_bytes": len(data),
            "file_path": "in.png",
        }
        content = await client.get(f"{b.url}/api/v2/assets/{asset['id']}/content")
        assert content.status_code == 200 and content.content == data
        assert (await client.head(f"{c.url}/api/v2/assets/by-hash/{asset['hash']}")).status_code == 200
        from_hash = f"{c.url}/api/v2/assets/from-hash"
        same = await client.post(from_hash, json={"hash": asset["hash"], "file_path": "in.png"})
        assert same.status_code == 200 and same.json()["id"] == asset["id"], same.text
        other = await client.post(from_hash, json={"hash": asset["hash"], "file_path": "b.png"})
        assert other.status_code == 201 and other.json()["id"] != asset["id"], other.text
        again = await upload(client, c.url, data)  # the same bytes from another replica: stored once already
        assert again["created_new"] is False and again["hash"] == asset["hash"]

        assert (await client.delete(f"{b.url}/api/v2/assets/{asset['id']}")).status_code == 204
        for replica in (a, c, b):
            gone = await client.get(f"{replica.url}/api/v2/assets/{asset['id']}")
            assert gone.status_code == 404, (replica.name, gone.text)
            gone = await client.get(f"{replica.url}/api/v2/assets/{asset['id']}/content")
            assert gone.status_code == 404, (replica.name, gone.text)
        assert (await client.delete(f"{a.url}/api/v2/assets/{asset['id']}")).status_code == 404
        # Other records still use the bytes: they stay, on every replica.
        kept = await client.get(f"{a.url}/api/v2/assets/{other.json()['id']}/content")
        assert kept.status_code == 200 and kept.content == data
        hex_digest = asset["hash"].removeprefix("blake3:")
        blob = stack.cluster.s3.env()["COMFYUI_STORAGE_URL"] + f"/assets/{hex_digest}"
        assert await stored(stack, blob)
        await asyncio.sleep(1.2)  # (a copy fetched within a second of the delete is kept: a new upload's, maybe)
        for left in (other.json()["id"], again["id"]):  # on B: A has a copy (just read), C its upload's
            assert (await client.delete(f"{b.url}/api/v2/assets/{left}")).status_code == 204
        for replica in (a, b, c):
            assert (await client.head(f"{replica.url}/api/v2/assets/by-hash/{asset['hash']}")).status_code == 404
        missing = await client.post(f"{b.url}/api/v2/assets/from-hash", json={"hash": asset["hash"]})
        assert missing.status_code == 404, missing.text
        # The last record gone, the bytes go: from the store, and from every replica's disk.
        assert not await stored(stack, blob)
        await asyncio.sleep(0.5)
        for replica in (a, b, c):
            assert not (Path(replica.env["COMFYUI_UPLOADS_DIR"]) / "v2" / hex_digest).exists(), replica.name


async def test_a_v2_job_with_an_asset_uploaded_on_another_replica_runs_from_every_replica(
    stack: ViewComfyStack,
) -> None:
    """The asset is no reason to bind the job to the replica that took the upload: a job referencing it is
    accepted by every replica (the one owning no ComfyUI server too) and runs on whichever backend was chosen,
    whose owner gets the bytes from the object store."""
    a, b, c = stack.cluster.replicas
    color = (40, 160, 220)
    async with httpx.AsyncClient() as client:
        owned = {r.name: (await client.get(f"{r.url}/api/health")).json()["cluster"]["owned"] for r in (a, b, c)}
        assert any(not names for names in owned.values()), owned  # one replica owns no ComfyUI server
        asset = await upload(client, a.url, png(color))
        backends = set()
        for replica in (c, b, a):
            answer = await client.post(f"{replica.url}/api/v2/jobs", json={"workflow": asset_job(asset["id"])})
            assert answer.status_code == 201, (replica.name, answer.text)
            body = await final(client, f"{replica.url}/api/task/{answer.json()['id']}")
            assert body["status"] == "completed", (replica.name, body)
            backends.add(body["backend"])
            [saved] = [o for o in body["outputs"] if str(o.get("filename")).endswith(".png")]
            served = await client.get(f"{b.url}{saved['url']}", timeout=10)
            assert served.status_code == 200, served.text
            with Image.open(io.BytesIO(served.content)) as img:
                assert img.size == (128, 96)  # ImageScale's: the uploaded image went through
                assert all(abs(x - y) <= 2 for x, y in zip(img.convert("RGB").getpixel((64, 48)), color, strict=True))
        assert backends <= {"comfyui-1", "comfyui-2"}, backends
        # A job's output used as another job's input, on the replica owning no ComfyUI server: shared as well.
        job = (await client.get(f"{a.url}/api/v2/jobs/{answer.json()['id']}")).json()
        [output] = [o for o in job["outputs"] if o["node_id"] == "4"]
        idle = next(r for r in (a, b, c) if not owned[r.name])
        answer = await client.post(f"{idle.url}/api/v2/jobs", json={"workflow": asset_job(output["id"])})
        assert answer.status_code == 201, answer.text
        body = await final(client, f"{idle.url}/api/task/{answer.json()['id']}")
        assert body["status"] == "completed", body


async def test_the_official_sdk_uploads_runs_and_downloads_behind_a_round_robin_load_balancer(
    stack: ViewComfyStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Comfy SDK's asset upload, job run (submit, polls) and output download, each request on the next replica
    (nginx); the job's output asset is then read on every replica."""
    from comfy_sdk import AsyncComfy, Workflow

    monkeypatch.setenv("COMFY_BASE_URL", stack.cluster.nginx.url)
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    async with AsyncComfy() as sdk, httpx.AsyncClient() as client:
        for i in range(3):
            color = (90, 10 + 40 * i, 10)
            workflow = Workflow(load_image_workflow())
            workflow.set_input("1", "image", sdk.assets.from_bytes(png(color), filename=f"sdk{i}.png"))
            job = await sdk.run(workflow, timeout=60)
            assert job.status == "succeeded", job
            [saved] = [o for o in job.outputs if o.node_id == "4"]
            path = await saved.to_file(tmp_path / f"out{i}.png")
            with Image.open(path) as img:
                assert img.size == (128, 96)  # ImageScale's: the uploaded image went through
                assert all(abs(x - y) <= 2 for x, y in zip(img.convert("RGB").getpixel((64, 48)), color, strict=True))
            for replica in stack.cluster.replicas:
                seen = await client.get(f"{replica.url}/api/v2/assets/{saved.id}")
                assert seen.status_code == 200 and seen.json()["job_id"] == job.id, (replica.name, seen.text)
                content = await client.get(f"{replica.url}/api/v2/assets/{saved.id}/content")
                assert content.status_code == 200 and content.content == path.read_bytes(), replica.name


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
