"""Three replicas behind nginx behave as one service: submit on one, watch on another, act on a third.

Real servers on loopback ports, started here: redis-server, moto's S3 server, two ComfyUI emulators,
three ComfyGate replicas in cluster mode (``start.py``), and nginx round-robin in front (no stickiness).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from bench.cluster_procs import ClusterStack
from tests.cluster.clients import FINAL, Listener, assert_in_order, sampler_workflow, sse_events, submit


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStack]:
    stack = ClusterStack(tmp_path_factory.mktemp("cluster"), step_delay=0.05)
    try:
        yield stack
    finally:
        stack.close()


async def test_submit_on_a_watch_on_b_over_ws_and_sse_resumed_on_c(stack: ClusterStack) -> None:
    a, b, c = stack.replicas
    async with (
        httpx.AsyncClient() as client,
        Listener(f"{a.ws_url}/ws") as on_a,
        Listener(f"{b.ws_url}/ws") as on_b,
        Listener(f"{c.ws_url}/ws") as on_c,
    ):
        task = await submit(client, a.url, sampler_workflow(steps=30))
        task_id = task["task_id"]
        # One SSE client reads everything on A; another reads a few events on B, then resumes on C.
        full = asyncio.create_task(sse_events(client, f"{a.url}/api/task/{task_id}/events"))
        first = await sse_events(client, f"{b.url}/api/task/{task_id}/events", limit=4)
        resume_from = first[-1][0]
        assert resume_from is not None
        rest = await sse_events(client, f"{c.url}/api/task/{task_id}/events", last_id=resume_from)
        everything = await full
        final = await on_b.final(task_id)
        # Every replica's listeners, the one driving the task too (it hears its own messages at once, not from the
        # stream): the same updates, each once, in order.
        await on_a.final(task_id)
        await on_c.final(task_id)

    assert final["status"] == "completed", final
    assert final["outputs"] and final["outputs"][0]["url"].startswith("/api/image/")
    updates = on_b.updates(task_id)
    assert_in_order(updates)
    for other in (on_a, on_c):
        assert_in_order(other.updates(task_id))
        assert [u["status"] for u in other.updates(task_id)][-1] == "completed"
    assert any(u["status"] == "running" and u["progress"].get("value") for u in updates), "no step progress on B"

    # The resumed stream carries exactly what was missed: every event after the resume id, none before,
    # in the same order and with the same ids as a client that read it all on a third replica.
    split = first + rest
    ids = [int(i) for i, _, _ in split if i is not None]
    assert ids == sorted(set(ids)), "ids repeat or go back across the resumption"
    assert all(int(i) > int(resume_from) for i, _, _ in rest if i is not None)
    start = max(int(first[0][0] or 0), int(everything[0][0] or 0))
    tail_split = [(i, kind, data) for i, kind, data in split if int(i or 0) > start]
    tail_full = [(i, kind, data) for i, kind, data in everything if int(i or 0) > start]
    assert tail_split == tail_full
    assert tail_split[-1][1] == "task_update" and tail_split[-1][2]["status"] == "completed"


async def test_list_get_interrupt_on_c(stack: ClusterStack) -> None:
    a, b, c = stack.replicas
    async with httpx.AsyncClient() as client, Listener(f"{b.ws_url}/ws") as on_b:
        task = await submit(client, a.url, sampler_workflow(steps=2000))  # ~100 s: it must be stopped
        task_id = task["task_id"]
        await on_b.status(task_id, "running")
        seen = (await client.get(f"{c.url}/api/task/{task_id}")).json()
        assert seen["status"] == "running" and seen["backend"] in {"comfyui-1", "comfyui-2"}
        listed = (await client.get(f"{c.url}/api/tasks", params={"status": "running"})).json()
        assert task_id in [t["task_id"] for t in listed["tasks"]]
        stopped = await client.post(f"{c.url}/api/interrupt/{task_id}")
        assert stopped.status_code == 200, stopped.text
        final = await on_b.final(task_id, timeout=30)
        assert final["status"] == "interrupted", final
        for replica in (a, b, c):
            body = (await client.get(f"{replica.url}/api/task/{task_id}")).json()
            assert body["status"] == "interrupted", (replica.name, body)
        history = (await client.get(f"{c.url}/api/history")).json()
        assert task_id in [t["task_id"] for t in history["tasks"]]


async def test_queued_task_interrupted_from_another_replica(stack: ClusterStack) -> None:
    """A task waiting in its backend's queue, stopped from a replica that does not own that backend."""
    a, b, c = stack.replicas
    async with httpx.AsyncClient() as client, Listener(f"{a.ws_url}/ws") as on_a:
        blockers = [await submit(client, b.url, sampler_workflow(steps=400)) for _ in range(2)]
        waiting = await submit(client, b.url, sampler_workflow(steps=5))
        await on_a.status(waiting["task_id"], "queued")
        owners = stack.owners()
        backend = (await client.get(f"{a.url}/api/task/{waiting['task_id']}")).json()["backend"]
        other = next(r for r in (a, b, c) if r.name != owners[backend])
        assert (await client.post(f"{other.url}/api/interrupt/{waiting['task_id']}")).status_code == 200
        final = await on_a.final(waiting["task_id"], timeout=30)
        assert final["status"] == "interrupted", final
        for blocker in blockers:
            await client.post(f"{c.url}/api/interrupt/{blocker['task_id']}")
        for blocker in blockers:
            assert (await on_a.final(blocker["task_id"], timeout=30))["status"] == "interrupted"


