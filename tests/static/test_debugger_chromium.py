"""The web debugger (static/) in a real headless Chromium, against a real ComfyGate and the ComfyUI emulator.

One browser for the module; each test gets a fresh page at 1366x768 and fails on any uncaught page error.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from emulator.server import EmulatorThread
from main import create_app
from tests.conftest import Gate
from tests.equipment import import_or_missing
from tests.servers import AppServer, free_port
from tests.static.pages import (
    WORKFLOWS,
    example,
    field,
    load_from_library,
    newest_card,
    open_page,
    require_chromium,
    task_workflow,
    wait_card,
    wait_output_image,
)

require_chromium()
sync_api = import_or_missing("playwright.sync_api")

PAYLOAD = "<img src=x onerror=window.__pwned=1>"


# --------------------------------------------------------------------------------------------------


def test_file_picker_edit_run_progress_and_gallery(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    open_page(page, lib_gate)
    page.set_input_files("#file-input", str(WORKFLOWS / "sd_txt2img_api.json"))
    page.wait_for_selector(field("6.text") + " textarea")
    # the right widgets, and where each field comes from
    assert "KSampler #3" in page.inner_text(field("3.seed") + " label")  # an essential: its node named
    assert page.locator(field("3.sampler_name") + " select").count() == 1
    assert page.locator(field("3.denoise") + ' input[type="range"]').count() == 1
    assert page.locator(field("3.steps") + ' input[type="number"]').get_attribute("min") == "1"

    page.fill(field("6.text") + " textarea", "a red bicycle against a blue wall")
    page.fill(field("3.seed") + " input.seed-value", "12345")
    assert page.locator(field("3.seed") + " select.seed-mode").input_value() == "fixed"
    page.click("#run")

    card = newest_card(page)
    card.wait_for()
    task_id = card.get_attribute("data-task-id")
    seen: list[float] = []
    texts: set[str] = set()
    elapsed: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = card.evaluate(
            """c => [c.dataset.status, c.querySelector('progress').value,
                     c.querySelector('.progress-text').textContent, c.querySelector('.elapsed').textContent]"""
        )
        if state[0] == "completed":
            break
        if not seen or state[1] != seen[-1]:
            seen.append(state[1])
        texts.add(state[2])
        if state[0] == "running":
            elapsed.append(state[3])
        time.sleep(0.03)
    assert seen == sorted(seen), f"the progress bar went backwards: {seen}"
    assert len([v for v in seen if 0 < v < 100]) >= 3, f"no visible progress between 0 and 100: {seen}"
    steps = [t for t in texts if re.search(r"#3 KSampler · step \d+/20", t)]
    assert len(steps) >= 2, f"the current node and step are not shown: {texts}"
    assert len(set(elapsed)) >= 3, f"the elapsed time does not tick: {elapsed}"
    wait_card(page, "completed", task_id)
    wait_output_image(page, task_id)
    assert "seed 12345" in card.locator(".params-used summary").inner_text()

    task = lib_gate.task(task_id)
    assert task["params"] == {"6.text": "a red bicycle against a blue wall", "3.seed": 12345}


def test_library_ui_format_json_tab_and_save(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_ui.json")
    assert "UI format" in page.inner_text("#wf-info")
    assert page.locator(field("6.text") + " textarea").count() == 1

    # raw JSON editing of the API workflow
    page.click('.tab[data-tab="json"]')
    text = page.input_value("#json-editor")
    api = json.loads(text)
    assert api["3"]["class_type"] == "KSampler"
    api["3"]["inputs"]["steps"] = 7
    page.fill("#json-editor", json.dumps(api))
    page.click("#json-apply")
    page.click('.tab[data-tab="form"]')
    page.wait_for_function("() => document.querySelector('[data-key=\"3.steps\"] input').value === '7'")

    # save it back under a new name: it joins the library
    page.fill("#wf-name", "my_txt2img")
    page.click("#save")
    page.wait_for_selector('#library-select option[value="my_txt2img.json"]', state="attached")
    saved = lib_gate.client.get("/api/workflow/my_txt2img.json").json()
    assert saved["workflow"]["3"]["inputs"]["steps"] == 7

    # new default values for the same saved workflow
    page.wait_for_function("() => document.querySelector('#wf-info').textContent.includes('my_txt2img.json')")
    page.fill(field("3.steps") + " input", "9")
    page.click("#save")
    deadline = time.monotonic() + 10
    while lib_gate.client.get("/api/workflow/my_txt2img.json").json()["workflow"]["3"]["inputs"]["steps"] != 9:
        assert time.monotonic() < deadline, "the new default was not saved"
        time.sleep(0.05)


def test_several_runs_at_once_each_with_its_card(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    for _ in range(3):
        page.click("#run")
        page.wait_for_function("n => document.querySelectorAll('.run').length >= n", arg=_ + 1)
    ids = [el.get_attribute("data-task-id") for el in page.locator(".run").all()]
    assert len(set(ids)) == 3
    for task_id in ids:
        wait_card(page, "completed", task_id)
        wait_output_image(page, task_id)


def test_interrupt_a_long_run(page: Any, lib_gate: Gate, emu: EmulatorThread) -> None:
    emu.set_delays(step_delay=0.3)  # 20 steps: 6 s
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.click("#run")
    card = newest_card(page)
    task_id = wait_card(page, "running")
    page.wait_for_function("() => document.querySelector('.run .progress-text')?.textContent.includes('step')")
    card.get_by_role("button", name="Interrupt").click()
    wait_card(page, "interrupted", task_id)
    assert card.get_by_role("button", name="Interrupt").is_hidden()
    assert lib_gate.task(task_id)["status"] == "interrupted"


def test_parameter_out_of_range_lands_on_its_field(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "sd_txt2img_api.json")
    page.fill(field("3.steps") + " input", "0")
    page.click("#run")
    page.wait_for_selector(field("3.steps") + ".invalid")
    message = page.inner_text(field("3.steps") + " .field-error")
    assert "steps" in message and "1" in message, message
    assert "parameters" in page.inner_text("#form-errors")
    assert page.locator(".run").count() == 0
    # fixing the value clears the mark, and the run goes through
    page.fill(field("3.steps") + " input", "4")
    assert page.locator(field("3.steps") + ".invalid").count() == 0
    page.click("#run")
    wait_card(page, "completed")


def test_comfyui_node_error_lands_on_its_node(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    workflow = example("sd_txt2img_api.json")
    workflow["4"]["inputs"]["ckpt_name"] = "no_such_model.safetensors"
    path = tmp_path / "missing_model.json"
    path.write_text(json.dumps(workflow))
    open_page(page, lib_gate)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(field("4.ckpt_name"))
    assert "not on the backend" in page.inner_text(field("4.ckpt_name") + " select")
    page.click("#run")
    page.wait_for_selector(field("4.ckpt_name") + ".invalid")
    assert "ComfyUI refused" in page.inner_text("#form-errors")
    assert "no_such_model" in page.inner_text(field("4.ckpt_name") + " .field-error")


def test_outputs_comfyui_dropped_are_shown_on_the_run_card(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    """A 200 with node_errors: the run goes on without SaveImage 4 (fed a MASK), and its card says so."""
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "kept"}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "dropped"}},
    }
    path = tmp_path / "partly_valid.json"
    path.write_text(json.dumps(workflow))
    open_page(page, lib_gate)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(field("2.filename_prefix"))
    page.click("#run")
    task_id = wait_card(page, "completed")
    warning = page.inner_text(f'.run[data-task-id="{task_id}"] .run-warnings')
    assert "outputs dropped by ComfyUI" in warning and "node 4 (SaveImage)" in warning, warning
    wait_output_image(page, task_id)


def test_runtime_error_names_the_node(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    load_from_library(page, "image_invert_blur_api.json")
    page.fill(field("4.filename_prefix") + " input", "../../outside")  # SaveImage refuses it while running
    page.click("#run")
    task_id = wait_card(page, "failed")
    error = page.inner_text(f'.run[data-task-id="{task_id}"] .run-error')
    assert "node #4 (SaveImage)" in error and "outside the output folder" in error, error
    page.wait_for_selector('fieldset.node.runtime-error[data-node-id="4"]')
    assert task_id[:8] in page.inner_text('fieldset.node[data-node-id="4"] .node-error')


def test_websocket_reconnects_by_itself(page: Any, gate_factory: Any, emulator: Any) -> None:
    gate = gate_factory([emulator.url])
    open_page(page, gate)
    port = gate.server.port
    gate.server.stop()
    page.wait_for_selector("#live.live-closed")
    again = AppServer(create_app(gate.settings), port=port).start()
    try:
        page.wait_for_selector("#live.live-open", timeout=15_000)
        page.wait_for_selector("#banner", state="hidden")
    finally:
        again.stop()


def test_titles_and_prompts_are_text_not_html(page: Any, lib_gate: Gate) -> None:
    workflow = example("sd_txt2img_api.json")
    workflow["3"]["_meta"]["title"] = PAYLOAD
    workflow["6"]["_meta"]["title"] = PAYLOAD
    workflow["6"]["inputs"]["text"] = "<script>window.__pwned=2</script>" + PAYLOAD
    open_page(page, lib_gate)
    # loaded by drag and drop
    page.evaluate(
        """text => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], '<b>evil</b>.json', {type: 'application/json'}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        json.dumps(workflow),
    )
    page.wait_for_selector(field("6.text"))
    assert PAYLOAD in page.inner_text(field("6.text") + " .field-node")  # the node's title, as text
    assert page.input_value(field("6.text") + " textarea").startswith("<script>")
    assert "<b>evil</b>.json" in page.inner_text("#wf-info")
    page.click("#run")
    page.wait_for_function("p => document.querySelector('.run .progress-text')?.textContent.includes(p)", arg=PAYLOAD)
    wait_card(page, "completed")
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator('img[src="x"], script:not([src]), b').count() == 0


