"""Frame parsing, checked against the frames recorded from a real ComfyUI (shared/comfyui-protocol)."""

from __future__ import annotations

import json
import struct

import pytest

from backends.comfyui_events import MalformedFrame, parse_frame
from tests.equipment import missing
from tests.protocol import PROTOCOL_DIR

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 253  # 261 bytes, as recorded


def recorded_frames(name: str) -> list[dict]:
    path = PROTOCOL_DIR / "transcripts" / name
    if not path.is_file():
        missing(f"shared/comfyui-protocol is not beside the project (no {path})")
    return [f for f in json.loads(path.read_text())["ws_A_submitter"]]


def test_every_recorded_text_frame_parses_with_its_prompt_id() -> None:
    for name in ("10_run_success.json", "11_run_cached_rerun.json", "21_run_runtime_error.json"):
        for frame in recorded_frames(name):
            if frame["frame"] != "text":
                continue
            event = parse_frame(json.dumps(frame["msg"]))
            assert event.type == frame["msg"]["type"]
            if "prompt_id" in frame["msg"]["data"]:
                assert event.prompt_id == frame["msg"]["data"]["prompt_id"]


def test_binary_text_frame_as_recorded() -> None:
    [rec] = [f for f in recorded_frames("12_run_load_scale_blur.json") if f["frame"] != "text"]
    recorded = rec["bin"]
    node, text = recorded["node_id"], recorded["text"]
    frame = struct.pack(">II", 3, len(node)) + node.encode() + text.encode()
    assert len(frame) == recorded["total_len"]
    assert frame[:16].hex() == recorded["first_16_bytes_hex"]
    event = parse_frame(frame)
    assert event.type == "text" and event.data == {"node": node, "text": text}


def test_legacy_preview_frame() -> None:
    frame = struct.pack(">II", 1, 2) + PNG
    assert len(frame) == 269  # recorded total_len
    event = parse_frame(frame)
    assert event.type == "preview" and event.image_type == "image/png" and event.image == PNG
    assert event.prompt_id is None


def test_preview_with_metadata_carries_prompt_and_node() -> None:
    meta = {"node_id": "3", "prompt_id": "977d86f7", "display_node_id": "3", "parent_node_id": None,
            "real_node_id": "3", "image_type": "image/png"}  # fmt: skip
    raw = json.dumps(meta).encode()
    event = parse_frame(struct.pack(">II", 4, len(raw)) + raw + PNG)
    assert event.prompt_id == "977d86f7" and event.data["node_id"] == "3" and event.image == PNG


@pytest.mark.parametrize("frame", [b"\x00", "not json", '["list"]', struct.pack(">II", 4, 50) + b"{"])
def test_malformed_frames_raise(frame: bytes | str) -> None:
    with pytest.raises(MalformedFrame):
        parse_frame(frame)
