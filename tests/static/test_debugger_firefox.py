"""The web debugger in real headless Firefox (Debian's firefox-esr, driven over Marionette).

Playwright needs its own Firefox build, which cannot be downloaded here; Mozilla's own
``marionette-driver`` drives the stock Firefox with no extra binary. One session for the module.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import PROJECT_DIR
from tests.conftest import Gate
from tests.equipment import import_or_missing, missing
from tests.protocol_transcripts import requires_protocol
from tests.protocol_transcripts import workflow as recorded_workflow
from tests.servers import free_port

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
if FIREFOX is None:
    missing("Firefox is not installed (Debian's firefox-esr)", module_level=True)
marionette = import_or_missing("marionette_driver.marionette")
By = import_or_missing("marionette_driver.by").By

PAYLOAD = "<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Firefox's own log goes to a scratch folder (by default Marionette writes gecko.log where pytest runs).
    log = tmp_path_factory.mktemp("firefox") / "gecko.log"
    client = marionette.Marionette(
        host="127.0.0.1", port=free_port(), bin=FIREFOX, headless=True, startup_timeout=60, gecko_log=str(log)
    )
    client.start_session()
    client.set_window_rect(width=1366, height=768)
    try:
        yield client
    finally:
        client.delete_session()
        client.cleanup()


@pytest.fixture
def lib_gate(emulator: Any, gate_factory: Any, tmp_path: Path) -> Gate:
    library = tmp_path / "library"
    shutil.copytree(PROJECT_DIR / "workflows", library)
    emulator.set_delays(step_delay=0.05)
    return gate_factory([emulator.url], workflows_dir=library)


def wait_js(client: Any, script: str, *args: Any, timeout: float = 15.0) -> Any:
    """Poll a JS expression (a function body returning a value) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = client.execute_script(script, script_args=list(args))
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def open_and_load(client: Any, gate: Gate, name: str) -> None:
    client.navigate(gate.url + "/")
    wait_js(client, "return document.querySelector('#live').classList.contains('live-open')")
    wait_js(client, "return document.querySelector(`#library-select option[value='${arguments[0]}']`)", name)
    client.find_element(By.CSS_SELECTOR, f"#library-select option[value='{name}']").click()
    wait_js(client, "return document.querySelector('#wf-info').textContent.includes(arguments[0])", name)


def test_load_edit_run_progress_and_gallery_in_firefox(firefox: Any, lib_gate: Gate) -> None:
    open_and_load(firefox, lib_gate, "sd_txt2img_api.json")
    prompt = firefox.find_element(By.CSS_SELECTOR, '.field[data-key="6.text"] textarea')
    prompt.clear()
    prompt.send_keys("a fox in Firefox")
    steps = firefox.find_element(By.CSS_SELECTOR, '.field[data-key="3.steps"] input')
    steps.clear()
    steps.send_keys("12")
    firefox.find_element(By.CSS_SELECTOR, "#run").click()
    task_id = wait_js(firefox, "return document.querySelector('.run')?.dataset.taskId")
    seen: list[float] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, width = firefox.execute_script(
            "const c = document.querySelector('.run');"
            "const bar = c.querySelector('progress, .bar, [role=progressbar]');"
            "const w = bar ? (bar.value ?? parseFloat(bar.style.width) ?? 0) : 0;"
            "return [c.dataset.status, Number(bar?.getAttribute('aria-valuenow') ?? w) || 0];"
        )
        seen.append(width)
        if status == "completed":
            break
        time.sleep(0.05)
    assert status == "completed", status
    assert max(seen) > 0 and seen == sorted(seen), seen  # the progress bar only ever rises
    wait_js(
        firefox,
        "const img = document.querySelector(`.run[data-task-id='${arguments[0]}'] img.output`);"
        "return img && img.complete && img.naturalWidth > 0",
        task_id,
    )
    task = lib_gate.task(task_id)
    assert task["params"]["6.text"] == "a fox in Firefox" and task["params"]["3.steps"] == 12


