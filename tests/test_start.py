"""The launcher refuses a public bind without API keys unless --insecure; nothing is served here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import start


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
