"""Every output kind a newer ComfyUI reports: listed on the task, downloaded, served with its type and kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Emulators, Gate, written

IMAGES = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": 4259584}}}
EVERY_KIND: dict[str, Any] = {
    **IMAGES,
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "still"}},
    "3": {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["1", 0],
            "filename_prefix": "anim",
            "fps": 4,
            "lossless": True,
            "quality": 80,
            "method": "default",
        },
    },
    "4": {
        "class_type": "SaveWEBM",
        "inputs": {"images": ["1", 0], "filename_prefix": "clip", "codec": "vp9", "fps": 4, "crf": 32},
    },
    "5": {
        "class_type": "VHS_VideoCombine",
        "inputs": {
            "images": ["1", 0],
            "frame_rate": 4,
            "loop_count": 0,
            "filename_prefix": "vhs",
            "format": "video/webm",
            "pingpong": False,
            "save_output": True,
        },
    },
    "6": {"class_type": "EmulatorTone", "inputs": {"seconds": 0.2, "frequency": 330}},
    "7": {"class_type": "SaveAudio", "inputs": {"audio": ["6", 0], "filename_prefix": "audio/tone"}},
    "8": {"class_type": "PreviewAudio", "inputs": {"audio": ["6", 0]}},
    "10": {"class_type": "EmulatorMesh", "inputs": {"size": 1.5}},
    "11": {"class_type": "SaveGLB", "inputs": {"mesh": ["10", 0], "filename_prefix": "mesh/tri"}},
    "12": {"class_type": "Preview3D", "inputs": {"model_file": "mesh/tri_00001_.glb"}},
    "13": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    "14": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "15": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": "latents/l"}},
}
EXPECTED = {
    # node: (kind, content type, type, animated)
    "2": ("image", "image/png", "output", False),
    "3": ("image", "image/webp", "output", True),
    "4": ("video", "video/webm", "output", True),
    "5": ("video", "video/webm", "output", False),
    "7": ("audio", "audio/wav", "output", False),
    "8": ("audio", "audio/wav", "temp", False),
    "11": ("3d", "model/gltf-binary", "output", False),
    "12": ("3d", "model/gltf-binary", "output", False),
    "13": ("text", "text/plain; charset=utf-8", "output", False),
    "15": ("file", "application/octet-stream", "output", False),
}


@pytest.fixture
def newer_gate(emulators: Emulators, gate_factory: Callable[..., Gate]) -> tuple[Gate, Any]:
    [emu] = emulators(1, newer=True)
    return gate_factory([emu.url]), emu


def test_every_output_kind_round_trips(newer_gate: tuple[Gate, Any]) -> None:
    gate, emu = newer_gate
    response = gate.submit(EVERY_KIND)
    assert response.status_code == 200, response.text
    task = gate.wait(response.json()["task_id"], timeout=30)
    assert task["status"] == "completed", task.get("error")
    outputs: dict[str, list[dict[str, Any]]] = {}
    for output in task["outputs"]:
        outputs.setdefault(output["node_id"], []).append(output)
    assert sorted(outputs, key=int) == sorted(EXPECTED, key=int)
    for node_id, (kind, media_type, folder, animated) in EXPECTED.items():
        entries = outputs[node_id]
        for entry in entries:
            assert (entry["kind"], entry["content_type"], entry["type"]) == (kind, media_type, folder), entry
            assert entry.get("animated", False) is animated
            served = gate.client.get(entry["url"])
            assert served.status_code == 200
            assert served.headers["content-type"].startswith(media_type.split(";")[0])
            assert served.headers["x-content-type-options"] == "nosniff"
            assert len(served.content) == entry["size"] > 0
            path = (gate.settings.outputs_dir if folder == "output" else gate.settings.outputs_dir / "temp") / entry[
                "filename"
            ]
            assert written(path) and path.read_bytes() == served.content
            if kind in ("image", "video", "audio"):
                # shown inline by the debugger
                assert not served.headers.get("content-disposition", "inline").startswith("attachment")
            else:
                assert kind == "text" or served.headers["content-disposition"].startswith("attachment")
            if kind != "text":
                original = entry["comfyui"]
                direct = httpx.get(
                    f"{emu.url}/view", params={k: original[k] for k in ("filename", "subfolder", "type")}
                )
                assert direct.content == served.content  # byte for byte what ComfyUI holds
    assert len(outputs["2"]) == 3  # a batch of three stills
    [vhs] = outputs["5"]
    assert vhs["comfyui"]["format"] == "video/webm" and vhs["comfyui"]["frame_rate"] == 4
    assert "fullpath" not in vhs["comfyui"]
    [text] = outputs["13"]
    assert text["text"].startswith("tensor(") or text["text"]  # PreviewAny's text, inline
    assert gate.client.get(text["url"]).text == text["text"]
    [bare] = outputs["12"]
    assert bare["comfyui"] == {"filename": "tri_00001_.glb", "subfolder": "mesh", "type": "output"}
    assert gate.client.get(bare["url"]).content.startswith(b"glTF")
