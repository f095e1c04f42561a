"""main.py is a factory only: importing it builds no app, and ``uvicorn --factory main:create_app`` serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

import main
from config import PROJECT_DIR
from tests.servers import free_port


def test_importing_main_builds_no_app() -> None:
    assert not hasattr(main, "app")  # a module __getattr__ used to build a new app on every access
    assert not hasattr(main, "__getattr__")


def test_uvicorn_factory_command_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "COMFYUI_COMFYUI_SERVER": f"127.0.0.1:{free_port()}",  # nothing listens there: health says down
        "COMFYUI_DATA_DIR": str(tmp_path / "data"),
        "COMFYUI_OUTPUTS_DIR": str(tmp_path / "outputs"),
        "COMFYUI_UPLOADS_DIR": str(tmp_path / "uploads"),
        "COMFYUI_WORKFLOWS_DIR": str(tmp_path / "workflows"),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "main:create_app", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "uvicorn --factory main:create_app did not answer"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["backends"][0]["healthy"] is False
    finally:
        proc.terminate()
        proc.wait(10)
