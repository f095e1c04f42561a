"""Shared fixtures: a real ComfyUI emulator and a real ComfyGate, both on loopback ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from emulator.server import EmulatorThread
from main import create_app
from tests.equipment import missing
from tests.protocol import PROTOCOL_DIR, load_workflow, sd_workflow
from tests.protocol_transcripts import PROTOCOL_MISSING, protocol_available
from tests.servers import AppServer

__all__ = ["PROTOCOL_DIR", "load_workflow", "sd_workflow"]

FINAL = {"completed", "failed", "interrupted", "timeout"}
Emulators = Callable[..., list[EmulatorThread]]


# The ComfyUI generations the emulator plays: the recorded 0.3.64, and a newer server (NEWER-SERVERS.md).
GENERATIONS = ("0.3.64", "0.36")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_generations: run against the emulator as ComfyUI 0.3.64 and as v0.36")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_generations`` that use the ``emulator`` fixture run once per ComfyUI generation."""
    if metafunc.definition.get_closest_marker("both_generations") and "emulator" in metafunc.fixturenames:
        metafunc.parametrize("emulator", GENERATIONS, indirect=True, ids=[f"comfyui-{g}" for g in GENERATIONS])


@pytest.fixture
def protocol_recordings() -> Path:
    """The recorded ComfyUI protocol (``requires_protocol``): skips, or fails with CI=true, without it."""
    if not protocol_available():
        missing(PROTOCOL_MISSING)
    return PROTOCOL_DIR


@pytest.fixture
def emulator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmulatorThread]:
    """The emulator as ComfyUI 0.3.64, or as ``request.param`` ("0.36": the newer-server mode)."""
    newer = getattr(request, "param", GENERATIONS[0]) != GENERATIONS[0]
    emu = EmulatorThread(base_dir=tmp_path / "emulator", newer=newer).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[Emulators]:
    """``emulators(count, **kwargs)`` starts that many more emulators; all stop at the end of the test."""
    started: list[EmulatorThread] = []

    def start(count: int, **kwargs: Any) -> list[EmulatorThread]:
        emus = []
        for _ in range(count):
            emu = EmulatorThread(base_dir=tmp_path / f"emulator-{len(started)}", **kwargs).start()
            started.append(emu)
            emus.append(emu)
        return emus

    yield start
    for emu in started:
        emu.stop()


def history_of(emu: EmulatorThread) -> dict[str, Any]:
    return httpx.get(f"{emu.url}/history", timeout=10).json()


@dataclass
class Gate:
    server: AppServer
    settings: Settings
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def submit(self, workflow: dict[str, Any] | None = None, **body: Any) -> httpx.Response:
        if workflow is not None:
            body["workflow"] = workflow
        return self.client.post("/api/workflow/submit", json=body)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/task/{task_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, task_id: str, statuses: set[str] = FINAL, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout} s: {task}")
            time.sleep(0.02)


def written(path: Path, timeout: float = 2.0) -> bool:
    """Is ``path`` a file, or does it become one within ``timeout``? A small output is written to outputs/
    a few milliseconds after its task completes (tasks/output_fetch.py: served from memory meanwhile)."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def submit_ok(gate: Gate, workflow: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = gate.submit(workflow, **body)
    assert response.status_code == 200, response.text
    return response.json()


def make_settings(tmp_path: Path, servers: list[str], **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "comfyui_server": servers[0],
        "comfyui_servers": servers if len(servers) > 1 else [],
        "workflows_dir": tmp_path / "workflows",
        "uploads_dir": tmp_path / "uploads",
        "outputs_dir": tmp_path / "outputs",
        "data_dir": tmp_path / "data",
        "backend_down_grace": 3.0,
        "_env_file": None,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def gate_factory(tmp_path: Path) -> Iterator[Callable[..., Gate]]:
    started: list[Gate] = []

    def start(servers: list[str], wait_up: bool = True, **overrides: Any) -> Gate:
        gate = start_gate(make_settings(tmp_path, servers, **overrides))
        started.append(gate)
        if wait_up:
            wait_backends_up(gate)
        return gate

    yield start
    for gate in started:
        stop_gate(gate)


def start_gate(settings: Settings) -> Gate:
    """ComfyGate with these settings on a loopback port, without waiting for its backends."""
    server = AppServer(create_app(settings)).start()
    return Gate(server, settings, httpx.Client(base_url=server.url, timeout=10.0))


def stop_gate(gate: Gate) -> None:
    gate.client.close()
    gate.server.stop()


def wait_backends_up(gate: Gate, timeout: float = 5.0) -> None:
    _wait_health(gate, lambda health: health["status"] == "ok", timeout)


def wait_backends_down(gate: Gate, timeout: float = 5.0) -> None:
    """Until ComfyGate has seen every backend go (its WebSocket closed): a submission then waits as pending."""
    _wait_health(gate, lambda health: health["totals"]["healthy"] == 0, timeout)


def _wait_health(gate: Gate, check: Callable[[dict[str, Any]], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(gate.client.get("/api/health").json()):
            return
        time.sleep(0.02)


@pytest.fixture
def gate(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory([emulator.url])
