"""End to end: ComfyGate and the emulator on loopback, driven over HTTP and WebSocket."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.conftest import FINAL, Gate
from tests.protocol import load_workflow, sd_workflow


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
    assert path.is_file() and path.stat().st_size == output["size"] > 0
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


def test_ws_drop_is_reconciled_from_history(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.05)
    task_id = gate.submit(sd_workflow(steps=6)).json()["task_id"]
    gate.wait(task_id, {"running"})
    emulator.drop_websockets()
    task = gate.wait(task_id, timeout=10)
    assert task["status"] == "completed", task
    assert task["outputs"] and (gate.settings.outputs_dir / task["outputs"][0]["filename"]).is_file()


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