async def test_through_nginx_ws_sse_and_outputs_from_every_replica(stack: ClusterStack) -> None:
    """The service's one address: nginx round robin, no stickiness; WebSockets and SSE pass through."""
    proxy = stack.nginx
    async with httpx.AsyncClient() as client, Listener(f"{proxy.ws_url}/ws") as listener:
        tasks = [await submit(client, proxy.url, sampler_workflow(steps=8)) for _ in range(6)]
        events = await sse_events(client, f"{proxy.url}/api/task/{tasks[0]['task_id']}/events")
        finals = [await listener.final(t["task_id"]) for t in tasks]
        assert events[-1][2]["status"] == "completed"
        backends = set()
        for task, final in zip(tasks, finals, strict=True):
            assert final["status"] == "completed", final
            assert_in_order(listener.updates(task["task_id"]))
            backends.add(final["backend"])
            output = final["outputs"][0]
            comfy = output["comfyui"]
            emulator = next(e for e in stack.emulators if e.url == owner_url(stack, final["backend"]))
            original = (await client.get(f"{emulator.url}/view", params=comfy)).content
            assert original
            for replica in stack.replicas:  # stored once, served by any replica
                served = await client.get(f"{replica.url}{output['url']}")
                assert served.status_code == 200 and served.content == original, replica.name
            through = await client.get(f"{proxy.url}{output['url']}")
            assert through.content == original
        assert backends == {"comfyui-1", "comfyui-2"}, "least-loaded choice should use both backends"


def owner_url(stack: ClusterStack, backend: str) -> str:
    return stack.emulators[int(backend.rsplit("-", 1)[1]) - 1].url


async def test_health_reports_the_cluster(stack: ClusterStack) -> None:
    async with httpx.AsyncClient() as client:
        owned: list[str] = []
        for replica in stack.replicas:
            body = (await client.get(f"{replica.url}/api/health")).json()
            assert body["cluster"]["replica"] == replica.name
            assert body["cluster"]["redis"] is True and body["cluster"]["storage"] is True
            owned += body["cluster"]["owned"]
        assert sorted(owned) == ["comfyui-1", "comfyui-2"], "each backend has exactly one owner"