def test_image_picker_uploads_and_previews(page: Any, lib_gate: Gate, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "red square.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (220, 30, 30)).save(buffer, "PNG")
    picture.write_bytes(buffer.getvalue())
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Input"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "picked"}},
    }
    path = tmp_path / "load_image.json"
    path.write_text(json.dumps(workflow))
    open_page(page, lib_gate)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(field("1.image") + " .image-picker")
    page.set_input_files(field("1.image") + " input.image-file", str(picture))
    page.wait_for_function(
        "k => { const i = document.querySelector(`[data-key='${k}'] img.preview`); return i && !i.hidden"
        " && i.complete && i.naturalWidth === 64; }",
        arg="1.image",
    )
    chosen = page.input_value(field("1.image") + " select")
    assert chosen.endswith(".png") and "red" in chosen
    page.click("#run")
    task_id = wait_card(page, "completed")
    wait_output_image(page, task_id)
    assert lib_gate.task(task_id)["params"]["1.image"] == chosen


def test_history_rerun_and_open_outputs(page: Any, lib_gate: Gate) -> None:
    answer = lib_gate.submit(workflow_name="sd_txt2img_api.json", params={"6.text": "from history", "3.seed": -1})
    assert answer.status_code == 200, answer.text
    first = lib_gate.wait(answer.json()["task_id"])
    assert first["status"] == "completed"
    seed = first["params"]["3.seed"]

    open_page(page, lib_gate)
    page.click('.tab[data-side="history"]')
    item = page.locator(f'.history-item[data-task-id="{first["task_id"]}"]')
    item.wait_for()
    assert item.locator(".status").text_content() == "completed"
    item.get_by_role("button", name="Open").click()
    wait_output_image(page, first["task_id"])

    item.get_by_role("button", name="Re-run").click()
    page.wait_for_function("() => document.querySelectorAll('.run').length === 2")
    new_id = newest_card(page).get_attribute("data-task-id")
    assert new_id != first["task_id"]
    wait_card(page, "completed", new_id)
    again = lib_gate.task(new_id)
    assert again["params"] == {"6.text": "from history", "3.seed": seed}  # 64-bit seed kept exact
    assert task_workflow(lib_gate, new_id) == task_workflow(lib_gate, first["task_id"])  # the task's own


