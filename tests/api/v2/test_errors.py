"""Every error code ComfyGate's v2 API can produce, in the envelope, raised by the SDK as its typed class."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from comfy_sdk import (
    BlobNotFound,
    Comfy,
    ComfyError,
    HashMismatch,
    InvalidWorkflow,
    MissingAsset,
    QueueFull,
    Unauthorized,
    Workflow,
    WorkflowFormatUi,
)
from comfy_sdk.exceptions import translating

from tests.api.v2.conftest import V2, conform_error, png
from tests.protocol import load_workflow, sd_workflow

KEY = "v2-test-key-0123456789"


def test_unauthorized_without_the_key_and_fine_with_it(v2_factory: Any) -> None:
    v2 = v2_factory(api_keys=[KEY])
    conform_error(v2.http.get("/api/v2/jobs"), 401, "unauthorized")
    assert v2.http.get("/api/v2/health").status_code == 200  # open, like /api/health
    with Comfy() as client, pytest.raises(Unauthorized):
        client.submit(Workflow(load_workflow("trivial_save.json")))
    with Comfy(api_key="wrong") as client, pytest.raises(Unauthorized):
        client.jobs.get("x")
    with Comfy(api_key=KEY) as client:
        job = client.run(Workflow(load_workflow("trivial_save.json")), timeout=15)
        assert job.status == "succeeded" and job.outputs[0].to_bytes().startswith(b"\x89PNG")
        asset = client.assets.from_bytes(png(), filename="k.png")
        asset.commit()  # HEAD, multipart upload: the bearer goes on every call


def test_invalid_workflow_keeps_comfyuis_node_errors(v2: V2) -> None:
    with Comfy() as client, pytest.raises(InvalidWorkflow) as raised:
        client.submit(Workflow(load_workflow("invalid_bad_value.json")))
    assert raised.value.code == "invalid_workflow" and raised.value.http_status == 422
    node_errors = raised.value.details["node_errors"]
    assert set(node_errors) >= {"2"} and node_errors["2"]["errors"][0]["type"] == "value_not_in_list"
    bad_class = load_workflow("trivial_save.json")
    bad_class["2"]["class_type"] = "NoSuchNode"
    error = conform_error(v2.submit(bad_class), 422, "invalid_workflow")
    assert "NoSuchNode" in error["message"]
    conform_error(v2.submit({}), 422, "invalid_workflow")
    conform_error(v2.http.post("/api/v2/jobs", json={"workflow": "text"}), 422, "invalid_workflow")


def test_ui_workflows_are_refused_as_the_contract_says(v2: V2) -> None:
    ui = load_workflow("sd_txt2img_ui.json")
    ui.pop("last_node_id", None)  # past the SDK's own local check: the server must say it
    with Comfy() as client, pytest.raises(WorkflowFormatUi) as raised:
        client.submit(Workflow(ui))
    assert raised.value.code == "workflow_format_ui"


def test_ui_workflows_convert_when_the_extension_is_on(v2_factory: Any) -> None:
    v2 = v2_factory(v2_convert_ui_workflows=True)
    response = v2.submit(load_workflow("sd_txt2img_ui.json"))
    assert response.status_code == 201, response.text
    assert v2.wait(response.json()["id"])["status"] == "succeeded"


def test_missing_asset(v2: V2) -> None:
    workflow = load_workflow("load_scale_blur_save.json")
    workflow["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": "no-such-asset"}}
    with Comfy() as client, pytest.raises(MissingAsset) as raised:
        client.submit(Workflow(workflow))
    assert raised.value.details["missing"][0]["id"] == "no-such-asset"
    workflow["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {}}
    conform_error(v2.submit(workflow), 422, "missing_asset")


def test_hash_mismatch_and_blob_not_found(v2: V2) -> None:
    import io

    with Comfy() as client:
        with pytest.raises(HashMismatch), translating():
            client._low.post_assets(io.BytesIO(png()), "image/png", "x.png", expected_hash="blake3:" + "0" * 64)
        with pytest.raises(BlobNotFound):
            with translating():
                client._low.asset_from_hash("blake3:" + "1" * 64)


def test_queue_full_is_429_with_retry_after_and_the_sdk_retries_it(v2_factory: Any) -> None:
    v2 = v2_factory(max_backend_queue=1, max_pending_tasks=1)
    v2.emulator.set_delays(step_delay=0.05)
    running = v2.submit(sd_workflow(steps=30)).json()  # on the backend
    held = v2.submit(sd_workflow(steps=1, seed=7)).json()  # in ComfyGate's queue
    assert held["status"] == "queued"
    refused = v2.submit(load_workflow("trivial_save.json"), headers={"Idempotency-Key": "full-1"})
    conform_error(refused, 429, "queue_full")
    assert int(refused.headers["retry-after"]) >= 1
    with Comfy() as client:
        with pytest.raises(QueueFull) as raised, translating():
            client._low.post_jobs(load_workflow("trivial_save.json"))
        assert raised.value.retry_after >= 1
        # The SDK retries a 429 with the same key: the refusal released it, so the retry is accepted.
        threading.Timer(0.5, lambda: v2.http.post(f"/api/v2/jobs/{running['id']}/cancel")).start()
        started = time.monotonic()
        job = client.submit(Workflow(load_workflow("trivial_save.json")), idempotency_key="full-1")
        assert time.monotonic() - started >= 0.5
        assert job.wait(timeout=30).status == "succeeded"


def test_too_many_unfinished_jobs_is_429_queue_full_too(v2_factory: Any) -> None:
    v2 = v2_factory(max_unfinished_tasks=1)
    v2.emulator.set_delays(step_delay=0.05)
    running = v2.submit(sd_workflow(steps=30)).json()
    refused = v2.submit(load_workflow("trivial_save.json"))
    conform_error(refused, 429, "queue_full")
    assert int(refused.headers["retry-after"]) >= 1 and "COMFYUI_MAX_UNFINISHED_TASKS" in refused.text
    assert v2.http.post(f"/api/v2/jobs/{running['id']}/cancel").status_code < 300


def test_error_envelope_on_requests_refused_before_any_route(v2_factory: Any) -> None:
    v2 = v2_factory(max_request_bytes=4096)
    conform_error(v2.http.post("/api/v2/jobs", content=b"x" * 5000), 413, "payload_too_large")
    conform_error(
        v2.http.post("/api/v2/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        "invalid_request",
    )
    deep = "[" * 200 + "]" * 200
    error = conform_error(
        v2.http.post("/api/v2/jobs", content=deep, headers={"content-type": "application/json"}), 422, "invalid_request"
    )
    assert error["message"]
    conform_error(v2.http.get("/api/v2/no-such-route"), 404, "not_found")
    conform_error(v2.http.delete("/api/v2/jobs"), 405, "method_not_allowed")
    # ComfyGate's own routes keep their own shape.
    assert v2.http.get("/api/task/nope").json()["error"] == "not_found"


def test_list_errors_reach_the_sdk_with_their_codes(v2: V2) -> None:
    with Comfy() as client:
        with pytest.raises(ComfyError) as raised:
            list(client.list_jobs(metadata={f"k{i}": "v" for i in range(4)}))
        assert raised.value.code == "invalid_metadata_filter"
        with pytest.raises(ComfyError) as raised, translating():
            client._low.list_jobs(cursor="not-a-cursor")
        assert raised.value.code == "invalid_cursor"
    assert httpx.get(f"{v2.url}/api/v2/health").json()["status"] == "healthy"
