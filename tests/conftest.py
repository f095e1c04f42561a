"""Shared fixtures: a real ComfyUI emulator and a real ComfyGate, both on loopback ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui_emulator import EmulatorThread
from config import Settings
from main import create_app
from tests.protocol import PROTOCOL_DIR, load_workflow
from tests.servers import AppServer

__all__ = ["PROTOCOL_DIR", "load_workflow"]

FINAL = {"completed", "failed", "interrupted", "timeout"}


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorThread]:
    emu = EmulatorThread(base_dir=tmp_path / "emulator").start()
    try:
        yield emu
    finally:
        emu.stop()


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
        settings = make_settings(tmp_path, servers, **overrides)
        server = AppServer(create_app(settings)).start()
        gate = Gate(server, settings, httpx.Client(base_url=server.url, timeout=10.0))
        started.append(gate)
        if wait_up:
            wait_backends_up(gate)
        return gate

    yield start
    for gate in started:
        gate.client.close()
        gate.server.stop()


def wait_backends_up(gate: Gate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = gate.client.get("/api/health").json()
        if health["status"] == "ok":
            return
        time.sleep(0.02)


@pytest.fixture
def gate(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory([emulator.url])
