"""The debugger, round two (issue 20), in real headless Chromium against ComfyGate and the emulator.

Each test covers one of the issue's bugs or one of its new views; every one failed on the page before.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gate
from tests.protocol_transcripts import requires_protocol
from tests.protocol_transcripts import workflow as recorded_workflow
from tests.static.pages import (
    example,
    field,
    load_from_library,
    open_page,
    require_chromium,
    task_workflow,
    wait_card,
    wait_output_image,
)

require_chromium()

DATA = Path(__file__).parent / "media"
PAYLOAD = "<img src=x onerror=window.__pwned=1>"


def card_of(page: Any, task_id: str) -> Any:
    return page.locator(f'.run[data-task-id="{task_id}"]')


def wait_cards(page: Any, n: int) -> list[str]:
    page.wait_for_function("n => document.querySelectorAll('.run[data-task-id]').length >= n", arg=n)
    return [el.get_attribute("data-task-id") for el in page.locator(".run[data-task-id]").all()]


def classes(workflow: dict[str, Any]) -> dict[str, str]:
    return {k: v["class_type"] for k, v in workflow.items()}


def upload_file(page: Any, name: str, data: bytes, mime: str) -> None:
    """Drop a file on the page, as a user dragging it from the file manager."""
    page.evaluate(
        """([name, bytes, mime]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [name, list(data), mime],
    )


def load_json(page: Any, tmp_path: Path, name: str, workflow: dict[str, Any]) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(workflow))
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("n => document.querySelector('#wf-info').textContent.includes(n)", arg=name)


def run_recorded(page: Any, gate: Gate, tmp_path: Path, name: str) -> str:
    """Open the page, load a workflow recorded against real ComfyUI, run it; the completed task's id."""
    open_page(page, gate)
    load_json(page, tmp_path, name, recorded_workflow(name.removesuffix(".json")))
    page.click("#run")
    return wait_card(page, "completed")


# ---- high: re-run, text outputs, reload ------------------------------------------------------------


def test_rerun_after_reload_runs_the_tasks_own_workflow(page: Any, lib_gate: Gate) -> None:
    """Bug 1: Re-run on a card (and in History) never runs whatever happens to be loaded."""
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    page.click("#run")
    first = wait_card(page, "completed")
    page.reload()
    open_page(page, lib_gate)
    page.wait_for_selector(f'.run[data-task-id="{first}"][data-status="completed"]')
    load_from_library(page, "sd_txt2img_api.json")  # another workflow in the form
    card_of(page, first).get_by_role("button", name="Re-run", exact=True).click()
    ids = wait_cards(page, 2)
    again = next(i for i in ids if i != first)
    assert lib_gate.wait(again)["status"] == "completed"
    assert classes(task_workflow(lib_gate, again)) == classes(task_workflow(lib_gate, first))
    assert lib_gate.task(again)["params"] == lib_gate.task(first)["params"]
    assert "another page" not in page.inner_text("#toasts")

    page.click('.tab[data-side="history"]')
    page.locator(f'.history-item[data-task-id="{first}"]').get_by_role("button", name="Re-run").click()
    ids = wait_cards(page, 3)
    third = next(i for i in ids if i not in (first, again))
    assert lib_gate.wait(third)["status"] == "completed"
    assert classes(task_workflow(lib_gate, third)) == classes(task_workflow(lib_gate, first))