def test_injection_is_text_and_validation_lands_on_its_field_in_firefox(firefox: Any, lib_gate: Gate) -> None:
    workflow = json.loads((PROJECT_DIR / "workflows" / "sd_txt2img_api.json").read_text())
    workflow["6"]["_meta"] = {"title": PAYLOAD}
    workflow["6"]["inputs"]["text"] = PAYLOAD
    files = {"file": ("evil.json", json.dumps(workflow), "application/json")}
    assert lib_gate.client.post("/api/workflow/upload", files=files).status_code == 200
    open_and_load(firefox, lib_gate, "evil.json")
    assert PAYLOAD in firefox.execute_script("return document.querySelector('#params').textContent")
    assert firefox.execute_script("return window.__pwned === undefined && !document.querySelector('#params img')")
    steps = firefox.find_element(By.CSS_SELECTOR, '.field[data-key="3.steps"] input')
    steps.clear()
    steps.send_keys("0")  # KSampler steps must be at least 1
    firefox.find_element(By.CSS_SELECTOR, "#run").click()
    message = wait_js(
        firefox,
        "const f = document.querySelector('.field[data-key=\"3.steps\"]');"
        "return f && f.classList.contains('invalid') && f.textContent",
    )
    assert "steps" in message or "1" in message


# ---- round two (issue 20) -------------------------------------------------------------------------


def wait_status(client: Any, task_id: str, status: str = "completed") -> None:
    wait_js(
        client,
        "return document.querySelector(`.run[data-task-id='${arguments[0]}']`)?.dataset.status === arguments[1]",
        task_id,
        status,
    )


def card_ids(client: Any) -> list[str]:
    return client.execute_script(
        "return [...document.querySelectorAll('.run[data-task-id]')].map(c => c.dataset.taskId)"
    )


def test_reload_keeps_edits_and_cards_and_rerun_uses_the_tasks_workflow_in_firefox(
    firefox: Any, lib_gate: Gate
) -> None:
    open_and_load(firefox, lib_gate, "image_invert_blur_api.json")
    prefix = firefox.find_element(By.CSS_SELECTOR, '.field[data-key="4.filename_prefix"] input')
    prefix.clear()
    prefix.send_keys("firefox_kept")
    firefox.find_element(By.CSS_SELECTOR, "#run").click()
    first = wait_js(firefox, "return document.querySelector('.run')?.dataset.taskId")
    wait_status(firefox, first)
    time.sleep(0.4)  # the form is stored 250 ms after the last edit
    firefox.refresh()
    wait_js(firefox, "return document.querySelector('#live').classList.contains('live-open')")
    wait_status(firefox, first)
    assert (
        firefox.execute_script("return document.querySelector('.field[data-key=\"4.filename_prefix\"] input').value")
        == "firefox_kept"
    )
    # another workflow in the form; the card's Re-run still runs its own
    wait_js(firefox, "return document.querySelector(`#library-select option[value='sd_txt2img_api.json']`)")
    firefox.find_element(By.CSS_SELECTOR, "#library-select option[value='sd_txt2img_api.json']").click()
    wait_js(firefox, "return document.querySelector('#wf-info').textContent.includes('sd_txt2img_api.json')")
    firefox.execute_script(
        "[...document.querySelectorAll(`.run[data-task-id='${arguments[0]}'] button`)]"
        ".find(b => b.textContent === 'Re-run').click()",
        script_args=[first],
    )
    wait_js(firefox, "return document.querySelectorAll('.run[data-task-id]').length === 2")
    again = next(i for i in card_ids(firefox) if i != first)
    done = lib_gate.wait(again)
    assert done["status"] == "completed" and done["params"]["4.filename_prefix"] == "firefox_kept"
    workflows = [
        lib_gate.client.get(f"/api/task/{t}", params={"include": "workflow"}).json()["workflow"] for t in (first, again)
    ]
    assert {k: v["class_type"] for k, v in workflows[0].items()} == {
        k: v["class_type"] for k, v in workflows[1].items()
    }


@requires_protocol
def test_text_output_lightbox_and_history_search_in_firefox(firefox: Any, lib_gate: Gate) -> None:
    trivial = recorded_workflow("trivial")
    answer = lib_gate.submit(trivial).json()
    text = lib_gate.wait(answer["task_id"])["node_outputs"]["2"]["text"][0]
    open_and_load(firefox, lib_gate, "image_invert_blur_api.json")
    firefox.find_element(By.CSS_SELECTOR, "#tab-history").click()
    wait_js(
        firefox, "return document.querySelector(`.history-item[data-task-id='${arguments[0]}']`)", answer["task_id"]
    )
    firefox.execute_script(
        "[...document.querySelectorAll(`.history-item[data-task-id='${arguments[0]}'] button`)]"
        ".find(b => b.textContent === 'Open').click()",
        script_args=[answer["task_id"]],
    )
    shown = wait_js(
        firefox,
        "return document.querySelector(`.run[data-task-id='${arguments[0]}'] .output-text pre`)?.textContent",
        answer["task_id"],
    )
    assert shown == text
    search = firefox.find_element(By.CSS_SELECTOR, ".history-search")
    search.send_keys(answer["task_id"][:8])
    wait_js(firefox, "return document.querySelector('.history-count').textContent === '1–1 of 1 task(s)'")

    firefox.find_element(By.CSS_SELECTOR, "#run").click()
    task_id = wait_js(
        firefox, "return document.querySelector('.run .thumb') && document.querySelector('.run').dataset.taskId"
    )
    wait_status(firefox, task_id)
    wait_js(
        firefox, "const i = document.querySelector('.run .thumb img'); return i && i.complete && i.naturalWidth > 0"
    )
    firefox.find_element(By.CSS_SELECTOR, ".run .thumb").click()
    wait_js(firefox, "return document.querySelector('dialog.lightbox').open")
    assert firefox.execute_script("return document.querySelector('.lightbox-img').naturalWidth") > 0


