"""``/api/image``: a just-finished small output answered from memory, everything else from disk, same validators."""

from __future__ import annotations

from collections.abc import Callable

from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok
from tests.protocol import load_workflow


def finished_output(gate: Gate) -> dict:
    task = gate.wait(submit_ok(gate, load_workflow("trivial_save.json"))["task_id"])
    assert task["status"] == "completed", task
    [output] = task["outputs"]
    return output


def test_a_small_output_is_served_from_memory_with_the_files_validators(gate: Gate) -> None:
    output = finished_output(gate)
    on_disk = gate.settings.outputs_dir / output["filename"]
    answer = gate.client.get(output["url"])
    assert answer.status_code == 200 and answer.content == on_disk.read_bytes()
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
