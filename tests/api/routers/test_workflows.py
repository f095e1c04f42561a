"""End to end: the workflow library and inspection routes, against ComfyGate and the emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorThread
from tests.conftest import Gate, written
from tests.protocol import PROJECT

UI_FILE = PROJECT / "workflows" / "sd_txt2img_ui.json"
API_FILE = PROJECT / "workflows" / "sd_txt2img_api.json"


def upload(gate: Gate, content: bytes | str, filename: str = "wf.json", **form: str) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return gate.client.post("/api/workflow/upload", files={"file": (filename, data, "application/json")}, data=form)


def upload_file(gate: Gate, path: Path, **form: str) -> httpx.Response:
    return upload(gate, path.read_bytes(), path.name, **form)


def params_by_key(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["key"]: p for p in body["params"]}


def emulator_prompt(emulator: EmulatorThread, prompt_id: str) -> dict[str, Any]:
    """The API prompt the emulator actually received and ran (history entry: [number, id, prompt, ...])."""
    history = httpx.get(f"{emulator.url}/history/{prompt_id}", timeout=5).json()
    return history[prompt_id]["prompt"][2]


def tiny_api() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "tiny"}},
    }


# --------------------------------------------------------------------------------------------------
# upload, list, get, delete


def test_upload_ui_workflow_keeps_ui_on_disk_and_returns_api_and_params(gate: Gate) -> None:
    response = upload_file(gate, UI_FILE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "sd_txt2img_ui.json" and body["format"] == "ui"
    assert body["workflow"]["3"]["class_type"] == "KSampler"
    assert body["workflow"]["6"]["inputs"]["clip"] == ["4", 1]
    params = params_by_key(body)
    assert params["6.text"]["role"] == "positive_prompt" and params["7.text"]["role"] == "negative_prompt"
    assert params["3.seed"]["role"] == "seed" and params["3.seed"]["type"] == "INT"
    assert params["3.seed"]["max"] == 0xFFFFFFFFFFFFFFFF  # an exact int, not a float
    stored = json.loads((gate.settings.workflows_dir / "sd_txt2img_ui.json").read_text())
    assert stored == json.loads(UI_FILE.read_text())  # stored as uploaded: still openable in ComfyUI


def test_upload_api_workflow_with_name_list_get_and_delete(gate: Gate) -> None:
    response = upload_file(gate, API_FILE, name="txt2img")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "txt2img.json" and body["format"] == "api"
    assert body["workflow"] == json.loads(API_FILE.read_text())
    assert "6.text" in params_by_key(body)
    assert upload_file(gate, UI_FILE).status_code == 200

    listed = gate.client.get("/api/workflows").json()["workflows"]
    by_name = {w["name"]: w for w in listed}
    assert set(by_name) == {"txt2img.json", "sd_txt2img_ui.json"}
    assert by_name["txt2img.json"]["format"] == "api" and by_name["sd_txt2img_ui.json"]["format"] == "ui"
    assert by_name["txt2img.json"]["size"] == (gate.settings.workflows_dir / "txt2img.json").stat().st_size
    assert abs(by_name["txt2img.json"]["modified"] - time.time()) < 60

    for name in ("txt2img", "txt2img.json"):
        got = gate.client.get(f"/api/workflow/{name}")
        assert got.status_code == 200, got.text
        assert got.json()["name"] == "txt2img.json"
        assert got.json()["workflow"] == body["workflow"] and got.json()["params"] == body["params"]
    got_ui = gate.client.get("/api/workflow/sd_txt2img_ui").json()
    assert got_ui["format"] == "ui" and got_ui["workflow"]["9"]["class_type"] == "SaveImage"

    assert gate.client.delete("/api/workflow/txt2img").json() == {"deleted": "txt2img.json"}
    assert gate.client.get("/api/workflow/txt2img.json").status_code == 404
    again = gate.client.delete("/api/workflow/txt2img.json")
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    assert [w["name"] for w in gate.client.get("/api/workflows").json()["workflows"]] == ["sd_txt2img_ui.json"]


def test_get_unknown_workflow_is_404(gate: Gate) -> None:
    response = gate.client.get("/api/workflow/nope")
    assert response.status_code == 404
    assert "nope.json" in response.json()["message"]


def test_list_shows_unreadable_files_without_format(gate: Gate) -> None:
    (gate.settings.workflows_dir / "broken.json").write_text("{not json")
    [item] = gate.client.get("/api/workflows").json()["workflows"]
    assert item["name"] == "broken.json" and item["format"] is None
    response = gate.client.get("/api/workflow/broken")
    assert response.status_code == 400 and "not valid JSON" in response.json()["message"]
    assert gate.client.delete("/api/workflow/broken").status_code == 200


def test_overwrite_protection(gate: Gate) -> None:
    assert upload(gate, json.dumps(tiny_api()), "tiny.json").status_code == 200
    changed = tiny_api()
    changed["1"]["inputs"]["width"] = 48
    taken = upload(gate, json.dumps(changed), "tiny.json")
    assert taken.status_code == 409 and taken.json()["error"] == "conflict"
    assert upload(gate, json.dumps(changed), "tiny.json", overwrite="false").status_code == 409
    stored = json.loads((gate.settings.workflows_dir / "tiny.json").read_text())
    assert stored["1"]["inputs"]["width"] == 32
    replaced = upload(gate, json.dumps(changed), "tiny.json", overwrite="true")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["workflow"]["1"]["inputs"]["width"] == 48
    assert gate.client.get("/api/workflow/tiny").json()["workflow"]["1"]["inputs"]["width"] == 48


def test_upload_name_from_an_odd_filename_is_made_safe(gate: Gate) -> None:
    response = upload(gate, json.dumps(tiny_api()), "../../My workflow (2).JSON")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "My workflow _2_.json"
    assert (gate.settings.workflows_dir / "My workflow _2_.json").is_file()


BAD_PATHS = ["../x", "..%2Fx", "..%2F..%2Fsecret", "%00", "x%00.json", "a%5Cb", "%2Fetc%2Fpasswd", "C:x", ".hidden"]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_names_never_reach_outside_the_library(gate: Gate, path: str) -> None:
    secret = gate.settings.workflows_dir.parent / "secret.json"
    secret.write_text(json.dumps(tiny_api()))
    for method in ("GET", "DELETE"):
        response = gate.client.request(method, f"/api/workflow/{path}")
        assert response.status_code in (400, 404), (method, path, response.text)
    assert secret.is_file()


def test_a_symlink_out_of_the_library_is_not_followed(gate: Gate) -> None:
    secret = gate.settings.workflows_dir.parent / "secret.json"
    secret.write_text(json.dumps(tiny_api()))
    (gate.settings.workflows_dir / "link.json").symlink_to(secret)
    assert gate.client.get("/api/workflow/link").status_code == 404
    assert gate.client.post("/api/workflow/update", json={"name": "link", "params": {"1.width": 8}}).status_code == 404
    assert json.loads(secret.read_text()) == tiny_api()


@pytest.mark.parametrize("name", ["../x", "a\\b", "/etc/passwd", "x\x00y", "..", "C:evil"])
def test_bad_names_are_refused_on_upload_and_update(gate: Gate, name: str) -> None:
    response = upload(gate, json.dumps(tiny_api()), "ok.json", name=name)
    assert response.status_code == 400, response.text
    update = gate.client.post("/api/workflow/update", json={"name": name, "workflow": tiny_api()})
    assert update.status_code == 400, update.text
    assert list(gate.settings.workflows_dir.iterdir()) == []
    assert not (gate.settings.workflows_dir.parent / "x.json").exists()


def test_upload_too_large_is_413(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([emulator.url], max_upload_bytes=1000)
    response = upload_file(gate, UI_FILE)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert response.json()["limit"] == 1000
    assert upload(gate, json.dumps(tiny_api()), "small.json").status_code == 200


def test_upload_not_json_is_400_with_position(gate: Gate) -> None:
    response = upload(gate, '{\n  "1": {"class_type": "EmptyImage",,}\n}', "bad.json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_json" and body["line"] == 2 and body["column"] == 36
    assert "line 2 column 36" in body["message"]
    binary = upload(gate, b"\x89PNG\r\n\x1a\n\xff\xfe", "image.json")
    assert binary.status_code == 400 and binary.json()["error"] == "invalid_json"
    empty = upload(gate, b"", "empty.json")
    assert empty.status_code == 400 and "empty" in empty.json()["message"]


@pytest.mark.parametrize(
    "content", ['[{"class_type": "EmptyImage"}]', '{"foo": 1}', '{"1": {"inputs": {}}}', "{}", '"text"']
)
def test_upload_not_a_workflow_is_422(gate: Gate, content: str) -> None:
    response = upload(gate, content, "notwf.json")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_workflow"
    assert "expected either an API-format workflow" in response.json()["message"]
    assert list(gate.settings.workflows_dir.iterdir()) == []


def test_upload_refuses_unknown_classes_and_dangling_links(gate: Gate) -> None:
    unknown = tiny_api()
    unknown["3"] = {"class_type": "NoSuchNode", "inputs": {}}
    response = upload(gate, json.dumps(unknown), "unknown.json")
    assert response.status_code == 422 and response.json()["class_type"] == "NoSuchNode"
    dangling = tiny_api()
    dangling["2"]["inputs"]["images"] = ["7", 0]
    response = upload(gate, json.dumps(dangling), "dangling.json")
    assert response.status_code == 422 and response.json()["problems"][0]["node_id"] == "2"
    assert list(gate.settings.workflows_dir.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# update, then submit by name


def test_update_params_of_a_ui_workflow_then_submit_by_name_uses_them(gate: Gate, emulator: EmulatorThread) -> None:
    assert upload_file(gate, UI_FILE, name="lighthouse").status_code == 200
    response = gate.client.post(
        "/api/workflow/update",
        json={"name": "lighthouse", "params": {"6.text": "a red fox in snow", "3.steps": "3", "3.seed": 7}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "lighthouse.json" and body["format"] == "api" and body["converted"] is True
    assert params_by_key(body)["6.text"]["value"] == "a red fox in snow"
    assert params_by_key(body)["3.steps"]["value"] == 3
    stored = json.loads((gate.settings.workflows_dir / "lighthouse.json").read_text())
    assert stored == body["workflow"]  # stored converted, as the response says
    assert [w["format"] for w in gate.client.get("/api/workflows").json()["workflows"]] == ["api"]

    submitted = gate.submit(workflow_name="lighthouse", params={"7.text": "ugly"})
    assert submitted.status_code == 200, submitted.text
    task = gate.wait(submitted.json()["task_id"])
    assert task["status"] == "completed", task
    assert task["workflow_name"] == "lighthouse" and task["params"] == {"7.text": "ugly"}
    ran = emulator_prompt(emulator, task["prompt_id"])
    assert ran["6"]["inputs"]["text"] == "a red fox in snow"
    assert ran["3"]["inputs"]["steps"] == 3 and ran["3"]["inputs"]["seed"] == 7
    assert ran["7"]["inputs"]["text"] == "ugly"


def test_update_invalid_params_is_422_and_changes_nothing(gate: Gate) -> None:
    assert upload_file(gate, API_FILE, name="txt").status_code == 200
    before = (gate.settings.workflows_dir / "txt.json").read_text()
    response = gate.client.post(
        "/api/workflow/update", json={"name": "txt", "params": {"3.steps": "many", "99.text": "x", "6.nope": 1}}
    )
    assert response.status_code == 422
    assert {p["key"] for p in response.json()["problems"]} == {"3.steps", "99.text", "6.nope"}
    assert (gate.settings.workflows_dir / "txt.json").read_text() == before


def test_update_replaces_the_workflow_and_keeps_its_format(gate: Gate) -> None:
    assert upload(gate, json.dumps(tiny_api()), "tiny.json").status_code == 200
    ui = json.loads(UI_FILE.read_text())
    response = gate.client.post("/api/workflow/update", json={"name": "tiny.json", "workflow": ui})
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "ui" and response.json()["converted"] is False
    assert json.loads((gate.settings.workflows_dir / "tiny.json").read_text()) == ui
    both = gate.client.post(
        "/api/workflow/update", json={"name": "tiny", "workflow": tiny_api(), "params": {"1.width": 40}}
    )
    assert both.status_code == 200, both.text
    assert both.json()["format"] == "api" and both.json()["workflow"]["1"]["inputs"]["width"] == 40


def test_update_needs_an_existing_workflow_and_something_to_do(gate: Gate) -> None:
    missing = gate.client.post("/api/workflow/update", json={"name": "ghost", "params": {"1.width": 40}})
    assert missing.status_code == 404
    assert not (gate.settings.workflows_dir / "ghost.json").exists()
    assert upload(gate, json.dumps(tiny_api()), "tiny.json").status_code == 200
    nothing = gate.client.post("/api/workflow/update", json={"name": "tiny", "params": {}})
    assert nothing.status_code == 400
    extra = gate.client.post("/api/workflow/update", json={"name": "tiny", "prams": {"1.width": 1}})
    assert extra.status_code == 422


def test_bundled_ui_example_submitted_by_name_runs_and_makes_an_image(gate: Gate) -> None:
    """The converted UI example passes the emulator's validation (ComfyUI's) and completes."""
    assert upload_file(gate, UI_FILE).status_code == 200
    response = gate.submit(workflow_name="sd_txt2img_ui.json", params={"3.steps": 2})
    assert response.status_code == 200, response.text
    task = gate.wait(response.json()["task_id"])
    assert task["status"] == "completed", task
    [image] = task["outputs"]
    assert image["node_id"] == "9" and image["content_type"] == "image/png"
    path = gate.settings.outputs_dir / image["filename"]
    assert written(path) and path.stat().st_size == image["size"] > 0


# --------------------------------------------------------------------------------------------------
# convert and params (inline, nothing saved)


def test_convert_both_formats_raw_and_wrapped(gate: Gate) -> None:
    ui = json.loads(UI_FILE.read_text())
    api = json.loads(API_FILE.read_text())
    from_ui = gate.client.post("/api/workflow/convert", json=ui)
    assert from_ui.status_code == 200, from_ui.text
    assert from_ui.json()["format"] == "ui"
    converted = from_ui.json()["workflow"]
    assert {k: (v["class_type"], v["inputs"]) for k, v in converted.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in api.items()
    }
    wrapped = gate.client.post("/api/workflow/convert", json={"workflow": ui})
    assert wrapped.json() == from_ui.json()
    from_api = gate.client.post("/api/workflow/convert", json=api)
    assert from_api.json() == {"format": "api", "workflow": api}
    assert gate.client.post("/api/workflow/convert", json={"workflow": api}).json()["workflow"] == api
    assert gate.client.post("/api/workflow/convert", json={"prompt": api, "client_id": "x"}).json()["workflow"] == api
    assert list(gate.settings.workflows_dir.iterdir()) == []


def test_convert_unknown_class_names_node_and_class(gate: Gate) -> None:
    ui = json.loads(UI_FILE.read_text())
    node = next(n for n in ui["nodes"] if n["type"] == "VAEDecode")
    node["type"] = "FancyDecoder"
    response = gate.client.post("/api/workflow/convert", json=ui)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unknown_node_class"
    assert body["node_id"] == str(node["id"]) and body["class_type"] == "FancyDecoder"
    assert str(node["id"]) in body["message"] and "FancyDecoder" in body["message"]
    api = tiny_api()
    api["5"] = {"class_type": "MysteryNode", "inputs": {}}
    body = gate.client.post("/api/workflow/convert", json=api).json()
    assert body["node_id"] == "5" and body["class_type"] == "MysteryNode"


def test_convert_a_widget_it_cannot_lay_out_is_422_naming_node_and_reason(gate: Gate) -> None:
    ui = json.loads(UI_FILE.read_text())
    ui["nodes"].append(
        {"id": 77, "type": "WebcamCapture", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["", 0, 0, True]}
    )
    response = gate.client.post("/api/workflow/convert", json=ui)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unsupported_widget"
    assert body["node_id"] == "77" and body["class_type"] == "WebcamCapture"
    assert "WEBCAM widget" in body["reason"] and "node 77 (WebcamCapture)" in body["message"]
    submitted = gate.submit(ui)
    assert submitted.status_code == 422 and submitted.json()["error"] == "unsupported_widget"


def test_convert_not_a_workflow_is_422(gate: Gate) -> None:
    response = gate.client.post("/api/workflow/convert", json={"hello": "world"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_workflow"
    broken = gate.client.post("/api/workflow/convert", content=b"{oops", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"] == "invalid_json"


def test_params_of_an_inline_workflow(gate: Gate) -> None:
    ui = json.loads(UI_FILE.read_text())
    response = gate.client.post("/api/workflow/params", json={"workflow": ui})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "ui" and body["workflow"]["3"]["class_type"] == "KSampler"
    params = params_by_key(body)
    assert params["5.width"]["role"] == "width" and params["5.width"]["value"] == 512
    assert params["3.sampler_name"]["type"] == "COMBO" and "euler" in params["3.sampler_name"]["options"]
    api_body = gate.client.post("/api/workflow/params", json={"workflow": tiny_api()}).json()
    assert api_body["format"] == "api" and set(params_by_key(api_body)) == {
        "1.width",
        "1.height",
        "1.batch_size",
        "1.color",
        "2.filename_prefix",
    }
    assert gate.client.post("/api/workflow/params", json={"workflow": {"x": 1}}).status_code == 422
    assert gate.client.post("/api/workflow/params", json=tiny_api()).status_code == 422  # needs {workflow}
    assert list(gate.settings.workflows_dir.iterdir()) == []


def test_no_backend_reachable_is_503_with_retry_after(gate: Gate, emulator: EmulatorThread) -> None:
    assert upload(gate, json.dumps(tiny_api()), "tiny.json").status_code == 200
    emulator.stop()
    deadline = time.monotonic() + 10
    while gate.client.get("/api/health").json()["status"] != "down":
        assert time.monotonic() < deadline, "the backend never went down"
        time.sleep(0.02)
    for response in (
        gate.client.post("/api/workflow/convert", json=tiny_api()),
        gate.client.post("/api/workflow/params", json={"workflow": tiny_api()}),
        gate.client.get("/api/workflow/tiny"),
        upload(gate, json.dumps(tiny_api()), "other.json"),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
    assert not (gate.settings.workflows_dir / "other.json").exists()
    # what needs no backend still works
    assert gate.client.post("/api/workflow/convert", json={"nope": 1}).status_code == 422
    assert [w["name"] for w in gate.client.get("/api/workflows").json()["workflows"]] == ["tiny.json"]
    assert gate.client.delete("/api/workflow/tiny").status_code == 200


def test_openapi_describes_the_workflow_routes(gate: Gate) -> None:
    spec = gate.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/workflow/upload", "post"),
        ("/api/workflows", "get"),
        ("/api/workflow/{filename}", "get"),
        ("/api/workflow/{filename}", "delete"),
        ("/api/workflow/update", "post"),
        ("/api/workflow/convert", "post"),
        ("/api/workflow/params", "post"),
    ]:
        operation = paths[path][method]
        assert operation["tags"] == ["workflows"]
        assert "$ref" in json.dumps(operation["responses"]["200"]), (path, method)
    assert "WorkflowParam" in spec["components"]["schemas"]


def test_params_lists_every_missing_class_and_partial_describes_the_rest(gate: Gate) -> None:
    api = json.loads((PROJECT / "workflows" / "sd_txt2img_api.json").read_text())
    api["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    api["21"] = {"class_type": "MagicSaver", "inputs": {"images": ["20", 0]}}
    refused = gate.client.post("/api/workflow/params", json={"workflow": api})
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "unknown_node_class" and "FancyUpscaler, MagicSaver" in body["message"]
    assert [m["class_type"] for m in body["missing_classes"]] == ["FancyUpscaler", "MagicSaver"]
    viewed = gate.client.post("/api/workflow/params", params={"partial": "true"}, json={"workflow": api}).json()
    assert viewed["runnable"] is False and len(viewed["missing_classes"]) == 2
    assert "20" not in viewed["workflow"] and any(p["key"] == "6.text" for p in viewed["params"])
    whole = json.loads((PROJECT / "workflows" / "sd_txt2img_api.json").read_text())
    fine = gate.client.post("/api/workflow/params", params={"partial": "true"}, json={"workflow": whole}).json()
    assert fine["runnable"] is True and fine["missing_classes"] == []


def test_get_with_include_source_gives_the_file_as_stored(gate: Gate) -> None:
    ui = json.loads((PROJECT / "workflows" / "sd_txt2img_ui.json").read_text())
    files = {"file": ("ui.json", json.dumps(ui), "application/json")}
    assert gate.client.post("/api/workflow/upload", files=files).status_code == 200
    body = gate.client.get("/api/workflow/ui.json", params={"include": "source"}).json()
    assert body["format"] == "ui" and body["source"] == ui and "3" in body["workflow"]
    assert gate.client.get("/api/workflow/ui.json").json().get("source") is None
    assert gate.client.get("/api/workflow/ui.json", params={"include": "everything"}).status_code == 400
