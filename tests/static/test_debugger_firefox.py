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
