"""The ComfyUI client against the emulator, checked against what a real ComfyUI recorded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backends.comfyui_events import ComfyUIEvent
from comfyui_client import ComfyUIClient, ComfyUIWebSocket, normalise_server
from core.errors import ComfyUINotFound, ComfyUIUnavailable, PostUnsure, PromptRejected
from emulator.server import EmulatorThread
from tests.protocol_transcripts import requires_protocol, transcript, workflow, ws_types
from tests.servers import free_port

pytestmark = requires_protocol


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_server_addresses_are_normalised() -> None:
    assert normalise_server("127.0.0.1:8188") == "http://127.0.0.1:8188"
    assert normalise_server("https://gpu.example/comfy/ ") == "https://gpu.example/comfy"


@pytest.mark.parametrize("fast_post", [True, False])
async def test_prompt_history_and_view_match_the_recording(
    emulator: EmulatorThread, http: httpx.AsyncClient, tmp_path: Path, fast_post: bool
) -> None:
    client = ComfyUIClient(emulator.url, http, fast_post=fast_post)
    recorded = transcript("10_run_success")
    answer = await client.post_prompt(workflow("invert_save"), client_id="c1", prompt_id=f"p-{fast_post}")
    assert set(answer) == set(recorded["post_prompt"]["json"]) and answer["prompt_id"] == f"p-{fast_post}"
    entry: dict = {}
    for _ in range(100):  # history is written a little after the run, as on real ComfyUI
        entry = (await client.get_history(answer["prompt_id"])).get(answer["prompt_id"], {})
        if entry:
            break
        await asyncio.sleep(0.02)
    [recorded_entry] = recorded["history_item"]["json"].values()
    assert set(entry) == set(recorded_entry)
    assert set(entry["status"]) == set(recorded_entry["status"]) and entry["status"]["status_str"] == "success"
    [image] = entry["outputs"]["3"]["images"]
    assert set(image) == {"filename", "subfolder", "type"}
    dest = tmp_path / "downloads"
    dest.mkdir()  # noqa: ASYNC240
    size = await client.download(image["filename"], image["subfolder"], image["type"], dest / "out.png")
    assert (dest / "out.png").stat().st_size == size > 0
    assert sorted(p.name for p in dest.iterdir()) == ["out.png"]  # written beside, then renamed  # noqa: ASYNC240
    with pytest.raises(ComfyUINotFound):
        await client.download("missing.png", "", "output", tmp_path / "missing.png")
    client.close()


async def test_queue_interrupt_info_and_free(emulator: EmulatorThread, http: httpx.AsyncClient) -> None:
    client = ComfyUIClient(emulator.url, http)
    assert await client.get_queue() == transcript("01_basics")["GET /queue (empty)"]["json"]
    assert (await client.get_prompt())["exec_info"]["queue_remaining"] == 0
    stats = await client.system_stats()
    assert set(stats) == set(transcript("01_basics")["GET /system_stats"]["json"])
    info = await client.object_info()
    assert {"EmptyImage", "KSampler", "SaveImage"} <= info.keys()
    emulator.set_delays(node_delay=0.2)
    first = await client.post_prompt(workflow("invert_save"), client_id="c1")
    second = await client.post_prompt(workflow("trivial_save"), client_id="c1")
    await asyncio.sleep(0.05)
    pending = [item[1] for item in (await client.get_queue())["queue_pending"]]
    assert second["prompt_id"] in pending
    await client.delete_from_queue([second["prompt_id"]])
    assert not (await client.get_queue())["queue_pending"]
    await client.interrupt(first["prompt_id"])
    await client.clear_queue()
    await client.free()
    client.close()


async def test_upload_names_follow_comfyui(emulator: EmulatorThread, http: httpx.AsyncClient) -> None:
    client = ComfyUIClient(emulator.url, http)
    recorded = [r["json"]["name"] for r in transcript("02_upload_image")[:3]]
    names = [
        (await client.upload_image("mw_upload.png", data))["name"]
        for data in (png((1, 2, 3)), png((1, 2, 3)), png((200, 2, 3)))
    ]
    assert names == recorded  # same content keeps the name; other content under it gets " (1)"
    client.close()


async def test_validation_error_keeps_comfyui_node_errors(emulator: EmulatorThread, http: httpx.AsyncClient) -> None:
    client = ComfyUIClient(emulator.url, http)
    with pytest.raises(PromptRejected) as caught:
        await client.post_prompt(workflow("invalid_bad_value"))
    error = caught.value
    assert error.error["type"] == "prompt_outputs_failed_validation"
    for node in error.node_errors.values():
        assert set(node) == {"errors", "dependent_outputs", "class_type"}
        assert all({"type", "message", "details", "extra_info"} <= set(e) for e in node["errors"])
    client.close()


@pytest.mark.parametrize("fast_post", [True, False])
async def test_unreachable_server_is_a_typed_error(http: httpx.AsyncClient, fast_post: bool) -> None:
    client = ComfyUIClient(f"127.0.0.1:{free_port()}", http, fast_post=fast_post)
    with pytest.raises(ComfyUIUnavailable) as refused:
        await client.post_prompt(workflow("trivial"))
    assert not isinstance(refused.value, PostUnsure), "nothing left: surely not taken"
    with pytest.raises(ComfyUIUnavailable):
        await client.get_queue()
    client.close()


@pytest.mark.parametrize("fast_post", [True, False])
@pytest.mark.parametrize("answer", ["nothing", "late"])
async def test_a_post_without_an_answer_may_have_been_taken(
    http: httpx.AsyncClient, fast_post: bool, answer: str
) -> None:
    """A server that reads the whole request, then hangs up (or answers after the timeout): the prompt may be
    queued there, so the failure says so (``PostUnsure``), unlike a refused connection."""
    received = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        received.set()
        if answer == "late":
            await asyncio.sleep(1.0)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ComfyUIClient(f"127.0.0.1:{port}", http, fast_post=fast_post, timeout=0.3)
    try:
        with pytest.raises(PostUnsure, match="may have taken it"):
            await client.post_prompt(workflow("trivial"))
        assert received.is_set()
    finally:
        client.close()
        server.close()


async def test_one_websocket_gets_the_recorded_sequence_and_reconnects(
    emulator: EmulatorThread, http: httpx.AsyncClient
) -> None:
    client = ComfyUIClient(emulator.url, http)
    events: list[ComfyUIEvent] = []
    states: list[bool] = []

    async def on_state(up: bool) -> None:
        states.append(up)

    ws = ComfyUIWebSocket(client, events.append, on_state, min_backoff=0.05)
    ws.start()
    await asyncio.wait_for(ws.connected.wait(), 5)
    answer = await client.post_prompt(workflow("invert_save"), client_id=ws.client_id)
    for _ in range(200):
        if any(e.type == "executing" and e.data.get("node") is None for e in events):
            break
        await asyncio.sleep(0.01)
    mine = [e.type for e in events if e.prompt_id == answer["prompt_id"] and e.type != "status"]
    recorded = [t for t in ws_types(transcript("10_run_success")["ws_A_submitter"]) if t != "status"]
    assert mine == recorded
    emulator.drop_websockets()
    for _ in range(200):
        if ws.connects >= 2 and ws.connected.is_set():
            break
        await asyncio.sleep(0.02)
    assert states[:3] == [True, False, True] and ws.connects == 2
    await ws.stop()
    client.close()


async def _burst_server(frames: list[str]) -> asyncio.Server:
    """A WebSocket server that answers the handshake, then writes ``frames`` with one ``write`` (a burst, as
    ComfyUI sends a short run's messages), then keeps the connection open."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        writer.write(b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await reader.read(1024)  # the client's feature_flags: it is listening now
        data = [text.encode() for text in frames]
        writer.write(b"".join(bytes([0x81, 126]) + len(d).to_bytes(2, "big") + d for d in data))
        await reader.read(1024)  # until the client goes

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_an_executed_in_a_burst_is_seen_before_the_frames_in_front_of_it_are_handled(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Its files can be asked for at once; every event is still handled once, in order, and a handler that fails
    on one costs neither the others nor the connection."""
    recorded = [r["msg"] for r in transcript("10_run_success")["ws_A_submitter"] if r["frame"] == "text"]
    assert [m["type"] for m in recorded].index("executed") > 2  # real runs have several frames before it
    server = await _burst_server([json.dumps(m) for m in recorded])
    port = server.sockets[0].getsockname()[1]
    client = ComfyUIClient(f"127.0.0.1:{port}", http)
    seen: list[tuple[str, str]] = []

    def on_event(event: ComfyUIEvent) -> None:
        seen.append(("handled", event.type))
        if event.type == "execution_start":
            raise RuntimeError("a handler bug")

    async def on_state(up: bool) -> None:
        pass

    ws = ComfyUIWebSocket(client, on_event, on_state, on_output=lambda e: seen.append(("output", e.type)))
    ws.start()
    try:
        async with asyncio.timeout(5):
            while len(seen) < len(recorded) + 1:  # noqa: ASYNC110 (a test polls state it does not own)
                await asyncio.sleep(0.01)
        assert seen[0] == ("output", "executed")
        assert seen[1:] == [("handled", m["type"]) for m in recorded]
        assert ws.connects == 1 and ws.connected.is_set()
        assert "handling execution_start" in caplog.text
    finally:
        await ws.stop()
        client.close()
        server.close()


async def test_small_files_come_over_the_kept_connections(emulator: EmulatorThread, http: httpx.AsyncClient) -> None:
    client = ComfyUIClient(emulator.url, http)
    answer = await client.post_prompt(workflow("invert_save"), client_id="c1")
    entry: dict = {}
    while not entry:
        entry = (await client.get_history(answer["prompt_id"])).get(answer["prompt_id"], {})
        await asyncio.sleep(0.01)
    [image] = entry["outputs"]["3"]["images"]
    via_httpx = (await http.get(f"{emulator.url}/view", params=image)).content
    data = await client.fetch_small(image["filename"], image["subfolder"], image["type"], 1 << 20)
    assert data == via_httpx and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert await client.fetch_small(image["filename"], image["subfolder"], image["type"], len(data) - 1) is None
    with pytest.raises(ComfyUINotFound):
        await client.fetch_small("nope.png", "", "output", 1 << 20)
    emulator.restart()  # every kept connection is now dead: a GET is retried once on a new one
    assert await client.fetch_small(image["filename"], image["subfolder"], image["type"], 1 << 20) == data
    client.close()
