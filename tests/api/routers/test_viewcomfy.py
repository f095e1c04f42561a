"""ComfyGate's ViewComfy-compatible endpoint, driven the way ViewComfy's published clients drive it.

``ViewComfyClient`` speaks exactly the published Python client's encoding (urlencoded without files,
multipart with files, SSE read line by line); raw httpx calls check the bytes on the wire.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from backends.viewcomfy.client import ViewComfyClient, decode_outputs
from backends.viewcomfy.protocol import RESULT_KEYS, PromptResult
from backends.viewcomfy.sse import SSEParser
from core.errors import ViewComfyError
from tests.conftest import Gate
from tests.protocol import load_workflow

CLIENT_ID = "vc-id"
CLIENT_SECRET = "vc-secret"
HEADERS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}


@pytest.fixture
def vgate(emulator: Any, gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory(
        [emulator.url],
        viewcomfy_server_client_id=CLIENT_ID,
        viewcomfy_server_client_secret=CLIENT_SECRET,
        viewcomfy_keepalive=0.1,
    )


def endpoint(gate: Gate, name: str | None = None) -> str:
    return f"{gate.url}/api/viewcomfy/infer" + (f"/{name}" if name else "")


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def sse_events(response: httpx.Response) -> tuple[list[tuple[str, str]], list[str]]:
    """(events, raw lines), parsed line by line like the published client."""
    lines = list(response.iter_lines())
    parser = SSEParser()
    events = [(e.event, e.data) for e in parser.feed("\n".join(lines) + "\n")]
    return events, lines


async def test_published_client_json_and_sse(vgate: Gate, tmp_path: Path) -> None:
    wf = load_workflow("invert_save.json")
    async with ViewComfyClient(endpoint(vgate), CLIENT_ID, CLIENT_SECRET) as client:
        result = await client.infer({"1-inputs-color": 255, "_1-node-class_type-info": "EmptyImage"}, workflow_api=wf)
        assert result.status == "success" and result.completed and result.prompt["1"]["inputs"]["color"] == 255
        [output] = result.outputs
        assert output.filename.startswith("invert_") and output.content_type == "image/png"
        [path] = decode_outputs(result, tmp_path)
        with Image.open(path) as img:
            assert img.size == (64, 64) and img.getpixel((0, 0))[:3] == (255, 255, 0)  # 0x0000FF inverted

        logs: list[str] = []
        streamed = await client.infer_with_logs({"1-inputs-color": 1}, workflow_api=wf, on_log=logs.append)
        assert streamed.status == "success" and len(streamed.outputs) == 1
        assert logs[0].startswith("ComfyGate task ") and "queued" in logs[0], logs
    tasks = vgate.client.get("/api/tasks").json()["tasks"]
    assert len(tasks) == 2 and all(t["source"] == "viewcomfy" and t["status"] == "completed" for t in tasks)


def test_raw_urlencoded_result_has_exact_keys(vgate: Gate) -> None:
    wf = load_workflow("invert_save.json")
    fields = {"params": json.dumps({"1-inputs-width": 32}), "workflow_api": json.dumps(wf), "logs": "false"}
    response = httpx.post(endpoint(vgate), data=fields, headers=HEADERS, timeout=20)
    assert response.status_code == 201, response.text
    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    body = response.json()
    assert tuple(body) == RESULT_KEYS
    result = PromptResult(**body)  # what the published client does: an extra key would raise
    data = base64.b64decode(result.outputs[0].data, validate=True)
    assert len(data) == result.outputs[0].size
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (32, 64)


def test_multipart_file_is_uploaded_and_set(vgate: Gate) -> None:
    wf = load_workflow("load_scale_blur_save.json")
    fields = {"params": json.dumps({"2-inputs-width": 100}), "workflow_api": json.dumps(wf), "logs": "false"}
    response = httpx.post(
        endpoint(vgate),
        data=fields,
        files={"1-inputs-image": ("my photo.png", png(), "image/png")},
        headers=HEADERS,
        timeout=20,
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["status"] == "success", result
    assert result["prompt"]["1"]["inputs"]["image"] == "my photo.png"
    [saved] = [o for o in result["outputs"] if o["filename"].startswith("scaled_")]
    with Image.open(io.BytesIO(base64.b64decode(saved["data"]))) as img:
        assert img.size == (100, 96)


def test_sse_single_line_data_keepalives_and_one_final_result(vgate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.05)
    wf = load_workflow("sd_txt2img_api.json")
    fields = {"params": json.dumps({"3-inputs-steps": 6}), "workflow_api": json.dumps(wf), "logs": "true"}
    with httpx.stream("POST", endpoint(vgate), data=fields, headers=HEADERS, timeout=20) as response:
        assert response.status_code == 201
        assert response.headers["content-type"].startswith("text/event-stream")
        events, lines = sse_events(response)
    assert ": keepalive" in lines
    assert all(not line or line.startswith(("event: ", "data: ", ":")) for line in lines)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "prompt_result" and kinds.count("prompt_result") == 1
    assert set(kinds[:-1]) == {"log_message"}
    logs = [data for kind, data in events if kind == "log_message"]
    assert "KSampler (node 3): step 6/6" in logs, logs
    assert all(a != b for a, b in zip(logs, logs[1:], strict=False)), logs  # no line repeated back to back
    result = PromptResult(**json.loads(events[-1][1]))
    assert result.status == "success" and result.prompt["3"]["inputs"]["steps"] == 6


def test_saved_and_default_workflows_and_seed_rule(emulator: Any, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([emulator.url], viewcomfy_default_workflow="invert_save")
    gate.settings.workflows_dir.mkdir(parents=True, exist_ok=True)
    (gate.settings.workflows_dir / "invert_save.json").write_text(json.dumps(load_workflow("invert_save.json")))
    (gate.settings.workflows_dir / "sd.json").write_text(json.dumps(load_workflow("sd_txt2img_api.json")))
    fields = {"params": json.dumps({"3-inputs-steps": 2, "6-inputs-text": "a cat"}), "workflow_api": "", "logs": ""}
    named = httpx.post(endpoint(gate, "sd"), data=fields, timeout=20)  # no credentials configured: none checked
    assert named.status_code == 201 and named.json()["prompt"]["6"]["inputs"]["text"] == "a cat"
    default = httpx.post(endpoint(gate), data={"params": "{}", "workflow_api": ""}, timeout=20)
    assert default.status_code == 201, default.text
    assert default.json()["prompt"]["3"]["class_type"] == "SaveImage"
    seeded = [httpx.post(endpoint(gate, "sd"), data={"params": "{}"}, timeout=20).json() for _ in range(2)]
    seeds = [r["prompt"]["3"]["inputs"]["seed"] for r in seeded]
    assert seeds[0] != seeds[1] and all(r["status"] == "success" for r in seeded)
    tasks = gate.client.get("/api/tasks").json()["tasks"]
    assert {t["workflow_name"] for t in tasks} == {"sd", "invert_save"}


def test_errors_are_json(vgate: Gate) -> None:
    wf = json.dumps(load_workflow("invert_save.json"))
    wrong = httpx.post(
        endpoint(vgate), data={"params": "{}", "workflow_api": wf}, headers={**HEADERS, "client_secret": "x"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    missing = httpx.post(endpoint(vgate), data={"params": "{}", "workflow_api": wf})
    assert missing.status_code == 401

    no_workflow = httpx.post(endpoint(vgate), data={"params": "{}", "workflow_api": ""}, headers=HEADERS)
    assert no_workflow.status_code == 400
    message = no_workflow.json()["message"]
    assert "workflow_api" in message and "/api/viewcomfy/infer/<saved" in message and "DEFAULT_WORKFLOW" in message
    unknown = httpx.post(endpoint(vgate, "nope"), data={"params": "{}"}, headers=HEADERS)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"

    bad_param = httpx.post(
        endpoint(vgate), data={"params": json.dumps({"1-inputs-width": "wide"}), "workflow_api": wf}, headers=HEADERS
    )
    assert bad_param.status_code == 422 and bad_param.json()["problems"][0]["node_id"] == "1"
    bad_json = httpx.post(endpoint(vgate), data={"params": "{nope", "workflow_api": wf}, headers=HEADERS)
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_request"
    bad_file_key = httpx.post(
        endpoint(vgate), data={"workflow_api": wf}, files={"image": ("a.png", png())}, headers=HEADERS
    )
    assert bad_file_key.status_code == 400 and "52-inputs-image" in bad_file_key.json()["message"]
    rejected = httpx.post(
        endpoint(vgate), data={"workflow_api": json.dumps(load_workflow("invalid_bad_value.json"))}, headers=HEADERS
    )
    assert rejected.status_code == 422 and rejected.json()["error"] == "prompt_rejected"
    assert vgate.client.get("/api/tasks").json()["total"] == 0


async def test_published_client_gets_401_as_an_error_with_json_body(vgate: Gate) -> None:
    wf = load_workflow("invert_save.json")
    async with ViewComfyClient(endpoint(vgate), CLIENT_ID, "wrong") as client:
        with pytest.raises(ViewComfyError) as denied:
            await client.infer({"1-inputs-width": 8}, workflow_api=wf)
    assert denied.value.status == 401 and denied.value.body["error"] == "unauthorized"


def test_runtime_error_is_error_event_then_error_result(vgate: Gate) -> None:
    wf = json.dumps(load_workflow("runtime_error_save_outside.json"))
    with httpx.stream(
        "POST", endpoint(vgate), data={"params": "{}", "workflow_api": wf, "logs": "true"}, headers=HEADERS, timeout=20
    ) as response:
        assert response.status_code == 201
        events, _ = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["error", "prompt_result"], kinds
    assert "SaveImage" in events[-2][1] and "failed" in events[-2][1]
    result = PromptResult(**json.loads(events[-1][1]))
    assert result.status == "error" and not result.completed and result.outputs == []

    plain = httpx.post(endpoint(vgate), data={"workflow_api": wf, "logs": "false"}, headers=HEADERS, timeout=20)
    assert plain.status_code == 201 and plain.json()["status"] == "error"
    statuses = {t["status"] for t in vgate.client.get("/api/tasks").json()["tasks"]}
    assert statuses == {"failed"}