@requires_protocol
def test_text_outputs_are_shown_on_the_card(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 2: PreviewAny's text (in node_outputs) is on the card; no "no output files"."""
    task_id = run_recorded(page, lib_gate, tmp_path, "trivial.json")
    text = lib_gate.task(task_id)["node_outputs"]["2"]["text"][0]
    shown = card_of(page, task_id).locator('.output-text[data-node="2"] pre')
    shown.wait_for()
    assert shown.inner_text() == text
    assert "#2" in card_of(page, task_id).locator(".output-text figcaption").inner_text()
    assert card_of(page, task_id).locator(".no-outputs").count() == 0


def test_a_reload_keeps_the_workflow_its_edits_and_the_cards(page: Any, lib_gate: Gate) -> None:
    """Bug 3: run cards, the loaded workflow, the form's edits and a JSON draft survive a reload."""
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.fill(field("6.text") + " textarea", "kept across a reload")
    page.fill(field("3.steps") + " input", "7")
    page.select_option(field("3.seed") + " select.seed-mode", "increment")
    page.click("#run")
    task_id = wait_card(page, "completed")
    wait_output_image(page, task_id)
    page.wait_for_timeout(400)  # the form is stored 250 ms after the last edit
    page.reload()
    open_page(page, lib_gate)
    page.wait_for_selector(field("6.text"))
    assert page.input_value(field("6.text") + " textarea") == "kept across a reload"
    assert page.input_value(field("3.steps") + " input") == "7"
    assert page.input_value(field("3.seed") + " select.seed-mode") == "increment"
    assert "sd_txt2img_api.json" in page.inner_text("#wf-info")
    wait_output_image(page, task_id)  # the card, rebuilt from the API, with its image

    # an unapplied JSON draft is kept too
    page.click('.tab[data-tab="json"]')
    draft = page.input_value("#json-editor").replace('"steps": 7', '"steps": 11')
    page.fill("#json-editor", draft)
    page.wait_for_timeout(400)
    page.reload()
    open_page(page, lib_gate)
    page.wait_for_selector('[data-panel="json"]:not([hidden])')
    assert '"steps": 11' in page.input_value("#json-editor")


# ---- medium ----------------------------------------------------------------------------------------


def test_video_and_audio_play_and_other_files_download(page: Any, lib_gate: Gate) -> None:
    """Bug 4: video and audio outputs get players (kind from the server, else from the extension)."""
    outputs = lib_gate.settings.outputs_dir
    shutil.copy(DATA / "clip.webm", outputs / "clip.webm")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(int(8000 * math.sin(i / 5)).to_bytes(2, "little", signed=True) for i in range(8000)))
    (outputs / "tone.wav").write_bytes(buffer.getvalue())
    (outputs / "mesh.glb").write_bytes(b"glTF" + b"\0" * 16)
    open_page(page, lib_gate)
    kinds = page.evaluate(
        """async () => {
            const m = await import('/static/js/outputs.js');
            const box = document.createElement('div');
            box.id = 'test-gallery';
            document.body.append(box);
            const outs = [
              {filename: 'clip.webm', url: '/api/image/clip.webm', node_id: '9', size: 720},
              {filename: 'tone.wav', url: '/api/image/tone.wav', node_id: '9', size: 16044, kind: 'audio',
               content_type: 'audio/wav'},
              {filename: 'mesh.glb', url: '/api/image/mesh.glb', node_id: '9', size: 20, kind: '3d'},
            ];
            m.renderOutputs(box, outs, {});
            return outs.map(m.kindOf);
        }"""
    )
    assert kinds == ["video", "audio", "3d"]
    page.wait_for_function(
        "() => { const v = document.querySelector('#test-gallery video');"
        " return v && v.readyState >= 1 && v.duration > 0; }"
    )
    page.wait_for_function(
        "() => { const a = document.querySelector('#test-gallery audio');"
        " return a && a.readyState >= 1 && a.duration > 0.9; }"
    )
    assert page.locator("#test-gallery video").get_attribute("controls") is not None
    assert page.locator('#test-gallery a.download[download="mesh.glb"]').count() == 1


