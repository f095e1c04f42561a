"""Helpers of the debugger's Chromium tests: open the page, load a workflow, find fields and run cards."""

from __future__ import annotations

import json
from typing import Any

from config import PROJECT_DIR
from tests.browser import CHROMIUM
from tests.conftest import Gate
from tests.equipment import missing

WORKFLOWS = PROJECT_DIR / "workflows"
TIMEOUT_MS = 10_000


def require_chromium() -> None:
    """Skip the calling test module (fail it with CI=true) when Debian's Chromium is not installed."""
    if not CHROMIUM.exists():
        missing(f"Debian's chromium is not installed at {CHROMIUM}", module_level=True)


def example(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


def open_page(page: Any, gate: Gate) -> None:
    page.goto(gate.url + "/")
    page.wait_for_selector("#live.live-open")


def load_from_library(page: Any, name: str) -> None:
    page.wait_for_selector(f'#library-select option[value="{name}"]', state="attached")
    page.select_option("#library-select", name)
    page.wait_for_selector("fieldset.node")
    page.wait_for_function("n => document.querySelector('#wf-info').textContent.includes(n)", arg=name)


def field(key: str) -> str:
    return f'.field[data-key="{key}"]'


def newest_card(page: Any) -> Any:
    return page.locator(".run").first


def wait_card(page: Any, status: str, task_id: str | None = None) -> str:
    selector = f'.run[data-task-id="{task_id}"]' if task_id else ".run"
    page.wait_for_selector(f'{selector}[data-status="{status}"]')
    return task_id or page.locator(f'{selector}[data-status="{status}"]').first.get_attribute("data-task-id")


def task_workflow(gate: Gate, task_id: str) -> dict[str, Any]:
    answer = gate.client.get(f"/api/task/{task_id}", params={"include": "workflow"})
    assert answer.status_code == 200, answer.text
    return answer.json()["workflow"]


def wait_output_image(page: Any, task_id: str) -> None:
    page.wait_for_function(
        """id => {
            const img = document.querySelector(`.run[data-task-id="${id}"] img.output`);
            return img && img.complete && img.naturalWidth > 0;
        }""",
        arg=task_id,
    )
