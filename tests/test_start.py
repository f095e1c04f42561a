"""The launcher refuses a public bind without API keys unless --insecure; nothing is served here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import start
from tests.servers import free_port

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """uvicorn.run replaced by a recorder; no .env and no COMFYUI_ variables from the outside."""
    monkeypatch.chdir(tmp_path)
    for name in ("COMFYUI_API_KEYS", "COMFYUI_HOST", "COMFYUI_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMFYUI_WORKFLOWS_DIR", str(tmp_path / "workflows"))
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, **kwargs: Any) -> None:
        calls.append(kwargs)

    monkeypatch.setattr(start.uvicorn, "run", fake_run)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_public_bind_without_keys_is_refused(
    host: str, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert start.main(["--host", host]) == 2
    assert served == []
    assert "COMFYUI_API_KEYS" in capsys.readouterr().err


def test_host_from_the_environment_counts_too(served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_HOST", "0.0.0.0")
    assert start.main([]) == 2 and served == []


@pytest.mark.parametrize("keys", ["", " , ", ","])
def test_blank_keys_are_no_keys(keys: str, served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_API_KEYS", keys)
    assert start.main(["--host", "0.0.0.0"]) == 2 and served == []


def test_insecure_allows_it(served: list[dict[str, Any]]) -> None:
    assert start.main(["--host", "0.0.0.0", "--insecure", "--port", "8123"]) == 0
    assert served[0]["host"] == "0.0.0.0" and served[0]["port"] == 8123


def test_keys_allow_it(served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_API_KEYS", "a-long-random-key,another-long-key")
    assert start.main(["--host", "0.0.0.0"]) == 0 and served[0]["host"] == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_keys(host: str, served: list[dict[str, Any]]) -> None:
    assert start.main(["--host", host]) == 0 and served[0]["host"] == host


def test_is_loopback() -> None:
    assert start.is_loopback("127.0.0.1") and start.is_loopback("::1") and start.is_loopback("localhost")
    assert not start.is_loopback("0.0.0.0") and not start.is_loopback("::") and not start.is_loopback("10.0.0.1")
    assert not start.is_loopback("localhost.evil.example")


def idle_close_after(port: int, idle: float) -> bool:
    """Send one keep-alive request, stay idle ``idle`` seconds: has the server closed the connection?"""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        while len(body) < length:
            body += sock.recv(65536)
        time.sleep(idle)
        sock.settimeout(0.5)
        try:
            return sock.recv(1) == b""
        except TimeoutError:
            return False


@pytest.mark.parametrize(("setting", "idle", "closed"), [(None, 6.0, False), ("1", 2.0, True)])
def test_idle_keep_alive_connections_outlive_clients_pools(
    tmp_path: Path, setting: str | None, idle: float, closed: bool
) -> None:
    """Started the way users start it: uvicorn's 5 s default would close the first one (a pool's reset)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYUI_")}
    env.update({"COMFYUI_DATA_DIR": str(tmp_path / "data"), "COMFYUI_OUTPUTS_DIR": str(tmp_path / "out")})
    env.update({"COMFYUI_WORKFLOWS_DIR": str(tmp_path / "wf"), "COMFYUI_UPLOADS_DIR": str(tmp_path / "up")})
    env["COMFYUI_COMFYUI_SERVER"] = f"127.0.0.1:{free_port()}"  # nothing there: ComfyGate runs anyway
    if setting is not None:
        env["COMFYUI_KEEP_ALIVE_TIMEOUT"] = setting
    proc = subprocess.Popen(
        [sys.executable, "start.py", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "ComfyGate did not start"
                time.sleep(0.1)
        assert idle_close_after(port, idle) is closed
    finally:
        proc.terminate()
        proc.wait(10)