def test_queue_panel_lists_and_interrupts(page: Any, lib_gate: Gate, emu: EmulatorThread) -> None:
    emu.set_delays(step_delay=0.3)
    running = lib_gate.submit(workflow_name="sd_txt2img_api.json").json()["task_id"]
    waiting = lib_gate.submit(workflow_name="sd_txt2img_api.json").json()["task_id"]
    open_page(page, lib_gate)
    page.wait_for_selector(".queue-item")
    assert "1 running · 1 pending" in page.inner_text("#queue-panel")
    page.once("dialog", lambda d: d.accept())  # it asks first
    page.get_by_role("button", name="Clear all").click()
    page.wait_for_function("() => document.querySelector('#toasts').textContent.includes('cancelled 2 task(s)')")
    assert lib_gate.wait(waiting)["status"] == "interrupted"
    assert lib_gate.wait(running)["status"] == "interrupted"
    page.wait_for_function("() => document.querySelector('#queue-panel').textContent.includes('0 running · 0 pending')")


def test_unreachable_backend_shows_a_banner(page: Any, gate_factory: Any) -> None:
    gate = gate_factory([f"127.0.0.1:{free_port()}"], wait_up=False)
    open_page(page, gate)
    page.wait_for_selector("#banner:not([hidden])")
    assert "No ComfyUI backend is reachable" in page.inner_text("#banner")
    assert "down" in page.inner_text("#backend-pills")