def test_drop_a_comfyui_png_and_run_a_sweep_in_firefox(firefox: Any, lib_gate: Gate) -> None:
    import base64

    first = lib_gate.submit(workflow_name="image_invert_blur_api.json").json()["task_id"]
    png = lib_gate.client.get(lib_gate.wait(first)["outputs"][0]["url"]).content
    open_and_load(firefox, lib_gate, "sd_txt2img_api.json")
    firefox.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'ComfyUI_00001_.png', {type: 'image/png'}));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));""",
        script_args=[base64.b64encode(png).decode()],
    )
    wait_js(firefox, "return document.querySelector('.field[data-key=\"4.filename_prefix\"]')")
    firefox.find_element(By.CSS_SELECTOR, "#sweep").click()
    wait_js(firefox, "return document.querySelector('dialog.sweep-dialog').open")
    firefox.execute_script(
        """const [a, b] = document.querySelectorAll('.sweep-key');
        a.value = '3.blur_radius'; a.dispatchEvent(new Event('change'));
        document.querySelectorAll('.sweep-values')[0].value = '1, 2, 3';
        document.querySelectorAll('.sweep-values')[0].dispatchEvent(new Event('input'));"""
    )
    assert firefox.execute_script("return document.querySelector('.sweep-count').textContent") == "3 run(s)"
    firefox.find_element(By.CSS_SELECTOR, ".sweep-run").click()
    wait_js(firefox, "return document.querySelector('article.sweep')?.dataset.status === 'done'", timeout=30)
    cells = firefox.execute_script(
        "return [...document.querySelectorAll('article.sweep td.sweep-cell')]"
        ".map(c => [c.dataset.taskId, !!c.querySelector('img.output')])"
    )
    assert len(cells) == 3 and all(has_image for _, has_image in cells)
    assert [lib_gate.task(t)["params"]["3.blur_radius"] for t, _ in cells] == [1, 2, 3]


def test_unknown_nodes_seed_control_and_run_times_in_firefox(firefox: Any, lib_gate: Gate) -> None:
    workflow = json.loads((PROJECT_DIR / "workflows" / "sd_txt2img_api.json").read_text())
    workflow["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    firefox.navigate(lib_gate.url + "/")
    wait_js(firefox, "return document.querySelector('#live').classList.contains('live-open')")
    firefox.execute_script(
        """const dt = new DataTransfer();
        dt.items.add(new File([arguments[0]], 'needs_nodes.json', {type: 'application/json'}));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));""",
        script_args=[json.dumps(workflow)],
    )
    text = wait_js(firefox, "const b = document.querySelector('#wf-missing'); return !b.hidden && b.textContent")
    assert "FancyUpscaler" in text
    assert firefox.execute_script("return document.querySelector('#run').disabled") is True

    open_and_load(firefox, lib_gate, "sd_txt2img_ui.json")  # its KSampler seed is marked "fixed"
    assert (
        firefox.execute_script("return document.querySelector('[data-key=\"3.seed\"] select.seed-mode').value")
        == "fixed"
    )
    times = firefox.find_element(By.CSS_SELECTOR, "#run-times")
    times.clear()
    times.send_keys("2")
    firefox.execute_script("const s = document.querySelector('#run-seeds'); s.value = 'increment';")
    firefox.find_element(By.CSS_SELECTOR, "#run").click()
    wait_js(firefox, "return document.querySelectorAll('.run[data-task-id]').length === 2")
    seeds = sorted(lib_gate.wait(t)["params"]["3.seed"] for t in card_ids(firefox))
    assert seeds == [42, 43]
