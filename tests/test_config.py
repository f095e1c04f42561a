"""Settings read from the environment: the ones whose text needs parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config import Settings


def test_output_folders_per_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_COMFYUI_SERVERS", "127.0.0.1:8188,http://10.0.0.2:8188")
    monkeypatch.setenv("COMFYUI_COMFYUI_OUTPUT_DIRS", "127.0.0.1:8188=/srv/a/output, comfyui-2=/mnt/b=odd")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.output_dir_for("comfyui-1", "127.0.0.1:8188") == Path("/srv/a/output")
    assert settings.output_dir_for("comfyui-1", "http://127.0.0.1:8188/") == Path("/srv/a/output")
    assert settings.output_dir_for("comfyui-2", "http://10.0.0.2:8188") == Path("/mnt/b=odd")
    assert settings.output_dir_for("comfyui-3", "10.0.0.3:8188") is None


def test_output_folders_as_json_and_the_single_backend_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_COMFYUI_OUTPUT_DIRS", '{"comfyui-1": "/a"}')
    assert Settings(_env_file=None).output_dir_for("comfyui-1", "x:1") == Path("/a")  # type: ignore[call-arg]
    monkeypatch.delenv("COMFYUI_COMFYUI_OUTPUT_DIRS")
    monkeypatch.setenv("COMFYUI_COMFYUI_OUTPUT_DIR", "/srv/comfy/output")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.output_dir_for("comfyui-1", settings.servers[0]) == Path("/srv/comfy/output")
    assert Settings(_env_file=None).comfyui_output_dir == Path("/srv/comfy/output")  # type: ignore[call-arg]


def test_a_malformed_list_of_folders_says_how_to_write_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_COMFYUI_OUTPUT_DIRS", "/just/a/folder")
    with pytest.raises(ValidationError, match="server=folder"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_keep_alive_is_longer_than_clients_pools_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).keep_alive_timeout == 75  # type: ignore[call-arg]
    monkeypatch.setenv("COMFYUI_KEEP_ALIVE_TIMEOUT", "5")
    assert Settings(_env_file=None).keep_alive_timeout == 5  # type: ignore[call-arg]