def test_api_key_dialog_once_then_bearer_and_token(page: Any, gate_factory: Any, emulator: Any) -> None:
    """With COMFYUI_API_KEYS on: one dialog for every refused request, then header, ?token= and blob images."""
    gate = gate_factory([emulator.url], api_keys=["sekrit"])
    for path in WORKFLOWS.glob("*.json"):
        shutil.copy(path, gate.settings.workflows_dir / path.name)
    refused: list[str] = []
    page.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
    page.goto(gate.url + "/")
    page.wait_for_selector("#key-dialog[open]")
    page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.includes('/api/queue'))")
    page.wait_for_timeout(200)  # every first call has been refused by now; still one dialog
    assert len(refused) >= 2, refused
    page.fill("#key-input", "sekrit")
    page.get_by_role("button", name="Use key").click()
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    assert page.evaluate("() => sessionStorage.getItem('comfygate.apiKey')") == "sekrit"
    page.wait_for_function("() => window.comfygate.socket.ws?.url.includes('token=sekrit')")
    page.wait_for_selector("#live.live-open")
    load_from_library(page, "image_invert_blur_api.json")
    page.click("#run")
    task_id = wait_card(page, "completed")
    wait_output_image(page, task_id)  # /api/image needs the key too: fetched with it, shown as a blob
    assert page.get_attribute(f'.run[data-task-id="{task_id}"] img.output', "src").startswith("blob:")


def test_big_seeds_survive_the_round_trip(page: Any, lib_gate: Gate) -> None:
    open_page(page, lib_gate)
    big = 18446744073709551610
    text = json.dumps({"a": big, "b": [1.5, -12, "x 12345678901234567890"], "c": 9007199254740993})
    back = page.evaluate(
        """async text => {
            const m = await import('/static/js/api.js');
            return m.stringifyJSON(m.parseJSON(text));
        }""",
        text,
    )
    assert json.loads(back) == json.loads(text)
