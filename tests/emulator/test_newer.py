"""The emulator's newer-server mode (ComfyUI v0.36 as NEWER-SERVERS.md describes it), over real HTTP + WS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import ComfyUIEmulator
from tests.emulator.test_server import WS, http, post, small_chain

__all__ = ["http"]  # test_server's client fixture, on this module's newer emulator

IMAGE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 255}}}


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[ComfyUIEmulator]:
    e = ComfyUIEmulator(base_dir=tmp_path, newer=True, history_max=3)
    await e.start()
    yield e
    await e.stop()


async def test_version_and_jobs_routes_exist_only_when_newer(tmp_path: Path, http: httpx.AsyncClient) -> None:
    assert (await http.get("/system_stats")).json()["system"]["comfyui_version"] == "0.36.0"
    assert (await http.get("/api/jobs")).json() == {
        "jobs": [],
        "pagination": {"offset": 0, "limit": None, "total": 0, "has_more": False},
    }
    old = ComfyUIEmulator(base_dir=tmp_path / "old")
    await old.start()
    try:
        async with httpx.AsyncClient(base_url=old.url) as c:
            assert (await c.get("/system_stats")).json()["system"]["comfyui_version"] == "0.3.64"
            assert (await c.get("/api/jobs")).status_code == 404
    finally:
        await old.stop()


async def test_prompt_id_must_be_a_canonical_uuid(http: httpx.AsyncClient) -> None:
    for bad in ("abc", str(uuid.uuid4()).upper(), uuid.uuid4().hex):
        r = await http.post("/prompt", json={"prompt": IMAGE | _save(), "prompt_id": bad})
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_prompt_id" and r.json()["node_errors"] == {}
    good = str(uuid.uuid4())
    assert await post(http, IMAGE | _save(), prompt_id=good) == good


def _save(node: str = "9", source: str = "1") -> dict[str, Any]:
    return {node: {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": "t"}}}


async def test_jobs_tell_queued_running_done_and_unknown(emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    emu.node_delay = 0.3
    first = await post(http, IMAGE | _save())
    second = await post(http, IMAGE | _save())
    await asyncio.sleep(0.1)
    assert (await http.get(f"/api/jobs/{first}")).json()["status"] == "in_progress"
    assert (await http.get(f"/api/jobs/{second}")).json()["status"] == "pending"
    assert (await http.get(f"/history/{second}")).json() == {}  # the old route cannot tell
    unknown = await http.get(f"/api/jobs/{uuid.uuid4()}")
    assert unknown.status_code == 404
    emu.node_delay = 0
    ws = await WS.open(emu.url, "A")
    await ws.wait_done(second)
    await ws.close()
    job = (await http.get(f"/api/jobs/{second}")).json()
    assert job["status"] == "completed" and job["outputs_count"] == 3
    assert job["outputs"]["9"]["images"][0]["type"] == "output"
    listing = (await http.get("/api/jobs", params={"status": "completed", "limit": 1})).json()
    assert listing["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}


async def test_atomic_cancel_of_queued_and_running_jobs(emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    emu.node_delay = 0.2
    ws = await WS.open(emu.url, "A")
    running = await post(http, small_chain())
    queued = await post(http, small_chain(1))
    await asyncio.sleep(0.05)
    assert (await http.post(f"/api/jobs/{queued}/cancel")).json() == {"cancelled": True}
    assert (await http.post(f"/api/jobs/{queued}/cancel")).json() == {"cancelled": True}  # idempotent
    assert (await http.get(f"/api/jobs/{queued}")).json()["status"] == "cancelled"
    assert (await http.post("/api/jobs/cancel", json={"job_ids": [running]})).json() == {"cancelled": True}
    await ws.wait(lambda m: m["type"] == "execution_interrupted" and m["data"]["prompt_id"] == running)
    await ws.wait_done(running)
    await ws.close()
    assert (await http.get(f"/api/jobs/{running}")).json()["status"] == "cancelled"
    assert (await http.post(f"/api/jobs/{uuid.uuid4()}/cancel")).json() == {"cancelled": False}
    assert (await http.post("/api/jobs/cancel", json={"job_ids": "x"})).status_code == 400


async def test_partial_validation_answers_200_with_node_errors(http: httpx.AsyncClient) -> None:
    prompt = IMAGE | _save() | {"8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    r = await http.post("/prompt", json={"prompt": prompt, "client_id": "A"})
    assert r.status_code == 200
    errors = r.json()["node_errors"]
    assert list(errors) == ["8"] and errors["8"]["errors"][0]["type"] == "required_input_missing"


async def test_history_is_evicted_first_in_first_out(emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    ws = await WS.open(emu.url, "A")
    ids = []
    for _ in range(4):
        ids.append(await post(http, IMAGE | _save()))
        await ws.wait_done(ids[-1])
    await ws.close()
    await asyncio.sleep(0.05)
    history = (await http.get("/history")).json()
    assert list(history) == ids[1:]
    assert (await http.get(f"/history/{ids[0]}")).json() == {}
    assert (await http.get(f"/api/jobs/{ids[0]}")).status_code == 404


async def test_subgraph_ids_get_their_display_node(emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    prompt = {
        "12:5": IMAGE["1"],
        "12:9:3": {"class_type": "SaveImage", "inputs": {"images": ["12:5", 0], "filename_prefix": "s"}},
    }
    ws = await WS.open(emu.url, "A")
    pid = await post(http, prompt)
    await ws.wait_done(pid)
    await ws.close()
    executed = ws.data("executed")[0]
    assert executed["node"] == "12:9:3" and executed["display_node"] == "12"
    states = [s["nodes"]["12:9:3"] for s in ws.data("progress_state") if "12:9:3" in s["nodes"]]
    assert states[-1]["display_node_id"] == "12" and states[-1]["parent_node_id"] == "12:9"
    await asyncio.sleep(0.05)
    meta = (await http.get(f"/history/{pid}")).json()[pid]["meta"]["12:9:3"]
    assert meta["display_node"] == "12" and meta["real_node_id"] == "12:9:3"


async def test_partner_keys_reach_the_server_but_never_its_queue_or_history(
    emu: ComfyUIEmulator, http: httpx.AsyncClient
) -> None:
    ws = await WS.open(emu.url, "A")
    extra = {"api_key_comfy_org": "comfyui-secret", "extra_pnginfo": {"a": 1}}
    pid = await post(http, IMAGE | _save(), extra_data=extra)
    await ws.wait_done(pid)
    await ws.close()
    await asyncio.sleep(0.05)
    assert emu.state.partner_keys_seen == ["api_key_comfy_org"]
    assert "comfyui-secret" not in (await http.get("/history")).text
    assert "comfyui-secret" not in (await http.get(f"/api/jobs/{pid}")).text


OUTPUT_KINDS = {
    # class -> (prompt, node reporting, key, what the entry looks like)
    "SaveWEBM": (
        {
            "2": {
                "class_type": "SaveWEBM",
                "inputs": {"images": ["1", 0], "filename_prefix": "v", "codec": "vp9", "fps": 4, "crf": 32},
            }
        },
        "images",
    ),
    "SaveVideo": (
        {
            "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 4}},
            "2": {
                "class_type": "SaveVideo",
                "inputs": {"video": ["3", 0], "filename_prefix": "video/v", "format": "auto", "codec": "auto"},
            },
        },
        "images",
    ),
    "VHS_VideoCombine": (
        {
            "2": {
                "class_type": "VHS_VideoCombine",
                "inputs": {
                    "images": ["1", 0],
                    "frame_rate": 4,
                    "loop_count": 0,
                    "filename_prefix": "g",
                    "format": "video/webm",
                    "pingpong": False,
                    "save_output": True,
                },
            }
        },
        "gifs",
    ),
    "SaveAudio": (
        {
            "3": {"class_type": "EmulatorTone", "inputs": {"seconds": 0.2, "frequency": 440}},
            "2": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/a"}},
        },
        "audio",
    ),
    "PreviewAudio": (
        {
            "3": {"class_type": "EmulatorTone", "inputs": {"seconds": 0.2, "frequency": 440}},
            "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["3", 0]}},
        },
        "audio",
    ),
    "SaveGLB": (
        {
            "3": {"class_type": "EmulatorMesh", "inputs": {"size": 2}},
            "2": {"class_type": "SaveGLB", "inputs": {"mesh": ["3", 0], "filename_prefix": "mesh/m"}},
        },
        "3d",
    ),
    "PreviewAny": ({"2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}, "text"),
}


@pytest.mark.parametrize("cls", sorted(OUTPUT_KINDS))
async def test_every_output_kind_in_its_real_shape(cls: str, emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    prompt, key = OUTPUT_KINDS[cls]
    ws = await WS.open(emu.url, "A")
    pid = await post(http, IMAGE | prompt)
    await ws.wait_done(pid)
    await ws.close()
    output = ws.data("executed")[-1]["output"]
    assert key in output and "videos" not in output
    if key == "text":
        assert isinstance(output["text"][0], str)
        return
    item = output[key][0]
    if cls in ("SaveWEBM", "SaveVideo"):
        assert output["animated"] == [True]
    if cls == "VHS_VideoCombine":
        assert item["format"] == "video/webm" and item["frame_rate"] == 4 and item["fullpath"]
    view = await http.get(
        "/view", params={"filename": item["filename"], "subfolder": item["subfolder"], "type": item["type"]}
    )
    assert view.status_code == 200 and len(view.content) > 40
    magic = {"images": b"\x1aE\xdf\xa3", "gifs": b"\x1aE\xdf\xa3", "audio": b"RIFF", "3d": b"glTF"}[key]
    assert view.content.startswith(magic)


async def test_preview3d_reports_a_bare_file_name(emu: ComfyUIEmulator, http: httpx.AsyncClient) -> None:
    ws = await WS.open(emu.url, "A")
    mesh = OUTPUT_KINDS["SaveGLB"][0]
    pid = await post(http, mesh | {"4": {"class_type": "Preview3D", "inputs": {"model_file": "mesh/m_00001_.glb"}}})
    await ws.wait_done(pid)
    await ws.close()
    outputs = {d["node"]: d["output"] for d in ws.data("executed")}
    assert outputs["4"]["result"][0] == "mesh/m_00001_.glb"


def test_command_line_flag_starts_a_newer_server(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from tests.servers import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "emulator", "--newer", "--port", str(port), "--base-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                stats = httpx.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "python -m emulator --newer did not come up"
                time.sleep(0.1)
        assert stats["system"]["comfyui_version"] == "0.36.0"
        assert httpx.get(f"http://127.0.0.1:{port}/api/jobs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