def test_seeds_follow_control_after_generate(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 5: a UI seed marked fixed stays fixed; an API file's seed is not randomised; increment moves on."""
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_ui.json")  # KSampler widgets_values: [42, "fixed", ...]
    assert page.input_value(field("3.seed") + " select.seed-mode") == "fixed"
    page.click("#run")
    first = wait_card(page, "completed")
    assert lib_gate.task(first)["params"]["3.seed"] == 42

    ui = example("sd_txt2img_ui.json")
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    sampler["widgets_values"][1] = "increment"
    load_json(page, tmp_path, "incrementing.json", ui)
    assert page.input_value(field("3.seed") + " select.seed-mode") == "increment"
    page.click("#run")
    wait_cards(page, 2)
    page.wait_for_function(
        "k => document.querySelector(`[data-key='${k}'] input.seed-value`).value === '43'", arg="3.seed"
    )

    sampler["widgets_values"][1] = "randomize"
    load_json(page, tmp_path, "random.json", ui)
    assert page.input_value(field("3.seed") + " select.seed-mode") == "randomize"

    load_from_library(page, "sd_txt2img_api.json")
    seed = example("sd_txt2img_api.json")["3"]["inputs"]["seed"]
    assert page.input_value(field("3.seed") + " select.seed-mode") == "fixed"
    page.click("#run")
    ids = wait_cards(page, 3)
    assert lib_gate.wait(ids[0])["params"]["3.seed"] == seed


def test_history_pages_filters_and_searches(page: Any, lib_gate: Gate) -> None:
    """Bug 6 and the history item: every task reachable by paging; status filter; search; thumbnails."""
    ids = []
    for i in range(27):
        if i == 5:
            answer = lib_gate.submit(example("sd_txt2img_api.json"), params={"6.text": "a needle in the haystack"})
        else:
            answer = lib_gate.submit(workflow_name="image_invert_blur_api.json", params={"4.filename_prefix": f"h{i}"})
        ids.append(answer.json()["task_id"])
    for task_id in ids:
        lib_gate.wait(task_id)
    total = lib_gate.client.get("/api/tasks", params={"limit": 1}).json()["total"]
    open_page(page, lib_gate)
    page.click('.tab[data-side="history"]')
    page.wait_for_function(
        "t => document.querySelector('.history-count').textContent === `1–25 of ${t} task(s)`", arg=total
    )
    assert page.locator(".history-item").count() == 25
    page.get_by_role("button", name="older tasks").click()
    page.wait_for_function("t => document.querySelector('.history-count').textContent.startsWith('26–')", arg=total)
    assert page.locator(".history-item").count() == min(25, total - 25)
    page.fill(".history-search", "needle")
    page.wait_for_function("() => document.querySelector('.history-count').textContent === '1–1 of 1 task(s)'")
    item = page.locator(".history-item").first
    assert item.get_attribute("data-task-id") == ids[5]
    assert "a needle in the haystack" in item.locator(".history-snippet").inner_text()
    page.wait_for_function(
        "() => { const i = document.querySelector('.history-item .history-thumb img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    page.fill(".history-search", "")
    page.select_option('[aria-label="status filter"]', "failed")
    page.wait_for_function("() => document.querySelector('.history-list').textContent.includes('no task matches')")


def test_long_titles_and_errors_do_not_widen_the_form(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 7: a long node title or unbroken error text wraps instead of scrolling sideways."""
    workflow = example("sd_txt2img_api.json")
    workflow["4"]["_meta"]["title"] = "T" * 300
    workflow["4"]["inputs"]["ckpt_name"] = "x" * 400 + ".safetensors"
    open_page(page, lib_gate)
    load_json(page, tmp_path, "long.json", workflow)
    page.click("#run")
    page.wait_for_selector(field("4.ckpt_name") + ".invalid")
    sideways = page.evaluate(
        "() => { const p = document.querySelector('[data-panel=form]'); return p.scrollWidth - p.clientWidth; }"
    )
    assert sideways <= 1, f"the Parameters column scrolls sideways by {sideways} px"


def test_json_tab_edits_are_applied_when_switching_back(page: Any, lib_gate: Gate) -> None:
    """Bug 8: edits in the JSON tab reach the form on switching back; a broken JSON keeps the tab."""
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.click('.tab[data-tab="json"]')
    page.fill("#json-editor", page.input_value("#json-editor").replace('"steps": 20', '"steps": 13'))
    page.click('.tab[data-tab="form"]')
    page.wait_for_function("k => document.querySelector(`[data-key='${k}'] input`)?.value === '13'", arg="3.steps")
    page.click('.tab[data-tab="json"]')
    page.fill("#json-editor", "{ not json")
    page.click('.tab[data-tab="form"]')
    page.wait_for_function("() => document.querySelector('#json-error').textContent.includes('not valid JSON')")
    assert page.locator('[data-panel="json"]').is_visible()


def test_an_empty_or_wrong_number_is_flagged_not_sent(page: Any, lib_gate: Gate) -> None:
    """Bug 9: an emptied number field is an error on the field (node named), never sent as null."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/workflow/submit") else None)
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.fill(field("3.steps") + " input", "")
    page.click("#run")
    page.wait_for_selector(field("3.steps") + ".invalid")
    message = page.inner_text(field("3.steps") + " .field-error")
    assert "#3 KSampler · steps" in message and "enter a number" in message and "None" not in message
    assert page.locator(".run").count() == 0 and not sent


def test_problems_found_from_the_json_tab_are_shown_where_marked(page: Any, lib_gate: Gate) -> None:
    """Bug 10: a run started from the JSON tab shows the Parameters tab, where its problems are marked."""
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.click('.tab[data-tab="json"]')
    page.fill("#json-editor", page.input_value("#json-editor").replace('"steps": 20', '"steps": 0'))
    page.click("#run")
    page.wait_for_selector(field("3.steps") + ".invalid")
    assert page.locator(field("3.steps")).is_visible()
    assert page.get_attribute('.tab[data-tab="form"]', "aria-selected") == "true"
    errors = page.inner_text("#form-errors")
    assert ("#3 KSampler" in errors or "node 3 (KSampler)" in errors) and "steps" in errors  # its node named


@requires_protocol
def test_held_tasks_are_in_the_queue_and_cleared_with_confirmation(page: Any, gate_factory: Any, emulator: Any) -> None:
    """Bug 11/12: tasks held by ComfyGate (its backend went down) are listed; clearing confirms and counts."""
    gate = gate_factory([emulator.url])
    trivial = recorded_workflow("trivial")
    assert gate.wait(gate.submit(trivial).json()["task_id"])["status"] == "completed"  # node specs known
    emulator.stop()
    deadline = time.monotonic() + 10
    while gate.client.get("/api/health").json()["status"] != "down":
        assert time.monotonic() < deadline, "the backend never went down"
        time.sleep(0.1)
    held = [gate.submit(trivial) for _ in range(2)]
    if any(r.status_code != 200 for r in held):
        pytest.fail(f"ComfyGate did not hold the tasks: {[r.text for r in held]}")
    open_page(page, gate)
    page.wait_for_function("() => document.querySelectorAll('.queue-item[data-state=held]').length === 2")
    assert "2 held by ComfyGate" in page.inner_text(".queue-summary")
    assert "held" in page.inner_text("#banner") and "refused" not in page.inner_text("#banner")
    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.get_by_role("button", name="Clear pending").click()
    page.wait_for_function("() => document.querySelector('#toasts').textContent.includes('cancelled 2 task(s)')")
    assert "2 waiting task(s)" in dialogs[0] and "2 held" in dialogs[0]
    for r in held:
        assert gate.wait(r.json()["task_id"])["status"] == "interrupted"


def test_clearing_leaves_other_clients_prompts_alone(page: Any, lib_gate: Gate, emu: Any) -> None:
    """Bug 12 and the queue's order: a foreign prompt gets no button and survives Clear pending."""
    emu.set_delays(step_delay=0.3)
    running = lib_gate.submit(workflow_name="sd_txt2img_api.json").json()["task_id"]
    lib_gate.wait(running, {"running"})
    waiting = lib_gate.submit(workflow_name="sd_txt2img_api.json").json()["task_id"]
    foreign = httpx.post(
        f"{emu.url}/prompt", json={"prompt": example("sd_txt2img_api.json"), "client_id": "someone"}
    ).json()
    try:
        open_page(page, lib_gate)
        page.wait_for_selector(f'.queue-item[data-prompt-id="{foreign["prompt_id"]}"]')
        other = page.locator(f'.queue-item[data-prompt-id="{foreign["prompt_id"]}"]')
        assert "another client" in other.inner_text() and other.locator("button").count() == 0
        mine = page.locator(f'.queue-item[data-task-id="{waiting}"]')
        assert mine.get_by_role("button", name="Cancel").count() == 1
        dialogs: list[str] = []
        page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        page.get_by_role("button", name="Clear pending").click()
        page.wait_for_function("() => document.querySelector('#toasts').textContent.includes('cancelled 1 task(s)')")
        assert "1 prompt(s) from other clients stay" in dialogs[0]
        assert lib_gate.wait(waiting)["status"] == "interrupted"
        pending = [e[1] for e in httpx.get(f"{emu.url}/queue").json()["queue_pending"]]
        assert foreign["prompt_id"] in pending
        assert lib_gate.task(running)["status"] == "running"
    finally:
        httpx.post(f"{emu.url}/queue", json={"delete": [foreign["prompt_id"]]})
        lib_gate.client.post(f"/api/interrupt/{running}")
        lib_gate.wait(running)


def test_small_screen_gets_a_drawer_and_room_for_the_form(browser_context: Any, lib_gate: Gate) -> None:
    """Bug 13: at 1024x700 the form has room; the side panels are a drawer (keyboard: open, Escape)."""
    page = browser_context.new_page()
    page.set_viewport_size({"width": 1024, "height": 700})
    try:
        open_page(page, lib_gate)
        load_from_library(page, "sd_txt2img_api.json")
        height = page.evaluate("() => document.querySelector('[data-panel=form]').clientHeight")
        assert height >= 300, f"the form gets {height} px"
        assert not page.locator("#queue-panel").is_visible()
        page.focus("#drawer-toggle")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#side-panels').getBoundingClientRect().right <= innerWidth + 1"
        )
        assert page.locator("#queue-panel").is_visible()
        assert page.get_attribute("#drawer-toggle", "aria-expanded") == "true"
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.body.classList.contains('drawer-open')")
    finally:
        page.close()


