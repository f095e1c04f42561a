"""Hostile input through the API: names that try to leave their folder, oversized and deep bodies, fake images.

Every path a name takes to the disk is tried: output files served back (``/api/image``), saved workflows
(``workflow_name``, the library), uploads (file name and subfolder), and the names a backend reports for
its outputs (the emulator's ``output_name_hook`` plays a hostile ComfyUI).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect

from tests.conftest import Gate, written
from tests.protocol import load_workflow
from tests.servers import free_port

TRAVERSALS = [
    "../escape.png",
    "../../escape.png",
    "/tmp/escape.png",
    "/etc/passwd",
    "..\\..\\escape.png",
    "sub/../../escape.png",
    "C:\\escape.png",
    "C:escape.png",
    "a\x00b.png",
    "..",
    ".",
    "",
    ".hidden.png",
    "line\nbreak.png",
]


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims to be width x height: a decompression bomb as far as its header goes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def offline(gate_factory: Callable[..., Gate]) -> Gate:
    """A gate whose backend is down: enough for everything refused before a backend is asked."""
    return gate_factory([f"127.0.0.1:{free_port()}"], wait_up=False, max_request_bytes=64 * 1024)


# ------------------------------------------------------------------------------------------ names
def test_image_route_refuses_every_escape(offline: Gate, tmp_path: Path) -> None:
    outputs = offline.settings.outputs_dir
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / "fine.png").write_bytes(png())
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"TOP-SECRET-CONTENT")
    (outputs / "link.png").symlink_to(secret)
    (outputs / "dirlink").symlink_to(tmp_path)
    c = offline.client
    assert c.get("/api/image/fine.png").status_code == 200
    for raw in [
        "/api/image/..%2Fsecret.png",
        "/api/image/%2E%2E%2Fsecret.png",
        "/api/image/..%5Csecret.png",
        "/api/image/%2Ftmp%2Fsecret.png",
        "/api/image/fine.png%00",
        "/api/image/link.png",
        "/api/image/dirlink%2Fsecret.png",
        "/api/image/..",
        "/api/image/.hidden",
        "/api/image/C:secret.png",
        "/api/image/fine.png?type=..%2F..",
        "/api/image/temp?type=output",
    ]:
        response = c.get(httpx.URL(offline.url + raw))
        assert response.status_code in {400, 404, 422}, (raw, response.status_code)
        assert b"TOP-SECRET-CONTENT" not in response.content


def test_saved_workflow_names_cannot_escape(offline: Gate, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(load_workflow("invert_save.json")))
    folder = offline.settings.workflows_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "linked.json").symlink_to(outside)
    for name in [*[n for n in TRAVERSALS if n], "../outside", str(outside), "linked", "linked.json"]:
        response = offline.submit(workflow_name=name)
        assert response.status_code in {400, 404, 422}, (name, response.status_code, response.text)


async def test_library_refuses_escapes_directly(tmp_path: Path) -> None:
    from core.errors import ComfyGateError
    from workflow.library import WorkflowLibrary

    library = WorkflowLibrary(tmp_path / "workflows")
    for name in TRAVERSALS:
        with pytest.raises(ComfyGateError):
            await library.save(name, {"1": {"class_type": "X", "inputs": {}}})
        with pytest.raises(ComfyGateError):
            await library.delete(name)
    assert files_under(tmp_path) == set()


def test_upload_names_and_subfolders_stay_inside(gate: Gate, tmp_path: Path, emulator: Any) -> None:
    before = files_under(tmp_path) - files_under(gate.settings.uploads_dir) - files_under(emulator.emulator.base_dir)
    names = [n for n in TRAVERSALS if n]
    for name in names:
        response = gate.client.post("/api/upload/image", files={"image": (name, png(), "image/png")})
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        for field in ("name", "local_filename"):
            assert "/" not in body[field] and "\\" not in body[field] and "\x00" not in body[field]
            assert not body[field].startswith(".")
        local = gate.settings.uploads_dir / body["local_filename"]
        assert local.is_file() and local.resolve().parent == gate.settings.uploads_dir.resolve()
    for subfolder in ["../x", "/abs", "a/../../b", "..\\x", "a\x00b"]:
        response = gate.client.post(
            "/api/upload/image", files={"image": ("ok.png", png(), "image/png")}, data={"subfolder": subfolder}
        )
        assert response.status_code == 400, (subfolder, response.text)
    after = files_under(tmp_path) - files_under(gate.settings.uploads_dir) - files_under(emulator.emulator.base_dir)
    assert after == before  # nothing written anywhere else
    # and ComfyUI (the emulator) kept every upload in its input folder
    emu_input = emulator.emulator.dirs.input.resolve()
    for path in files_under(emulator.emulator.base_dir):
        assert not path.name.startswith("ok") or path.resolve().is_relative_to(emu_input)


def test_backend_output_names_are_sanitised_before_the_disk(gate: Gate, emulator: Any, tmp_path: Path) -> None:
    hostile = ["../../escape.png", "/tmp/abs_escape.png", "..\\..\\win.png", "a\x00b.png", "..", "", "C:\\c.png"]
    names: Iterator[str] = itertools.cycle(hostile)
    emulator.emulator.output_name_hook = lambda _name: next(names)
    try:
        wf = load_workflow("invert_save.json")
        wf["1"]["inputs"]["batch_size"] = len(hostile)
        wf["1"]["inputs"]["color"] = 123457
        task = gate.wait(gate.submit(wf).json()["task_id"], timeout=20)
    finally:
        emulator.emulator.output_name_hook = None
    assert task["status"] == "completed", task
    assert len(task["outputs"]) == len(hostile)
    outputs = gate.settings.outputs_dir.resolve()
    for output in task["outputs"]:
        name = output["filename"]
        assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
        path = (gate.settings.outputs_dir / name).resolve()
        assert path.parent == outputs and written(path)
        served = gate.client.get(output["url"])
        assert served.status_code == 200 and served.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert {o["comfyui"]["filename"] for o in task["outputs"]} == set(hostile)  # reported as sent, for the record
    escaped = [p for p in tmp_path.rglob("*escape*") if not p.resolve().is_relative_to(outputs)]
    assert escaped == [] and not os.path.exists("/tmp/abs_escape.png")


# ------------------------------------------------------------------------------------------ sizes
def test_content_length_over_the_limit_is_413(offline: Gate) -> None:
    body = b"{" + b" " * (70 * 1024) + b"}"
    response = offline.client.post("/api/workflow/submit", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x", "text/plain"])
def test_streamed_body_over_the_limit_is_413(offline: Gate, content_type: str) -> None:
    def chunks() -> Iterator[bytes]:
        if content_type.startswith("multipart"):  # a well-formed start, so only the size can stop it
            yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 1024

    path = "/api/upload/image" if content_type.startswith("multipart") else "/api/workflow/submit"
    response = offline.client.post(path, content=chunks(), headers={"content-type": content_type})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


def test_upload_over_max_upload_bytes_is_413(gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory([f"127.0.0.1:{free_port()}"], wait_up=False, max_upload_bytes=10_000)
    noise = os.urandom(20_000)  # refused on size before anyone looks at its content
    response = gate.client.post("/api/upload/image", files={"image": ("big.png", noise, "image/png")})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_upload_must_decode_as_an_image(gate: Gate) -> None:
    for data in [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, png()[:60], b"GIF89a" + b"\xff" * 30]:
        response = gate.client.post("/api/upload/image", files={"image": ("x.png", data, "image/png")})
        assert response.status_code == 400, (data[:10], response.text)
    empty = gate.client.post("/api/upload/image", files={"image": ("x.png", b"", "image/png")})
    assert empty.status_code == 400


def test_decompression_bombs_are_413(gate_factory: Callable[..., Gate], emulator: Any) -> None:
    gate = gate_factory([emulator.url], max_image_pixels=100 * 100)
    over = gate.client.post("/api/upload/image", files={"image": ("big.png", png((200, 200)), "image/png")})
    assert over.status_code == 413 and "pixels" in over.json()["message"]
    bomb = png_header_only(100_000, 100_000)  # 10^10 pixels in ~100 bytes: Pillow's own bomb check fires
    assert len(bomb) < 200
    response = gate.client.post("/api/upload/image", files={"image": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413, response.text
    assert gate.client.post("/api/upload/image", files={"image": ("ok.png", png(), "image/png")}).status_code == 200


# ------------------------------------------------------------------------------------------ JSON
@pytest.mark.parametrize("depth", [100_000, 65])
def test_deeply_nested_json_is_refused_not_a_500(gate_factory: Callable[..., Gate], depth: int) -> None:
    offline = gate_factory([f"127.0.0.1:{free_port()}"], wait_up=False)  # default body limit: 64 MiB
    body = "[" * depth + "]" * depth
    for path in ("/api/workflow/submit", "/api/interrupt/x"):
        response = offline.client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "json_too_deep"
    nested = {"params": {"6.text": json.loads("[" * 60 + "]" * 60)}}  # shallow enough in itself...
    nested["params"]["6.text"] = "[" * 70 + "]" * 70  # ...and brackets inside strings do not count
    response = offline.client.post("/api/workflow/submit", json=nested)
    assert response.status_code in {400, 422, 503} and response.json().get("error") != "json_too_deep"


def test_deep_json_without_content_type_and_inside_objects(offline: Gate) -> None:
    deep = '{"workflow": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}"
    for headers in ({}, {"content-type": "application/json; charset=utf-8"}, {"content-type": "application/x+json"}):
        response = offline.client.post("/api/workflow/submit", content=deep, headers=headers)
        assert response.status_code == 422 and response.json()["error"] == "json_too_deep", headers


def test_other_hostile_json(offline: Gate) -> None:
    c = offline.client
    huge_int = '{"workflow_name": "x", "timeout": ' + "9" * 5000 + "}"
    response = c.post("/api/workflow/submit", content=huge_int, headers={"content-type": "application/json"})
    assert response.status_code in {400, 422}
    for body in ['{"workflow": 1e999}', '{"workflow": NaN}', '"\\ud800"', "\xff\xfe", "[]", "null"]:
        response = c.post("/api/workflow/submit", content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)


def test_json_depth_scanner() -> None:
    from security.limits import json_depth, safe_json_loads

    assert json_depth(b'{"a": [1, {"b": "[[[[["}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * 100_000, stop_after=64) == 65
    with pytest.raises(ValueError):
        safe_json_loads("[" * 1000 + "]" * 1000, max_depth=64)
    assert safe_json_loads('{"a": [1]}') == {"a": [1]}


def test_websocket_survives_hostile_messages(gate: Gate) -> None:
    with connect(f"{gate.ws_url}/ws") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send("[" * 100_000)
        ws.send("\x00not json")
        ws.send('{"type": "subscribe", "task_id": ["not", "a", "string"]}')
        ws.send('{"type": "ping"}')
        while True:
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "pong":
                break


# ------------------------------------------------------------------------------------------ merged routes
def test_workflow_library_routes_refuse_escapes(offline: Gate, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    c = offline.client
    for raw in ["..%2Foutside", "..%2F..%2Foutside.json", "%2Ftmp%2Fx", "..%5Coutside", "a%00b", ".hidden", "C:x"]:
        for method in ("GET", "DELETE"):
            response = c.request(method, httpx.URL(f"{offline.url}/api/workflow/{raw}"))
            assert response.status_code in {400, 404, 422}, (method, raw, response.status_code)
    assert outside.is_file()
    for name in ["../escape", "/tmp/escape", "..\\escape", "a\x00b", "C:escape"]:
        response = c.post(
            "/api/workflow/upload",
            files={"file": ("w.json", b'{"1": {"class_type": "EmptyImage", "inputs": {}}}', "application/json")},
            data={"name": name},
        )
        assert response.status_code in {400, 422, 503}, (name, response.status_code, response.text)
    assert not [p for p in tmp_path.rglob("*escape*")]


def test_deep_json_inside_files_and_form_fields_is_a_4xx(offline: Gate) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    c = offline.client
    upload = c.post("/api/workflow/upload", files={"file": ("w.json", deep.encode(), "application/json")})
    assert upload.status_code == 413 or 400 <= upload.status_code < 500  # 64 KiB body limit here, else 400
    small = "[" * 1000 + "]" * 1000  # under the body limit, still far too deep
    upload = c.post("/api/workflow/upload", files={"file": ("w.json", small.encode(), "application/json")})
    assert upload.status_code == 400, upload.text
    for field in ("workflow_api", "params"):
        response = c.post("/api/viewcomfy/infer", data={field: small})
        assert response.status_code == 400, (field, response.status_code, response.text)