async def test_library_uploads_and_synchronous_answers_are_shared(stack: ClusterStack) -> None:
    a, b, c = stack.replicas
    async with httpx.AsyncClient() as client:
        # The library: saved on A, listed on B, loaded on C, a second save refused, deleted on B.
        name = f"shared_{random.randrange(1 << 30)}"
        files = {"file": ("w.json", json.dumps(sampler_workflow(steps=3)).encode(), "application/json")}
        saved = await client.post(f"{a.url}/api/workflow/upload", files=files, data={"name": name})
        assert saved.status_code == 200, saved.text
        listed = (await client.get(f"{b.url}/api/workflows")).json()
        assert f"{name}.json" in [w["name"] for w in listed["workflows"]]
        assert "sd_txt2img_api.json" in [w["name"] for w in listed["workflows"]], "shipped workflows are seeded"
        loaded = await client.get(f"{c.url}/api/workflow/{name}")
        assert loaded.status_code == 200 and loaded.json()["workflow"]["3"]["class_type"] == "KSampler"
        again = await client.post(f"{c.url}/api/workflow/upload", files=files, data={"name": name})
        assert again.status_code == 409, again.text
        assert (await client.delete(f"{b.url}/api/workflow/{name}")).status_code == 200
        assert (await client.get(f"{a.url}/api/workflow/{name}")).status_code == 404

        # An uploaded input reaches every backend from whichever replica took it.
        image = io.BytesIO()
        Image.new("RGB", (4, 4), (200, 30, random.randrange(256))).save(image, "PNG")
        png = image.getvalue()
        uploaded = await client.post(f"{b.url}/api/upload/image", files={"image": ("in.png", png, "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        stored_name = uploaded.json()["name"]
        assert sorted(uploaded.json()["backends"]) == ["comfyui-1", "comfyui-2"]
        for emulator in stack.emulators:
            view = await client.get(f"{emulator.url}/view", params={"filename": stored_name, "type": "input"})
            assert view.content == png

        # A synchronous submit answered with the outputs inline, by a replica that did not run the task.
        for replica in stack.replicas:
            answer = await client.post(
                f"{replica.url}/api/workflow/submit",
                params={"wait": "true", "output_format": "base64"},
                json={"workflow": sampler_workflow(steps=3)},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["status"] == "completed" and body["outputs"][0]["data"], body


async def test_idempotency_key_gives_one_task_across_replicas(stack: ClusterStack) -> None:
    a, b, c = stack.replicas
    async with httpx.AsyncClient() as client:
        workflow = sampler_workflow(steps=2)
        headers = {"Idempotency-Key": f"key-{random.randrange(1 << 40)}"}
        first = await client.post(f"{a.url}/api/workflow/submit", json={"workflow": workflow}, headers=headers)
        again = await client.post(f"{b.url}/api/workflow/submit", json={"workflow": workflow}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json()["task_id"] == again.json()["task_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        bad = await client.post(
            f"{c.url}/api/workflow/submit", json={"workflow": {}}, headers={"Idempotency-Key": "k2"}
        )
        assert bad.status_code == 422
        retried = await client.post(
            f"{c.url}/api/workflow/submit", json={"workflow": workflow}, headers={"Idempotency-Key": "k2"}
        )
        assert retried.status_code == 200, "a refused request does not burn its key"


async def test_a_per_request_partner_key_runs_only_where_it_was_given(stack: ClusterStack) -> None:
    """api_key_comfy_org is never stored (so never in Redis): the replica that took the request posts the task
    itself, on a backend it owns, or refuses it with a 503 that says why (3 replicas, 2 backends: one owns none)."""
    secret = "comfy-org-key-0123456789"
    async with httpx.AsyncClient() as client:
        outcomes = []
        for replica in stack.replicas:
            owned = (await client.get(f"{replica.url}/api/health")).json()["cluster"]["owned"]
            body = {"workflow": sampler_workflow(steps=2), "api_key_comfy_org": secret}
            answer = await client.post(f"{replica.url}/api/workflow/submit", json=body, timeout=30)
            assert secret not in answer.text
            if owned:
                assert answer.status_code == 200, answer.text
                task = (await client.get(f"{replica.url}/api/task/{answer.json()['task_id']}")).json()
                assert task["backend"] in owned, task
                outcomes.append(answer.json()["task_id"])
            else:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "service_busy" and answer.headers["Retry-After"]
                assert "api_key_comfy_org" in answer.json()["message"]
                outcomes.append(None)
        assert None in outcomes and len([o for o in outcomes if o]) >= 1
        for task_id in filter(None, outcomes):
            for _ in range(240):
                final = await client.get(f"{stack.replicas[0].url}/api/task/{task_id}", timeout=10)
                if final.json()["status"] in FINAL:
                    break
                await asyncio.sleep(0.25)
            assert final.json()["status"] == "completed", final.text
            assert secret not in final.text


async def test_an_output_not_in_the_store_yet_is_served_from_its_backend(stack: ClusterStack) -> None:
    """Outputs reach the store behind their task's completion. Until one is there (or when the replica that
    downloaded it died first), any replica serves it from the backend's own output folder, then stores it."""
    from cluster.objects import ObjectStore
    from config import Settings

    env = stack.s3.env()
    store = ObjectStore(
        env["COMFYUI_STORAGE_URL"],
        Settings(
            storage_endpoint=env["COMFYUI_STORAGE_ENDPOINT"],
            storage_key_id=env["COMFYUI_STORAGE_KEY_ID"],
            storage_secret=env["COMFYUI_STORAGE_SECRET"],
        ),
    )

    async def stored(key: str) -> bool:
        for _ in range(250):
            if await store.exists(key):
                return True
            await asyncio.sleep(0.02)
        return False

    a = stack.replicas[0]
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 4242}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "behind"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    async with httpx.AsyncClient(timeout=30) as client, Listener(f"{a.ws_url}/ws") as on_a:
        task = await submit(client, a.url, workflow)
        final = await on_a.final(task["task_id"])
        assert final["status"] == "completed", final
        downloader = stack.owners()[final["backend"]]
        others = [r for r in stack.replicas if r.name != downloader]
        image = next(o for o in final["outputs"] if o["kind"] == "image")
        text = next(o for o in final["outputs"] if o["kind"] == "text")
        original = (await client.get(f"{owner_url(stack, final['backend'])}/view", params=image["comfyui"])).content
        for output, expected in ((image, original), (text, text["text"].encode())):
            key = f"output/{output['filename']}"
            assert await stored(key), f"{key}: not stored by the downloading replica after the completion"
            await store.delete(key)  # as if the downloader had died before storing it
            assert not await store.exists(key)
            served = await client.get(f"{others[0].url}{output['url']}")  # from the backend
            assert served.status_code == 200, served.text
            assert served.content == expected
            assert await stored(key), f"{key}: not stored again by the replica that fetched it"
            assert await store.get_bytes(key) == expected
            assert (await client.get(f"{others[1].url}{output['url']}")).content == expected
        missing = await client.get(f"{others[0].url}/api/image/{task['task_id'][:8]}_nothing_of_that_name.png")
        assert missing.status_code == 404


async def test_a_v2_idempotency_key_is_single_use_across_replicas(stack: ClusterStack) -> None:
    """The v2 rule (single use, reject on duplicate) whichever replica a retry reaches: one job, not two; a
    request refused before any job existed frees the key on every replica."""
    a, b, c = stack.replicas
    key = f"v2-{random.randrange(1 << 40)}"
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"workflow": sampler_workflow(steps=2)}
        first = await client.post(f"{a.url}/api/v2/jobs", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201, first.text
        again = await client.post(f"{b.url}/api/v2/jobs", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 422 and again.json()["error"]["code"] == "idempotency_key_reuse", again.text
        jobs = (await client.get(f"{c.url}/api/v2/jobs", params={"limit": 100})).json()
        assert first.json()["id"] in [job["id"] for job in jobs["jobs"]]
        refused_key = f"v2-refused-{random.randrange(1 << 40)}"
        refused = await client.post(
            f"{a.url}/api/v2/jobs", json={"workflow": {}}, headers={"Idempotency-Key": refused_key}
        )
        assert 400 <= refused.status_code < 500, refused.text
        assert refused.json()["error"]["code"] != "idempotency_key_reuse", refused.text
        retried = await client.post(f"{c.url}/api/v2/jobs", json=body, headers={"Idempotency-Key": refused_key})
        assert retried.status_code == 201, retried.text
        upload_key = f"v2-upload-{random.randrange(1 << 40)}"
        files = {"file": ("a.txt", b"hello", "text/plain")}
        data = {"content_type": "text/plain", "file_path": "a.txt"}
        up = await client.post(
            f"{b.url}/api/v2/assets", files=files, data=data, headers={"Idempotency-Key": upload_key}
        )
        assert up.status_code in (200, 201), up.text
        up_again = await client.post(
            f"{c.url}/api/v2/assets", files=files, data=data, headers={"Idempotency-Key": upload_key}
        )
        assert up_again.status_code == 422 and up_again.json()["error"]["code"] == "idempotency_key_reuse", (
            up_again.text
        )
