"""End to end: ComfyGate and the emulator on loopback, driven over HTTP and WebSocket."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import FINAL, Gate, written
from tests.protocol import load_workflow, sd_workflow

# The core flows, against the emulator as ComfyUI 0.3.64 and as a newer server (jobs API, atomic cancel).
pytestmark = pytest.mark.both_generations


def test_txt2img_end_to_end_with_params_and_outputs_on_disk(gate: Gate) -> None:
    response = gate.submit(sd_workflow(), params={"6.text": "a red fox", "3.seed": -1, "3-inputs-steps": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in {"queued", "running"}
    seed = body["params"]["3.seed"]
    assert isinstance(seed, int) and seed >= 0
    task = gate.wait(body["task_id"])
    assert task["status"] == "completed", task
    assert task["params"]["3.seed"] == seed
    assert task["progress"]["percent"] == 100.0
    [output] = task["outputs"]
    assert output["node_id"] == "9" and output["content_type"] == "image/png"
    path = gate.settings.outputs_dir / output["filename"]
    assert written(path) and path.stat().st_size == output["size"] > 0
    image = gate.client.get(output["url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == path.read_bytes()


def test_image_workflow_with_uploaded_input(gate: Gate) -> None:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    up = gate.client.post("/api/upload/image", files={"image": ("mw_upload.png", buf.getvalue(), "image/png")})
    assert up.status_code == 200, up.text
    assert (gate.settings.uploads_dir / up.json()["local_filename"]).is_file()
    wf = load_workflow("load_scale_blur_save.json")
    body = gate.submit(wf, params={"1.image": up.json()["name"]}).json()
    task = gate.wait(body["task_id"])
    assert task["status"] == "completed", task
    saved = [o for o in task["outputs"] if o["node_id"] == "4"]
    assert len(saved) == 1
    assert written(gate.settings.outputs_dir / saved[0]["filename"])
    with Image.open(gate.settings.outputs_dir / saved[0]["filename"]) as img:
        assert img.size == (128, 96)
    assert task["node_outputs"]["6"]["text"] == ["128"]


def test_ws_update_sequence_for_one_task(gate: Gate) -> None:
    with connect(f"{gate.ws_url}/ws") as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["backends"][0]["healthy"]
        task_id = gate.submit(sd_workflow(steps=3)).json()["task_id"]
        statuses: list[str] = []
        steps: list[Any] = []
        while True:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("type") != "task_update" or msg["task_id"] != task_id:
                continue
            statuses.append(msg["status"])
            if msg["progress"].get("node_class") == "KSampler" and "value" in msg["progress"]:
                steps.append(msg["progress"]["value"])
            if msg["status"] in FINAL:
                break
    compact = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert compact == ["queued", "running", "completed"], statuses
    assert steps == sorted(steps) and steps[-1] == 3 and len(set(steps)) >= 2, steps  # KSampler reports 1..steps
    assert msg["outputs"] and msg["progress"]["percent"] == 100.0


def test_ws_subscription_to_one_task_only(gate: Gate) -> None:
    first = gate.submit(load_workflow("invert_save.json")).json()["task_id"]
    gate.wait(first)
    wf = load_workflow("invert_save.json")
    wf["1"]["inputs"]["color"] = 123
    other = gate.submit(sd_workflow(steps=2)).json()["task_id"]
    with connect(f"{gate.ws_url}/ws?task_id={other}") as ws:
        seen: set[str] = set()
        gate.submit(wf)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("type") == "task_update":
                seen.add(msg["task_id"])
                if msg["task_id"] == other and msg["status"] in FINAL:
                    break
    assert seen == {other}


def test_cached_rerun_completes_with_outputs(gate: Gate) -> None:
    wf = load_workflow("invert_save.json")
    first = gate.wait(gate.submit(wf).json()["task_id"])
    second = gate.wait(gate.submit(wf).json()["task_id"])
    assert first["status"] == second["status"] == "completed"
    assert second["cached_nodes"] and len(second["outputs"]) == 1
    assert second["outputs"][0]["filename"] != first["outputs"][0]["filename"]


def test_runtime_error_names_the_node(gate: Gate) -> None:
    task = gate.wait(gate.submit(load_workflow("runtime_error_save_outside.json")).json()["task_id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "execution_error"
    assert task["error"]["node_id"] == "3" and task["error"]["node_type"] == "SaveImage"
    assert "SaveImage" in task["error"]["message"]


def test_validation_error_passes_node_errors_through(gate: Gate) -> None:
    response = gate.submit(load_workflow("invalid_bad_value.json"))
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "prompt_rejected"
    assert body["comfyui_error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) >= {"1", "2"} or set(body["node_errors"]) >= {"2"}
    for node in body["node_errors"].values():
        assert node["errors"] and "class_type" in node
    assert gate.client.get("/api/tasks").json()["total"] == 0


def test_interrupt_running_task(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    task_id = gate.submit(sd_workflow(steps=50)).json()["task_id"]
    gate.wait(task_id, {"running"})
    prompt_id = gate.task(task_id)["prompt_id"]
    response = gate.client.post(f"/api/interrupt/{prompt_id}")
    assert response.status_code == 200
    task = gate.wait(task_id, timeout=5)
    assert task["status"] == "interrupted"


def test_interrupt_queued_task_leaves_running_one(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.05)
    running = gate.submit(sd_workflow(steps=20)).json()["task_id"]
    queued = gate.submit(sd_workflow(steps=20, seed=7)).json()
    gate.wait(running, {"running"})
    assert gate.client.post(f"/api/interrupt/{queued['prompt_id']}").status_code == 200
    assert gate.wait(queued["task_id"], timeout=3)["status"] == "interrupted"
    assert gate.wait(running, timeout=10)["status"] == "completed"


def test_timeout_stops_the_task(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    body = gate.submit(sd_workflow(steps=50), timeout=0.5).json()
    task = gate.wait(body["task_id"], timeout=5)
    assert task["status"] == "timeout"
    assert "0.5" in task["error"]["message"]
    # the backend was told to stop: the next task runs promptly
    emulator.set_delays(step_delay=0.0)
    assert gate.wait(gate.submit(load_workflow("invert_save.json")).json()["task_id"])["status"] == "completed"


def test_emulator_restart_mid_task_fails_it_then_next_task_works(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    task_id = gate.submit(sd_workflow(steps=50)).json()["task_id"]
    gate.wait(task_id, {"running"})
    started = time.monotonic()
    emulator.restart()
    task = gate.wait(task_id, timeout=8)
    assert task["status"] == "failed"
    assert task["error"]["type"] in {"backend_restarted", "backend_unreachable"}
    assert "ComfyUI" in task["error"]["message"]
    assert time.monotonic() - started < 6
    emulator.set_delays(step_delay=0.0)
    deadline = time.monotonic() + 5
    while gate.client.get("/api/health").json()["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate.wait(gate.submit(load_workflow("invert_save.json")).json()["task_id"])["status"] == "completed"


def test_a_queued_task_the_server_lost_is_submitted_again(gate: Gate, emulator: Any) -> None:
    """After a restart the server knows neither task: the running one fails, the queued one runs again
    (a newer server says so at once through the jobs API; 0.3.64 after /queue and /history say nothing)."""
    emulator.set_delays(step_delay=0.1)
    running = gate.submit(sd_workflow(steps=50)).json()["task_id"]
    queued = gate.submit(sd_workflow(steps=2, seed=9)).json()["task_id"]
    gate.wait(running, {"running"})
    assert gate.task(queued)["status"] == "queued"
    emulator.restart()
    emulator.set_delays(step_delay=0.0)
    assert gate.wait(running, timeout=8)["status"] == "failed"
    again = gate.wait(queued, timeout=10)
    assert again["status"] == "completed", again
    assert again["attempts"] == 2 and "before it started" in again["requeued"]


def test_ws_drop_is_reconciled_from_history(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.05)
    task_id = gate.submit(sd_workflow(steps=6)).json()["task_id"]
    gate.wait(task_id, {"running"})
    emulator.drop_websockets()
    task = gate.wait(task_id, timeout=10)
    assert task["status"] == "completed", task
    assert task["outputs"] and written(gate.settings.outputs_dir / task["outputs"][0]["filename"])


def test_fifty_concurrent_submissions_all_complete(gate: Gate) -> None:
    def one(i: int) -> str:
        wf = load_workflow("invert_save.json")
        wf["1"]["inputs"]["color"] = i
        with httpx.Client(base_url=gate.url, timeout=20) as client:
            response = client.post("/api/workflow/submit", json={"workflow": wf})
            assert response.status_code == 200, response.text
            return response.json()["task_id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(one, range(50)))
    assert len(set(ids)) == 50
    results = [gate.wait(task_id, timeout=30) for task_id in ids]
    assert all(t["status"] == "completed" for t in results)
    listing = gate.client.get("/api/tasks", params={"status": "completed", "limit": 100}).json()
    assert listing["total"] == 50


def test_bad_input_gets_clear_errors(gate: Gate) -> None:
    c = gate.client
    not_json = c.post("/api/workflow/submit", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_json"
    missing = c.post("/api/workflow/submit", json={"params": {}})
    assert missing.status_code == 400 and "workflow" in missing.json()["message"]
    unknown_node = gate.submit(load_workflow("invert_save.json"), params={"99.text": "x"})
    assert unknown_node.status_code == 422 and "99" in unknown_node.json()["message"]
    unknown_input = gate.submit(load_workflow("invert_save.json"), params={"1.nope": 3})
    assert unknown_input.status_code == 422 and "nope" in unknown_input.json()["message"]
    wrong_type = gate.submit(load_workflow("invert_save.json"), params={"1.width": "wide"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["problems"][0]["node_id"] == "1"
    assert c.get("/api/task/does-not-exist").status_code == 404
    assert c.post("/api/interrupt/does-not-exist").status_code == 404
    assert c.get("/api/image/..%2Fetc%2Fpasswd").status_code in {400, 404}
    assert c.get("/api/tasks", params={"status": "bogus"}).status_code == 400


def test_comfyui_unreachable_is_503(gate_factory: Any, tmp_path: Path) -> None:
    from tests.servers import free_port

    gate = gate_factory([f"127.0.0.1:{free_port()}"], wait_up=False)
    response = gate.submit(load_workflow("invert_save.json"))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "reachable" in response.json()["message"]
    assert gate.client.get("/api/health").json()["status"] == "down"


def test_queue_health_system_and_nodes(gate: Gate, emulator: Any) -> None:
    c = gate.client
    assert c.get("/api/health").json()["status"] == "ok"
    info = c.get("/api/system/info").json()
    assert info["backends"][0]["system_stats"]["system"]["comfyui_version"]
    nodes = c.get("/api/nodes", params={"class": "KSampler"}).json()
    assert "KSampler" in nodes
    emulator.set_delays(step_delay=0.05)
    running = gate.submit(sd_workflow(steps=20)).json()["task_id"]
    waiting = gate.submit(sd_workflow(steps=20, seed=3)).json()["task_id"]
    gate.wait(running, {"running"})
    queue = c.get("/api/queue").json()
    backend = queue["backends"]["comfyui-1"]
    assert [i["task_id"] for i in backend["running"]] == [running]
    assert [i["task_id"] for i in backend["pending"]] == [waiting]
    cleared = c.post("/api/queue/clear").json()
    assert cleared["cleared"] == [waiting]
    assert gate.task(waiting)["status"] == "interrupted"
    assert gate.wait(running)["status"] == "completed"
    history = c.get("/api/history").json()
    assert {t["task_id"] for t in history["tasks"]} == {running, waiting}


def test_browser_origin_is_never_forwarded_to_comfyui(gate: Gate, emulator: Any) -> None:
    """ComfyUI (and the emulator) answer 403 to an Origin other than its own: ComfyGate must not pass on
    one it accepts itself (a loopback dev server's; a foreign one ComfyGate refuses: tests/security/test_origin)."""
    evil = {"Origin": "http://localhost:5173"}
    direct = httpx.get(f"{emulator.url}/queue", headers=evil)
    assert direct.status_code == 403  # the backend really does refuse it
    response = gate.client.post(
        "/api/workflow/submit", json={"workflow": load_workflow("invert_save.json")}, headers=evil
    )
    assert response.status_code == 200, response.text
    assert gate.wait(response.json()["task_id"])["status"] == "completed"
    assert gate.client.get("/api/queue", headers=evil).json()["backends"]["comfyui-1"]["reachable"]


def test_newer_features_are_used_only_when_detected(gate: Gate, emulator: Any) -> None:
    newer = emulator.emulator.newer
    [backend] = gate.client.get("/api/health").json()["backends"]
    assert backend["comfyui_version"] == ("0.36.0" if newer else "0.3.64")
    assert backend["features"] == {"jobs_api": newer}
    # Interrupting a queued task: the atomic cancel on a newer server, /queue delete on 0.3.64; either way
    # ComfyUI's queue no longer holds it and the running one finishes.
    emulator.set_delays(step_delay=0.05)
    running = gate.submit(sd_workflow(steps=10)).json()["task_id"]
    waiting = gate.submit(sd_workflow(steps=10, seed=5)).json()["task_id"]
    gate.wait(running, {"running"})
    assert gate.client.post(f"/api/interrupt/{waiting}").status_code == 200
    assert gate.wait(waiting)["status"] == "interrupted"
    pending = httpx.get(f"{emulator.url}/queue").json()["queue_pending"]
    assert pending == []
    if newer:
        job = httpx.get(f"{emulator.url}/api/jobs/{gate.task(waiting)['prompt_id']}").json()
        assert job["status"] == "cancelled"
    assert gate.wait(running)["status"] == "completed"


def _two_outputs_one_invalid() -> dict[str, Any]:
    """SaveImage 4 is fed a MASK: ComfyUI drops it (return_type_mismatch) and still runs SaveImage 2."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "good"}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "dropped"}},
    }


def test_partial_validation_is_a_warning_on_the_task_and_in_the_answer(gate: Gate) -> None:
    response = gate.submit(_two_outputs_one_invalid())
    assert response.status_code == 200, response.text
    [warning] = response.json()["warnings"]
    assert warning["node_id"] == "4" and warning["class_type"] == "SaveImage"
    assert warning["dependent_outputs"] == ["4"] and warning["errors"][0]["type"] == "return_type_mismatch"
    assert "node 4 (SaveImage)" in warning["message"]
    task = gate.wait(response.json()["task_id"])
    assert task["status"] == "completed"
    assert task["warnings"] == [warning]
    assert [o["node_id"] for o in task["outputs"]] == ["2"]


def test_partner_key_reaches_comfyui_and_nowhere_else(gate: Gate, emulator: Any) -> None:
    secret = "comfy-org-key-0123456789"
    with connect(f"{gate.ws_url}/ws") as ws:
        response = gate.client.post(
            "/api/workflow/submit",
            json={"workflow": load_workflow("invert_save.json"), "api_key_comfy_org": secret, "wait": True},
        )
        assert response.status_code == 200, response.text
        frames = []
        while True:
            try:
                frames.append(ws.recv(timeout=0.5))
            except TimeoutError:
                break
    assert response.json()["status"] == "completed"
    assert emulator.emulator.state.partner_keys_seen == ["api_key_comfy_org"]
    task_id = response.json()["task_id"]
    seen = [
        response.text,
        gate.client.get(f"/api/task/{task_id}").text,
        gate.client.get("/api/tasks").text,
        *map(str, frames),
    ]
    assert all(secret not in text for text in seen)
    assert secret not in httpx.get(f"{emulator.url}/history").text


def test_partner_key_set_per_backend(gate_factory: Any, emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
    gate = gate_factory([emulator.url], comfy_org_api_keys="backend-key-42")
    task = gate.submit(load_workflow("invert_save.json")).json()
    assert gate.wait(task["task_id"])["status"] == "completed"
    assert emulator.emulator.state.partner_keys_seen == ["api_key_comfy_org"]
    assert "backend-key-42" not in gate.client.get("/api/health").text
    assert "backend-key-42" not in caplog.text


def test_subgraph_workflow_with_colon_id_params_and_visible_progress(gate: Gate) -> None:
    from tests.workflow.test_format import _subgraph_workflow

    wf = _subgraph_workflow()
    described = gate.client.post("/api/workflow/params", json={"workflow": wf}).json()
    grouped = {p["key"]: p.get("group") for p in described["params"]}
    assert grouped["9:100:101.blur_radius"] == {"node_id": "9", "title": "Invert then blur"}
    with connect(f"{gate.ws_url}/ws") as ws:
        response = gate.submit(wf, params={"9:100:101.blur_radius": 3, "12:100:101-inputs-sigma": 0.7})
        assert response.status_code == 200, response.text
        task = gate.wait(response.json()["task_id"])
        updates = []
        while True:
            try:
                updates.append(json.loads(ws.recv(timeout=0.3)))
            except TimeoutError:
                break
    assert task["status"] == "completed", task
    assert task["params"] == {"9:100:101.blur_radius": 3, "12:100:101.sigma": 0.7}
    assert task["subgraph_titles"]["9"] == "Invert then blur"
    shown = {
        (u["progress"].get("node"), u["progress"].get("display_node"), u["progress"].get("display_title"))
        for u in updates
        if u.get("type") == "task_update" and u.get("progress", {}).get("node")
    }
    assert ("9:100:101", "9", "Invert then blur") in shown
    assert {o["node_id"] for o in task["outputs"]} == {"20", "21"}
