"""Files through the core routes: uploads under one name, outputs served safely (a just-finished small one
from memory, everything else from disk, the same validators), clear errors for unusable names and images."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok, written
from tests.protocol import load_workflow


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def test_concurrent_uploads_under_one_name_keep_their_own_bytes(gate: Gate, emulator: EmulatorThread) -> None:
    images = [png((i * 20, 255 - i * 20, 7), 8 + i) for i in range(12)]

    def upload(data: bytes) -> dict:
        with httpx.Client(base_url=gate.url, timeout=20) as client:
            response = client.post("/api/upload/image", files={"image": ("race.png", data, "image/png")})
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(upload, images))
    local_names = [a["local_filename"] for a in answers]
    assert len(set(local_names)) == 12, local_names
    for data, answer in zip(images, answers, strict=True):
        assert (gate.settings.uploads_dir / answer["local_filename"]).read_bytes() == data
        stored = httpx.get(f"{emulator.url}/view", params={"filename": answer["name"], "type": "input"}, timeout=10)
        assert stored.content == data, answer  # the name the backend gave is this upload's file
    assert len([p for p in gate.settings.uploads_dir.iterdir() if p.is_file()]) == 12  # (v2 assets: a folder)


def test_active_outputs_are_downloads_and_nothing_is_sniffed(gate: Gate) -> None:
    outputs = gate.settings.outputs_dir
    outputs.mkdir(parents=True, exist_ok=True)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
    for name in ("evil.svg", "evil.html", "evil.xml", "evil.js", "evil.htm"):
        (outputs / name).write_bytes(svg)
        response = gate.client.get(f"/api/image/{name}")
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-disposition"].startswith("attachment"), name
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script" not in csp
    (outputs / "fine.png").write_bytes(png((1, 2, 3)))
    shown = gate.client.get("/api/image/fine.png")
    assert shown.headers["content-type"] == "image/png" and shown.headers["x-content-type-options"] == "nosniff"
    assert shown.headers["content-disposition"].startswith("inline")  # images still show in the debugger


def test_odd_names_and_bad_images_get_clear_messages(gate: Gate) -> None:
    for raw, expected in (("%0a", "control characters"), ("%09x.png", "control characters"), ("%20%20", "only spaces")):
        response = gate.client.get(f"/api/image/{raw}")
        assert response.status_code == 400 and expected in response.json()["message"], response.text
    for data, expected in ((b"not an image at all", "format is not recognised"), (png((9, 9, 9))[:60], "damaged")):
        response = gate.client.post("/api/upload/image", files={"image": ("bad.png", data, "image/png")})
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert expected in message and " at 0x" not in message and "BytesIO" not in message, message


def finished_output(gate: Gate) -> dict:
    task = gate.wait(submit_ok(gate, load_workflow("trivial_save.json"))["task_id"])
    assert task["status"] == "completed", task
    [output] = task["outputs"]
    return output


def test_a_small_output_is_served_from_memory_with_the_files_validators(gate: Gate) -> None:
    output = finished_output(gate)
    on_disk = gate.settings.outputs_dir / output["filename"]
    answer = gate.client.get(output["url"])
    assert answer.status_code == 200 and written(on_disk) and answer.content == on_disk.read_bytes()
    assert answer.headers["content-type"] == "image/png" and int(answer.headers["content-length"]) == output["size"]
    # A Range request is served from the file: same ETag and Last-Modified as the copy in memory.
    ranged = gate.client.get(output["url"], headers={"Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.content == on_disk.read_bytes()[:8]
    assert ranged.headers["etag"] == answer.headers["etag"]
    assert ranged.headers["last-modified"] == answer.headers["last-modified"]
    again = gate.client.get(output["url"], headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    on_disk.unlink()  # tells the two ways apart: the copy in memory still answers
    assert gate.client.get(output["url"]).content == answer.content


def test_without_the_memory_copy_outputs_come_from_disk(
    emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    gate = gate_factory([emulator.url], output_cache_bytes=0)
    output = finished_output(gate)
    on_disk = gate.settings.outputs_dir / output["filename"]
    answer = gate.client.get(output["url"])
    assert answer.status_code == 200 and answer.content == on_disk.read_bytes()
    again = gate.client.get(output["url"], headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    on_disk.unlink()
    assert gate.client.get(output["url"]).status_code == 404


def test_outputs_above_the_memory_size_are_streamed_to_disk(
    emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    gate = gate_factory([emulator.url], output_cache_file_bytes=64)  # the 8x8 PNG is bigger than this
    output = finished_output(gate)
    on_disk = gate.settings.outputs_dir / output["filename"]
    assert output["size"] > 64 and on_disk.stat().st_size == output["size"]
    assert gate.client.get(output["url"]).content == on_disk.read_bytes()
    on_disk.unlink()
    assert gate.client.get(output["url"]).status_code == 404