def test_file_pickers_work_from_the_keyboard(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 14: Open file… and Upload image… are buttons reached with Tab that open their file input on Enter."""
    open_page(page, lib_gate)
    load_json(
        page,
        tmp_path,
        "load_image.json",
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "k"}},
        },
    )
    page.wait_for_selector(field("1.image") + " .upload-button")
    # count the clicks each file input gets (whether the browser then shows its dialog is its own policy)
    page.evaluate(
        """() => { window.__opened = [];
            for (const el of document.querySelectorAll('input[type=file]'))
              el.addEventListener('click', () => window.__opened.push(el.id || el.className)); }"""
    )
    page.focus(field("1.image") + " select")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.classList.contains('upload-button')")
    page.keyboard.press("Enter")
    page.focus("#wf-name")
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("() => document.activeElement.id") == "open-file"
    page.keyboard.press("Enter")
    opened = page.evaluate("() => window.__opened")
    assert len(opened) == 2 and "image-file" in opened[0] and opened[1] == "file-input", opened


def test_unknown_nodes_and_missing_models_load_for_viewing(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 15: every missing class and file is listed; the form shows the new workflow; Run is off."""
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    workflow = example("sd_txt2img_api.json")
    workflow["4"]["inputs"]["ckpt_name"] = "not_downloaded.safetensors"
    workflow["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0], "scale": 2}}
    workflow["21"] = {"class_type": "MagicSaver", "inputs": {"images": ["20", 0]}}
    workflow["22"] = {"class_type": PAYLOAD, "inputs": {}}  # a class name is text too
    load_json(page, tmp_path, "needs_nodes.json", workflow)
    box = page.locator("#wf-missing")
    box.wait_for()
    text = box.inner_text()
    assert "FancyUpscaler" in text and "MagicSaver" in text and "not_downloaded.safetensors" in text
    assert PAYLOAD in text and page.evaluate("() => window.__pwned") is None
    assert page.locator('#wf-missing img, img[src="x"]').count() == 0
    assert page.locator(field("6.text")).count() == 1  # the new workflow is in the form
    assert page.locator(field("4.filename_prefix")).count() == 0  # not the old one
    assert page.is_disabled("#run")


def _subgraph_ui() -> dict[str, Any]:
    blur = {
        "id": "bbbbbbbb-0000-0000-0000-000000000002",
        "name": "Blur",
        "inputs": [
            {"id": "i0", "name": "image", "type": "IMAGE", "linkIds": [101]},
            {"id": "i1", "name": "blur_radius", "label": "softness", "type": "INT", "linkIds": [102]},
        ],
        "outputs": [{"id": "o0", "name": "IMAGE", "type": "IMAGE", "linkIds": [103]}],
        "widgets": [],
        "nodes": [
            {
                "id": 5,
                "type": "ImageBlur",
                "mode": 0,
                "properties": {},
                "widgets_values": [1, 2.5],
                "inputs": [
                    {"name": "image", "type": "IMAGE", "link": 101},
                    {"name": "blur_radius", "type": "INT", "link": 102, "widget": {"name": "blur_radius"}},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [103]}],
            }
        ],
        "links": [
            {"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0, "type": "IMAGE"},
            {"id": 102, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 1, "type": "INT"},
            {"id": 103, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
        ],
    }
    nodes = [
        {
            "id": 1,
            "type": "EmptyImage",
            "mode": 0,
            "properties": {},
            "widgets_values": [64, 32, 1, 0],
            "inputs": [],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
        },
        {
            "id": 200,
            "type": blur["id"],
            "title": "Soften the picture",
            "mode": 0,
            "properties": {},
            "widgets_values": [3],
            "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
        },
        {
            "id": 9,
            "type": "SaveImage",
            "mode": 0,
            "properties": {},
            "widgets_values": ["sg"],
            "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
            "outputs": [],
        },
    ]
    links = [[1, 1, 0, 200, 0, "IMAGE"], [2, 200, 0, 9, 0, "IMAGE"]]
    return {
        "last_node_id": 200,
        "last_link_id": 2,
        "nodes": nodes,
        "links": links,
        "version": 0.4,
        "definitions": {"subgraphs": [blur]},
    }


def test_subgraphs_show_their_name_and_promoted_inputs(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Bug 16: inner nodes sit under the subgraph's title; its promoted input comes first, labelled."""
    open_page(page, lib_gate)
    load_json(page, tmp_path, "subgraph.json", _subgraph_ui())
    group = page.locator('fieldset.subgraph[data-subgraph-id="200"]')
    group.wait_for()
    assert "Soften the picture" in group.locator("legend").first.inner_text()
    promoted = group.locator(':scope > .field[data-key="200:5.blur_radius"]')
    assert promoted.count() == 1 and "softness" in promoted.locator("label").inner_text()
    assert page.input_value(field("200:5.blur_radius") + " input") == "3"
    assert page.locator('fieldset.node[data-node-id="200:5"]').count() == 1  # the rest, inside
    page.fill(field("200:5.blur_radius") + " input", "4")
    page.click("#run")
    task_id = wait_card(page, "completed")
    assert lib_gate.task(task_id)["params"]["200:5.blur_radius"] == 4

    # the essentials come first: the prompt is the first field of a txt2img workflow
    load_from_library(page, "sd_txt2img_api.json")
    assert page.locator("#params .field").first.get_attribute("data-key") == "6.text"
    page.fill(".param-filter", "denoise")
    assert page.locator(field("3.denoise")).is_visible()
    assert not page.locator(field("6.text")).is_visible()


def test_use_values_restores_values_left_at_their_defaults(page: Any, lib_gate: Gate) -> None:
    """Bug 17: Use values puts back every value the task ran with, changed or not."""
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    original = page.input_value(field("6.text") + " textarea")
    page.fill(field("3.steps") + " input", "7")
    page.click("#run")
    task_id = wait_card(page, "completed")
    page.fill(field("6.text") + " textarea", "something else")
    page.fill(field("3.steps") + " input", "9")
    card_of(page, task_id).get_by_role("button", name="Use values").click()
    page.wait_for_function("k => document.querySelector(`[data-key='${k}'] input`).value === '7'", arg="3.steps")
    assert page.input_value(field("6.text") + " textarea") == original


# ---- new views -------------------------------------------------------------------------------------


def test_images_open_in_a_lightbox(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 3, "color": 255}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lightbox"}},
    }
    open_page(page, lib_gate)
    load_json(page, tmp_path, "three.json", workflow)
    page.click("#run")
    task_id = wait_card(page, "completed")
    wait_output_image(page, task_id)
    card_of(page, task_id).locator("button.thumb").first.click()
    page.wait_for_selector("dialog.lightbox[open]")
    assert page.inner_text("dialog.lightbox .muted") == "1 / 3"
    page.keyboard.press("ArrowRight")
    assert page.inner_text("dialog.lightbox .muted") == "2 / 3"
    page.get_by_role("button", name="Zoom 1:1").click()
    assert page.locator(".lightbox-stage.zoomed").count() == 1
    downloads: list[Any] = []
    page.on("download", lambda d: downloads.append(d))
    page.get_by_role("button", name="Download all").click()
    deadline = time.monotonic() + 5
    while len(downloads) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert sorted(d.suggested_filename for d in downloads) == sorted(
        o["filename"] for o in lib_gate.task(task_id)["outputs"]
    )


@requires_protocol
def test_save_image_websocket_frames_reach_the_gallery(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    task_id = run_recorded(page, lib_gate, tmp_path, "preview_and_ws_image.json")
    page.wait_for_function(
        """id => [...document.querySelectorAll(`.run[data-task-id="${id}"] .ws-frame img`)]
            .filter(i => i.complete && i.naturalWidth === 96).length === 2""",
        arg=task_id,
    )


def test_run_times_n_with_incrementing_and_random_seeds(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.fill(field("3.seed") + " input.seed-value", "100")
    page.fill("#run-times", "3")
    page.select_option("#run-seeds", "increment")
    page.click("#run")
    ids = wait_cards(page, 3)
    assert sorted(lib_gate.wait(i)["params"]["3.seed"] for i in ids) == [100, 101, 102]
    page.select_option("#run-seeds", "random")
    page.click("#run")
    ids = wait_cards(page, 6)[:3]
    assert len({lib_gate.wait(i)["params"]["3.seed"] for i in ids}) == 3


def test_rerun_same_seed_and_new_seed(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.click("#run")
    first = wait_card(page, "completed")
    seed = lib_gate.task(first)["params"]["3.seed"]
    card_of(page, first).get_by_role("button", name="New seed").click()
    new = next(i for i in wait_cards(page, 2) if i != first)
    assert lib_gate.wait(new)["params"]["3.seed"] != seed
    card_of(page, first).get_by_role("button", name="Re-run", exact=True).click()
    same = next(i for i in wait_cards(page, 3) if i not in (first, new))
    assert lib_gate.wait(same)["params"]["3.seed"] == seed
    page.wait_for_selector(f'.run[data-task-id="{same}"] .run-note')  # nothing ran again: said so
    assert "cache" in card_of(page, same).locator(".run-note").inner_text()


def test_a_parameter_sweep_fills_a_labelled_grid(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.click("#sweep")
    page.wait_for_selector("dialog.sweep-dialog[open]")
    page.select_option(".sweep-key >> nth=0", "3.steps")
    page.fill(".sweep-values >> nth=0", "2, 3")
    page.select_option(".sweep-key >> nth=1", "3.cfg")
    page.fill(".sweep-values >> nth=1", "4..8:4")
    assert page.inner_text(".sweep-count") == "4 run(s)"
    page.click(".sweep-run")
    grid = page.locator("article.sweep")
    grid.wait_for()
    page.wait_for_selector('article.sweep[data-status="done"]', timeout=30_000)
    assert [t.inner_text() for t in grid.locator("thead th").all()][1:] == ["4", "8"]
    assert [t.inner_text() for t in grid.locator("tbody th").all()] == ["2", "3"]
    cells = grid.locator("td.sweep-cell").all()
    assert len(cells) == 4
    seeds = set()
    for cell, (steps, cfg) in zip(cells, [(2, 4), (2, 8), (3, 4), (3, 8)], strict=True):
        task = lib_gate.task(cell.get_attribute("data-task-id"))
        assert task["params"]["3.steps"] == steps and task["params"]["3.cfg"] == cfg
        seeds.add(task["params"]["3.seed"])
        assert cell.locator("img.output").count() == 1
    assert len(seeds) == 1  # only the swept values differ
    page.reload()  # the grid comes back, filled from the API
    open_page(page, lib_gate)
    page.wait_for_selector('article.sweep[data-status="done"]')
    assert page.locator("article.sweep td.sweep-cell img.output").count() == 4


def test_dropping_comfyui_outputs_loads_their_workflow(page: Any, lib_gate: Gate) -> None:
    """PNG (from a real run), WebP (EXIF) and MP4 (PyAV, as ComfyUI's SaveVideo writes it)."""
    from PIL import Image

    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    page.click("#run")
    task_id = wait_card(page, "completed")
    out = lib_gate.task(task_id)["outputs"][0]
    png = lib_gate.client.get(out["url"]).content
    load_from_library(page, "sd_txt2img_api.json")
    upload_file(page, "ComfyUI_00001_.png", png, "image/png")
    page.wait_for_function("() => document.querySelector('#wf-info').textContent.includes('ComfyUI_00001_.png')")
    assert page.locator(field("4.filename_prefix")).count() == 1

    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
            "_meta": {"title": "From the WebP"},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "webp"}},
    }
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    exif[0x0110] = "prompt:" + json.dumps(prompt)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", exif=exif)
    upload_file(page, "ComfyUI_00002_.webp", buffer.getvalue(), "image/webp")
    page.wait_for_function("() => document.querySelector('#params').textContent.includes('From the WebP')")

    upload_file(page, "ComfyUI_00003_.mp4", (DATA / "comfyui_video.mp4").read_bytes(), "video/mp4")
    page.wait_for_function("() => document.querySelector('#params').textContent.includes('From the MP4')")
    page.click("#run")
    assert lib_gate.wait(wait_card(page, "completed"))["params"] == {}


def test_tabs_keyboard_live_status_title_and_contrast(page: Any, lib_gate: Gate, emu: Any) -> None:
    """ARIA tabs with arrow keys, run status announced, progress in the title, badges at AA contrast."""
    emu.set_delays(step_delay=0.1)
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.focus("#tab-form")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("() => document.activeElement.id") == "tab-json"
    assert page.get_attribute("#tab-json", "aria-selected") == "true" and page.locator("#panel-json").is_visible()
    page.keyboard.press("ArrowLeft")
    page.focus("#tab-queue")
    page.keyboard.press("End")
    assert page.get_attribute("#tab-health", "aria-selected") == "true"
    page.click("#run")
    page.wait_for_function("() => /^\\d+% · 1 active/.test(document.title)")
    task_id = wait_card(page, "completed")
    page.wait_for_function(
        "id => document.querySelector('#announce').textContent.includes(id.slice(0, 8) + ' completed')", arg=task_id
    )
    page.wait_for_function("() => document.title === 'ComfyGate debugger'")
    ratios = page.evaluate(
        """() => {
            const lum = (c) => {
              const v = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(x => x / 255)
                .map(x => x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4);
              return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
            };
            const out = {};
            for (const s of ['running', 'queued', 'pending', 'completed', 'failed', 'interrupted']) {
              const el = document.createElement('span'); el.className = `status status-${s}`; el.textContent = s;
              document.body.append(el);
              const st = getComputedStyle(el);
              const [a, b] = [lum(st.color), lum(st.backgroundColor)].sort((x, y) => y - x);
              out[s] = (a + 0.05) / (b + 0.05);
              el.remove();
            }
            for (const sel of ['.role-seed', '.role-positive_prompt', '.tab:not(.active)', '.field-node']) {
              const el = document.querySelector(sel); if (!el) continue;
              const st = getComputedStyle(el);
              let bg = st.backgroundColor, p = el;
              while (bg === 'rgba(0, 0, 0, 0)' && p.parentElement) {
                p = p.parentElement;
                bg = getComputedStyle(p).backgroundColor;
              }
              const [a, b] = [lum(st.color), lum(bg)].sort((x, y) => y - x);
              out[sel] = (a + 0.05) / (b + 0.05);
            }
            return out;
        }"""
    )
    low = {k: round(v, 2) for k, v in ratios.items() if v < 4.5}
    assert not low, f"below AA contrast: {low}"


def test_quick_ctrl_enter_presses_each_run(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    for _ in range(3):
        page.keyboard.press("Control+Enter")
    ids = wait_cards(page, 3)
    assert len(set(ids)) == 3


def test_deleting_a_saved_workflow_needs_its_name_typed(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    page.once("dialog", lambda d: d.accept("wrong"))
    page.click("#library-delete")
    page.wait_for_function("() => document.querySelector('#toasts').textContent.includes('nothing deleted')")
    assert lib_gate.client.get("/api/workflow/image_invert_blur_api.json").status_code == 200


def test_input_images_preview_and_missing_ones_are_flagged(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """Low: a LoadImage value already on the backend is previewed; one it lacks is flagged and listed."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (0, 90, 200)).save(buffer, "PNG")
    name = lib_gate.client.post("/api/upload/image", files={"image": ("blue.png", buffer.getvalue(), "image/png")})
    assert name.status_code == 200, name.text
    uploaded = name.json()["name"]
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "nowhere_to_be_found.png"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "q"}},
    }
    open_page(page, lib_gate)
    load_json(page, tmp_path, "two_inputs.json", workflow)
    page.wait_for_function(
        "k => { const i = document.querySelector(`[data-key='${k}'] img.preview`);"
        " return i && !i.hidden && i.complete && i.naturalWidth === 24; }",
        arg="1.image",
    )
    assert "not on the backend" in page.inner_text(field("2.image") + " select")
    assert "nowhere_to_be_found.png" in page.inner_text("#wf-missing")
    assert page.locator(field("2.image") + " img.preview").is_hidden()
