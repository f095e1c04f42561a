"""How outputs reach ComfyGate, end to end: ComfyUI's /view by default, its output folder when told (same host)."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx

from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok
from tests.protocol import load_workflow


def views(emulator: EmulatorThread) -> int:
    return int(httpx.get(f"{emulator.url}/emulator/config", trust_env=False).json()["views"])


def fresh_workflow() -> dict:
    """The recorded EmptyImage → SaveImage with a colour of its own, so ComfyUI's cache never answers."""
    workflow = load_workflow("trivial_save.json")
    workflow["1"]["inputs"]["color"] = random.randrange(1 << 24)
    return workflow


def run(gate: Gate) -> dict:
    task = gate.wait(submit_ok(gate, fresh_workflow())["task_id"])
    assert task["status"] == "completed", task
    return task


def test_by_default_outputs_come_through_view(emulator: EmulatorThread, gate: Gate) -> None:
    before = views(emulator)
    run(gate)
    assert views(emulator) == before + 1


def test_on_the_same_host_outputs_are_taken_from_comfyuis_folder(
    emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    comfy_output = emulator.emulator.dirs.output
    gate = gate_factory([emulator.url], comfyui_output_dir=comfy_output)
    before = views(emulator)
    [output] = run(gate)["outputs"]
    assert views(emulator) == before  # no HTTP download at all
    source = comfy_output / output["comfyui"]["subfolder"] / output["comfyui"]["filename"]
    assert gate.client.get(output["url"]).content == source.read_bytes()
    # A big file (above the in-memory size) is hard-linked into outputs/: no copy.
    httpx.post(f"{emulator.url}/emulator/extra_output", json={"filename": "big.bin", "size": 3 << 20}, trust_env=False)
    try:
        outputs = run(gate)["outputs"]
    finally:
        httpx.post(f"{emulator.url}/emulator/extra_output", json={}, trust_env=False)
    [big] = [o for o in outputs if o["comfyui"]["filename"] == "big.bin"]
    linked = gate.settings.outputs_dir / big["filename"]
    assert big["size"] == 3 << 20 and linked.stat().st_ino == (comfy_output / "big.bin").stat().st_ino
    assert views(emulator) == before


def test_per_backend_folders_by_address(emulator: EmulatorThread, gate_factory: Callable[..., Gate]) -> None:
    address = emulator.url.removeprefix("http://")
    gate = gate_factory([emulator.url], comfyui_output_dirs=f"{address}={emulator.emulator.dirs.output}")
    before = views(emulator)
    run(gate)
    assert views(emulator) == before


def test_names_outside_the_folder_are_not_read_from_it(
    emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    """A hostile ComfyUI names a file outside its output folder: ComfyGate does not read it, /view answers."""
    comfy_output = emulator.emulator.dirs.output
    (comfy_output.parent / "escape.png").write_bytes(b"not an output")
    gate = gate_factory([emulator.url], comfyui_output_dir=comfy_output)
    emulator.emulator.output_name_hook = lambda _name: "../escape.png"
    try:
        before = views(emulator)
        task = gate.wait(submit_ok(gate, fresh_workflow())["task_id"])
    finally:
        emulator.emulator.output_name_hook = None
    assert views(emulator) == before + 1  # fell back to /view, which serves the real output
    if task["status"] == "completed":
        [output] = task["outputs"]
        assert gate.client.get(output["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.read_bytes() == b"not an output" for p in gate.settings.outputs_dir.glob("*") if p.is_file())
