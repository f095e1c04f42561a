"""core/ASSET references: resolved at submit, uploaded to whichever backend the pool picks at dispatch."""

from __future__ import annotations

import time
from typing import Any

import pytest

from api.v2 import asset_refs
from api.v2.asset_store import AssetRecord
from api.v2.errors import V2Error
from tests.api.v2.conftest import conform_job, load_image_workflow, png
from tests.conftest import wait_backends_up


def ref(asset_id: str) -> dict[str, Any]:
    return {"__type": "core/ASSET", "info": {"id": asset_id, "file_path": "p.png"}}


def test_resolve_replaces_every_reference_and_names_the_missing_ones() -> None:
    record = AssetRecord(
        id="a1",
        kind="upload",
        hash="blake3:" + "ab" * 32,
        size=3,
        content_type="image/png",
        file_path="photo.PNG",
        location="ab" * 32,
    )
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": ref("a1")}},
        "2": {"class_type": "X", "inputs": {}},
    }
    resolved, inputs = asset_refs.resolve(workflow, {"a1": record})
    assert resolved["1"]["inputs"]["image"] == "v2_" + "ab" * 16 + ".png"
    assert workflow["1"]["inputs"]["image"] == ref("a1")  # the caller's graph is not edited
    assert inputs == [{"name": "v2_" + "ab" * 16 + ".png", "asset": "a1", "kind": "upload", "location": "ab" * 32}]
    workflow["2"]["inputs"]["mask"] = {"__type": "core/ASSET", "info": "oops"}
    with pytest.raises(V2Error) as raised:
        asset_refs.resolve(workflow, {"a1": record})
    assert raised.value.code == "missing_asset" and raised.value.details["missing"][0]["node_id"] == "2"


def _upload(http: Any, data: bytes) -> str:
    response = http.post(
        "/api/v2/assets",
        data={"file_path": "in.png", "content_type": "image/png"},
        files={"file": ("in.png", data, "image/png")},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _wait(gate: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        job = gate.client.get(f"/api/v2/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return conform_job(job).model_dump(mode="json")
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_assets_go_to_the_backend_that_runs_the_job(emulators: Any, gate_factory: Any) -> None:
    one, two = emulators(2)
    gate = gate_factory([one.url, two.url])
    data = png((50, 60, 70))
    asset_id = _upload(gate.client, data)
    workflow = load_image_workflow()
    workflow["1"]["inputs"]["image"] = ref(asset_id)

    one.stop()  # only the second can take it
    job = gate.client.post("/api/v2/jobs", json={"workflow": workflow}).json()
    assert _wait(gate, job["id"])["status"] == "succeeded"
    name = gate.client.get(f"/api/v2/jobs/{job['id']}/workflow").json()["workflow"]["1"]["inputs"]["image"]
    assert (two.emulator.dirs.input / name).read_bytes() == data
    assert not (one.emulator.dirs.input / name).exists()

    two.stop()  # now neither: the job waits in ComfyGate's queue, assets not sent anywhere yet
    job = gate.client.post("/api/v2/jobs", json={"workflow": workflow}).json()
    assert job["status"] == "queued" and gate.task(job["id"])["status"] == "pending"
    one.start()  # the first comes back and gets the job, and the file with it
    wait_backends_up(gate, timeout=10)
    assert _wait(gate, job["id"])["status"] == "succeeded"
    assert gate.task(job["id"])["backend"] == "comfyui-1"
    assert (one.emulator.dirs.input / name).read_bytes() == data
