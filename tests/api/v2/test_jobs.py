"""Jobs through the real comfy-sdk (sync and async) and raw HTTP, against ComfyGate + the emulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from comfy_sdk import AsyncComfy, Comfy, IdempotencyKeyReuse, NotFound, Workflow
from PIL import Image

from tests.api.v2.conftest import V2, conform_error, conform_job, load_image_workflow, png
from tests.protocol import load_workflow, sd_workflow


@pytest.mark.both_generations
def test_sdk_run_with_an_asset_input_and_outputs_downloaded(v2: V2, tmp_path: Path) -> None:
    with Comfy() as client:
        workflow = Workflow(load_image_workflow())
        workflow.set_input("1", "image", client.assets.from_bytes(png(), filename="red.png"))
        job = client.run(workflow, timeout=30)
        assert job.status == "succeeded"
        saved = job.get_outputs("4")
        assert len(saved) == 1 and saved[0].type == "image" and saved[0].content_type == "image/png"
        path = saved[0].to_file(tmp_path / "out.png")
        with Image.open(path) as img:
            assert img.size == (128, 96)  # ImageScale's size: the uploaded image really went through
        assert path.stat().st_size == saved[0].size_bytes
        # The workflow that ran has the asset replaced by the name it was uploaded under.
        ran = job.get_workflow()
        assert ran.format == "api" and ran.graph["1"]["inputs"]["image"].startswith("v2_")
    body = v2.job(job.id)
    assert body["status"] == "succeeded" and body["completed_at"] and body["started_at"]
    assert body["progress"]["value"] == 1.0
    # An ordinary ComfyGate task: in /api/tasks, with the same id.
    task = v2.gate.task(job.id)
    assert task["status"] == "completed" and task["source"] == "api_v2"
    # The emulator (ComfyUI) received the file under that content-addressed name.
    uploaded = v2.emulator.emulator.base_dir / "input" / ran.graph["1"]["inputs"]["image"]
    assert uploaded.read_bytes() == png()


def test_async_sdk_run_with_an_asset_input(v2: V2, tmp_path: Path) -> None:
    async def scenario() -> tuple[str, list[bytes]]:
        async with AsyncComfy() as client:
            workflow = Workflow(load_image_workflow())
            workflow.set_input("1", "image", client.assets.from_bytes(png((10, 200, 10)), filename="green.png"))
            job = await client.run(workflow, timeout=30)
            files = [await out.to_file(tmp_path / f"{i}.bin") for i, out in enumerate(job.outputs)]
            return job.status, [f.read_bytes() for f in files]

    status, contents = asyncio.run(scenario())
    assert status == "succeeded"
    assert any(data.startswith(b"\x89PNG") for data in contents)


def test_same_bytes_are_uploaded_once_and_reused(v2: V2) -> None:
    data = png((1, 2, 3))
    with Comfy() as client:
        first = client.assets.from_bytes(data, filename="a.png")
        first.commit()
        assert first.created_new is True
        second = client.assets.from_bytes(data, filename="a.png")
        second.commit()  # HEAD by-hash → 200 → from-hash: no bytes sent again
        assert second.id == first.id and second.hash == first.hash


def test_submit_answers_201_with_every_field_of_the_contract(v2: V2) -> None:
    response = v2.submit(load_workflow("trivial_save.json"))
    assert response.status_code == 201, response.text
    job = conform_job(response.json())
    assert job.status.value in ("queued", "running", "succeeded")
    assert str(job.urls.self).startswith(v2.url) and job.urls.events.endswith("/events")
    final = v2.wait(job.id)
    assert final["status"] == "succeeded" and len(final["outputs"]) == 1
    out = final["outputs"][0]
    assert out["size_bytes"] > 0 and out["job_id"] == job.id
    assert "logs" not in final["urls"]  # no log capture: no link, and the route answers 204 as the contract asks
    assert v2.http.get(f"/api/v2/jobs/{job.id}/logs").status_code == 204
    content = v2.http.get(out["url"])
    assert content.status_code == 200 and len(content.content) == out["size_bytes"]


def test_a_job_that_exists_is_never_expired(v2: V2) -> None:
    """The reference proxy reports a fast job as expired between two reads; ComfyGate reads the task."""
    seen = set()
    for _ in range(30):
        job = v2.submit(load_workflow("trivial_save.json")).json()
        seen.add(v2.job(job["id"])["status"])  # at once, while it may be finishing
        seen.add(v2.wait(job["id"])["status"])
    assert "expired" not in seen and "succeeded" in seen


def test_unknown_job_is_not_found_for_the_sdk(v2: V2) -> None:
    with Comfy() as client, pytest.raises(NotFound):
        client.jobs.get("0123456789abcdef0123456789abcdef")
    conform_error(v2.http.get("/api/v2/jobs/nope"), 404, "not_found")
    conform_error(v2.http.post("/api/v2/jobs/nope/cancel"), 404, "not_found")
    conform_error(v2.http.get("/api/v2/jobs/nope/workflow"), 404, "not_found")
    conform_error(v2.http.get("/api/v2/jobs/nope/logs"), 404, "not_found")


def _long_job(v2: V2, steps: int = 40) -> dict[str, Any]:
    response = v2.submit(sd_workflow(steps=steps, seed=int(time.time() * 1000) % 100000))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.both_generations
def test_cancel_a_running_job_with_the_sdk(v2: V2) -> None:
    v2.emulator.set_delays(step_delay=0.05)
    with Comfy() as client:
        job = client.jobs.get(_long_job(v2)["id"])
        v2.wait(job.id, {"running"})
        job.cancel()
        assert job.status in ("canceling", "canceled")
        job.wait(timeout=15)
        assert job.status == "canceled"
        assert job.error is not None and job.error.code == "canceled"
    history = httpx.get(f"{v2.emulator.url}/history").json()
    prompt = v2.gate.task(job.id)["prompt_id"]
    messages = [m[0] for m in history[prompt]["status"]["messages"]]
    assert "execution_interrupted" in messages  # ComfyUI really stopped it


@pytest.mark.both_generations
def test_cancel_a_queued_job_removes_it_from_comfyui(v2: V2) -> None:
    v2.emulator.set_delays(step_delay=0.05)
    blocker = _long_job(v2)
    v2.wait(blocker["id"], {"running"})
    with Comfy() as client:
        queued = client.jobs.get(_long_job(v2)["id"])
        assert queued.status == "queued"
        queued.cancel()
        assert queued.status == "canceled"
    prompt = v2.gate.task(queued.id)["prompt_id"]
    queue = httpx.get(f"{v2.emulator.url}/queue").json()
    assert prompt not in {item[1] for item in queue["queue_pending"] + queue["queue_running"]}
    v2.http.post(f"/api/v2/jobs/{blocker['id']}/cancel")
    assert v2.wait(blocker["id"])["status"] == "canceled"
    assert prompt not in httpx.get(f"{v2.emulator.url}/history").json()  # it never ran


@pytest.mark.both_generations
def test_a_v2_job_is_interruptible_from_comfygates_own_api(v2: V2) -> None:
    v2.emulator.set_delays(step_delay=0.05)
    job = _long_job(v2)
    v2.wait(job["id"], {"running"})
    assert v2.gate.client.post(f"/api/interrupt/{job['id']}").status_code == 200
    assert v2.wait(job["id"])["status"] == "canceled"


@pytest.mark.both_generations
def test_cancel_of_a_finished_job_returns_it_unchanged(v2: V2) -> None:
    job = v2.submit(load_workflow("trivial_save.json")).json()
    v2.wait(job["id"])
    response = v2.http.post(f"/api/v2/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert conform_job(response.json()).status.value == "succeeded"


def test_an_idempotency_key_is_single_use(v2: V2) -> None:
    with Comfy() as client:
        workflow = Workflow(load_workflow("trivial_save.json"))
        first = client.submit(workflow, idempotency_key="order-42")
        with pytest.raises(IdempotencyKeyReuse) as refused:
            client.submit(workflow, idempotency_key="order-42")
        assert refused.value.http_status == 422 and refused.value.idempotency_key == "order-42"
    assert [t["task_id"] for t in v2.tasks()] == [first.id]  # never a second job


def test_racing_submits_with_one_key_make_one_job(v2: V2) -> None:
    barrier = threading.Barrier(8)
    answers: list[int] = []

    def submit() -> None:
        with httpx.Client(base_url=v2.url, timeout=15) as client:
            barrier.wait()
            response = client.post(
                "/api/v2/jobs",
                json={"workflow": load_workflow("trivial_save.json")},
                headers={"Idempotency-Key": "race-1"},
            )
            answers.append(response.status_code)
            if response.status_code == 422:
                assert response.json()["error"]["code"] == "idempotency_key_reuse"

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] + [422] * 7
    assert len(v2.tasks()) == 1


def test_a_refused_submit_releases_its_key(v2: V2) -> None:
    bad = load_workflow("trivial_save.json")
    bad["2"]["class_type"] = "NoSuchNode"
    headers = {"Idempotency-Key": "retry-me"}
    conform_error(v2.submit(bad, headers=headers), 422, "invalid_workflow")
    assert v2.submit(load_workflow("trivial_save.json"), headers=headers).status_code == 201
    conform_error(v2.submit(load_workflow("trivial_save.json"), headers=headers), 422, "idempotency_key_reuse")


def test_list_filters_and_cursor_pages(v2: V2) -> None:
    ids = []
    for i in range(5):
        response = v2.submit(load_workflow("trivial_save.json"), metadata={"batch": "b1", "n": str(i)})
        ids.append(response.json()["id"])
    other = v2.submit(load_workflow("trivial_save.json"), metadata={"batch": "b2"}).json()["id"]
    for job_id in [*ids, other]:
        v2.wait(job_id)
    # Pages of 2, newest first, each job once.
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "metadata[batch]": "b1"}
        if cursor:
            params["cursor"] = cursor
        page = v2.http.get("/api/v2/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [item["id"] for item in page["jobs"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == list(reversed(ids))
    both = v2.http.get("/api/v2/jobs", params={"metadata[batch]": "b1", "metadata[n]": "3"}).json()["jobs"]
    assert [item["id"] for item in both] == [ids[3]] and both[0]["metadata"] == {"batch": "b1", "n": "3"}
    assert both[0]["create_time"] and both[0]["status"] == "succeeded"
    assert v2.http.get("/api/v2/jobs", params={"status": "queued,running"}).json()["jobs"] == []
    done = v2.http.get("/api/v2/jobs", params={"status": "succeeded"}).json()["jobs"]
    assert {item["id"] for item in done} == {*ids, other}
    conform_error(v2.http.get("/api/v2/jobs", params={"status": "sleeping"}), 400, "invalid_request")
    conform_error(v2.http.get("/api/v2/jobs", params={"limit": 0}), 400, "invalid_request")
    conform_error(v2.http.get("/api/v2/jobs", params={"cursor": "bogus"}), 400, "invalid_cursor")
    four = {f"metadata[k{i}]": "v" for i in range(4)}
    conform_error(v2.http.get("/api/v2/jobs", params=four), 400, "invalid_metadata_filter")
    # The SDK's own list, with its label filter.
    with Comfy() as client:
        assert [s.id for s in client.list_jobs(metadata={"batch": "b2"})] == [other]


def test_labels_are_checked_and_kept(v2: V2) -> None:
    with Comfy() as client:
        job = client.submit(Workflow(load_workflow("trivial_save.json")), metadata={"client": "acme"})
        assert job.metadata == {"client": "acme"}
    error = conform_error(
        v2.submit(load_workflow("trivial_save.json"), metadata={"bad key": "x"}), 422, "metadata_invalid"
    )
    assert "bad key" in error["message"]
    many = {f"k{i}": "v" for i in range(17)}
    assert (
        "17"
        in conform_error(v2.submit(load_workflow("trivial_save.json"), metadata=many), 422, "metadata_invalid")[
            "message"
        ]
    )


def test_a_partner_key_goes_to_comfyui_only_and_is_never_stored(v2: V2) -> None:
    secret = "partner-secret-0123456789"
    with Comfy() as client:
        job = client.run(Workflow(load_workflow("trivial_save.json")), api_key=secret, timeout=15)
        assert job.status == "succeeded"
    seen = [
        v2.http.get(f"/api/v2/jobs/{job.id}").text,
        v2.http.get(f"/api/v2/jobs/{job.id}/workflow").text,
        v2.http.get("/api/v2/jobs").text,
        v2.gate.client.get(f"/api/task/{job.id}").text,
        v2.gate.client.get("/api/tasks").text,
    ]
    assert all(secret not in text for text in seen)
    for stored in v2.gate.settings.data_dir.glob("*.sqlite3*"):
        assert secret.encode() not in stored.read_bytes(), stored
    refused = v2.submit(load_workflow("trivial_save.json"), extra_data={"api_key_comfy_org": 5})
    conform_error(refused, 400, "invalid_request")
    conform_error(v2.submit(load_workflow("trivial_save.json"), extra_data={"other": "x"}), 400, "invalid_request")


def test_a_poll_after_comfyui_finished_answers_with_the_outputs(v2: V2) -> None:
    """While ComfyGate fetches the outputs of a job ComfyUI has finished, a poll waits for them (a poll
    interval of the SDK later is what the job's outputs would otherwise cost)."""
    size = 40 * 1024 * 1024
    httpx.post(f"{v2.emulator.url}/emulator/extra_output", json={"filename": "big.bin", "size": size}, timeout=60)
    job = v2.submit(load_workflow("trivial_save.json")).json()
    prompt = v2.gate.task(job["id"])["prompt_id"]
    backend = v2.gate.server.app.state.services.manager.pool.comfyui["comfyui-1"]
    deadline = time.monotonic() + 15
    while prompt not in httpx.get(f"{v2.emulator.url}/history/{prompt}").json() or backend.running_prompt == prompt:
        assert time.monotonic() < deadline  # until ComfyUI is done and ComfyGate has heard it (its WebSocket)
        time.sleep(0.005)
    body = v2.job(job["id"])  # from here on never "running": the poll waits for the 40 MB output
    assert body["status"] == "succeeded", body["status"]
    assert any(out["size_bytes"] == size for out in body["outputs"])


def test_a_poll_of_a_short_job_holds_until_its_end(v2_factory: Any) -> None:
    """COMFYUI_V2_POLL_HOLD: the poll right after submit answers with the end of a job that ends within the
    hold (the SDK's run() then needs no second poll 0.5 s later); a long job's poll comes back after it."""
    v2 = v2_factory(v2_poll_hold=2.0)
    v2.emulator.set_delays(step_delay=0.02)
    job = v2.submit(sd_workflow(steps=5)).json()  # ~0.1 s
    assert v2.job(job["id"])["status"] == "succeeded"
    long = v2.submit(sd_workflow(steps=400, seed=3)).json()
    started = time.monotonic()
    assert v2.job(long["id"])["status"] in ("queued", "running")
    assert 1.5 < time.monotonic() - started < 6
    v2.http.post(f"/api/v2/jobs/{long['id']}/cancel")


def test_without_the_hold_a_poll_answers_at_once(v2_factory: Any) -> None:
    v2 = v2_factory(v2_poll_hold=0)
    v2.emulator.set_delays(step_delay=0.05)
    job = v2.submit(sd_workflow(steps=20)).json()
    started = time.monotonic()
    assert v2.job(job["id"])["status"] in ("queued", "running")
    assert time.monotonic() - started < 1.0
    v2.http.post(f"/api/v2/jobs/{job['id']}/cancel")


def test_a_v2_job_shows_on_comfygates_websocket_and_task_list(v2: V2) -> None:
    from websockets.sync.client import connect

    with connect(f"{v2.gate.ws_url}/ws") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        job = v2.submit(sd_workflow(steps=3), metadata={"via": "ws-test"}).json()
        statuses = []
        while True:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("type") == "task_update" and msg["task_id"] == job["id"]:
                statuses.append(msg["status"])
                if msg["status"] in ("completed", "failed", "interrupted", "timeout"):
                    break
    assert statuses[-1] == "completed" and "running" in statuses
    listed = {t["task_id"]: t for t in v2.tasks()}
    assert listed[job["id"]]["source"] == "api_v2" and listed[job["id"]]["v2_metadata"] == {"via": "ws-test"}
