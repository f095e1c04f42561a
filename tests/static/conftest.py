"""Fixtures of the debugger's browser tests: one Chromium per module, a fresh context (storage) per test,
and one emulator + ComfyGate per module with the bundled workflows in its library."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorThread
from main import create_app
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import Gate, make_settings, wait_backends_up
from tests.equipment import import_or_missing
from tests.servers import AppServer
from tests.static.pages import TIMEOUT_MS, WORKFLOWS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser for the module."""
    with _playwright().sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(browser: Any) -> Iterator[Any]:
    """A context per test: its own localStorage (the page keeps its workflow and run cards there)."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        page.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@dataclass
class Stack:
    gate: Gate
    emulator: EmulatorThread


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One emulator and one ComfyGate for the module (built like conftest's), to keep the module quick.

    Tests leave no task running, so each starts from an idle backend; the reconnect and backend-down
    tests use conftest's own emulator/gate_factory fixtures because they stop or break their gate.
    """
    tmp = tmp_path_factory.mktemp("debugger")
    emulator = EmulatorThread(base_dir=tmp / "emulator").start()
    server = AppServer(create_app(make_settings(tmp, [emulator.url]))).start()
    settings = server.app.state.settings
    gate = Gate(server, settings, httpx.Client(base_url=server.url, timeout=10.0))
    wait_backends_up(gate)
    for path in WORKFLOWS.glob("*.json"):
        shutil.copy(path, settings.workflows_dir / path.name)
    try:
        yield Stack(gate, emulator)
    finally:
        gate.client.close()
        server.stop()
        emulator.stop()


@pytest.fixture
def emu(stack: Stack) -> EmulatorThread:
    stack.emulator.set_delays(step_delay=0.05)
    return stack.emulator


@pytest.fixture
def lib_gate(stack: Stack, emu: EmulatorThread) -> Gate:
    """The module's gate: the bundled example workflows in its library; sampler steps take 50 ms."""
    return stack.gate


def _playwright() -> Any:
    return import_or_missing("playwright.sync_api")
