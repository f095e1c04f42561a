"""ComfyGate as ViewComfy's current central API, driven exactly as the current published client drives it.

``PublishedClient`` makes the published client's calls (form fields, headers, socket.io options,
exact-key result objects); raw httpx and python-socketio calls check the edges (auth, Origin, links,
bad input). A real ComfyUI emulator runs the workflows.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from PIL import Image
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from backends.viewcomfy.current_protocol import RECORD_KEYS
from tests.conftest import Gate
from tests.protocol import load_workflow, sd_workflow
from tests.viewcomfy_published_client import ClientError, PromptResult, PublishedClient

CLIENT_ID = "vc-id"
CLIENT_SECRET = "vc-secret"
API_KEY = "key-for-tests-0123456789"
DEPLOYMENT = "https://viewcomfy.example/my-deployment"


@pytest.fixture
def vgate(emulator: Any, gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory(
        [emulator.url],
        viewcomfy_server_client_id=CLIENT_ID,
        viewcomfy_server_client_secret=CLIENT_SECRET,
        viewcomfy_keepalive=0.1,
    )


def client(gate: Gate, secret: str = CLIENT_SECRET) -> PublishedClient:
    return PublishedClient(gate.url, CLIENT_ID, secret)


def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "input_img.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(path, "PNG")
    return path


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def download(url: str) -> httpx.Response:
    """What main.py does with each output: a plain GET, no credentials, no redirect."""
    async with httpx.AsyncClient() as plain:
        return await plain.get(url)


async def test_infer_schedules_at_once_and_infer_info_returns_links(vgate: Gate) -> None:
    vc = client(vgate)
    params = {"3-inputs-seed": 7, "_3-node-class_type-info": "KSampler"}
    scheduled = await vc.infer(params=params, view_comfy_api_url=DEPLOYMENT, override_workflow_api=sd_workflow(4))
    assert scheduled.prompt_id == vc.last_prompt_id
    task_id = uuid.UUID(scheduled.prompt_id).hex
    assert task_id in scheduled.message and scheduled.workflow == "workflow_api"
    task = vgate.wait(task_id)
    assert task["status"] == "completed" and task["source"] == "viewcomfy", task
    assert task["params"]["3.seed"] == 7

    second = await vc.infer(
        params={"3-inputs-seed": 8}, view_comfy_api_url=DEPLOYMENT, override_workflow_api=sd_workflow(2)
    )
    vgate.wait(uuid.UUID(second.prompt_id).hex)
    result, other = await vc.infer_info([scheduled.prompt_id, second.prompt_id])  # many ids in one call
    assert other.prompt_id == second.prompt_id and other.prompt["3"]["inputs"]["seed"] == 8
    assert (result.prompt_id, result.status, result.completed) == (scheduled.prompt_id, "success", True)
    assert result.prompt["3"]["inputs"]["seed"] == 7 and result.error_data is None
    [output] = result.outputs
    assert output.content_type == "image/png" and output.size > 0
    fetched = await download(output.filepath)
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG") and len(fetched.content) == output.size
    assert fetched.headers["x-content-type-options"] == "nosniff"  # served as /api/image serves outputs
    assert fetched.headers["content-disposition"].startswith("inline")

    raw = vgate.client.get(
        "/api/workflow/infer/", params={"prompt_ids": [scheduled.prompt_id, str(uuid.uuid4())]}, headers=vc.auth
    )
    assert raw.status_code == 200
    [record] = raw.json()  # an unknown id is left out: the client would build a result from any entry
    assert tuple(record) == RECORD_KEYS
    assert set(record["outputs"][0]) == {"filename", "contentType", "size", "filepath"}


async def test_infer_with_logs_streams_node_and_step_lines_then_the_result(vgate: Gate) -> None:
    vc = client(vgate)
    result = await vc.infer_with_logs(
        params={"3-inputs-seed": 11}, view_comfy_api_url=DEPLOYMENT, override_workflow_api=sd_workflow(4)
    )
    assert vc.handler_errors == []  # PromptResult(**data) accepted the result's keys
    assert isinstance(result, PromptResult) and result.status == "success" and result.completed
    names = [name for name, _ in vc.events]
    assert names[0] == "infer_log_message" and names[-1] == "infer_result_message"
    assert "infer_executed_message" in names and "infer_error_message" not in names
    lines = [data["data"] for name, data in vc.events if name == "infer_log_message"]
    assert all(data["prompt_id"] == vc.last_prompt_id for name, data in vc.events if name != "infer_result_message")
    assert any(line.startswith("ComfyGate task ") and "queued" in line for line in lines), lines
    assert "KSampler (node 3): step 4/4" in lines, lines
    executed = [data["data"]["node"] for name, data in vc.events if name == "infer_executed_message"]
    assert "9" in executed, executed  # the SaveImage node of the recorded SD workflow
    [output] = result.outputs
    assert (await download(output.filepath)).status_code == 200


async def test_file_parameter_is_uploaded_and_used(vgate: Gate, tmp_path: Path) -> None:
    vc = client(vgate)
    with png_file(tmp_path).open("rb") as image:
        result = await vc.infer_with_logs(
            params={"1-inputs-image": image, "2-inputs-width": 64},
            view_comfy_api_url=DEPLOYMENT,
            override_workflow_api=load_workflow("load_scale_blur_save.json"),
        )
    assert result is not None and result.status == "success", vc.events
    task = vgate.task(uuid.UUID(result.prompt_id).hex)
    assert task["params"]["1.image"].endswith("input_img.png") and task["params"]["2.width"] == 64
    [output] = [o for o in result.outputs if o.filename.startswith("scaled")]
    fetched = await download(output.filepath)
    with Image.open(io.BytesIO(fetched.content)) as img:
        assert img.size == (64, 96)


async def test_a_failing_run_ends_with_an_error_event_and_an_error_record(vgate: Gate) -> None:
    vc = client(vgate)
    result = await vc.infer_with_logs(
        params={"1-inputs-color": 1},
        view_comfy_api_url=DEPLOYMENT,
        override_workflow_api=load_workflow("runtime_error_save_outside.json"),
    )
    assert result is None
    name, data = vc.events[-1]
    assert name == "infer_error_message" and data["prompt_id"] == vc.last_prompt_id
    assert data["data"].startswith("task failed: "), data
    [record] = await vc.infer_info([vc.last_prompt_id])
    assert (record.status, record.completed, record.outputs) == ("error", False, [])
    assert record.error_data and record.error_data.get("message"), record.error_data


async def test_cancel_of_a_running_task(vgate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    vc = client(vgate)
    run = asyncio.create_task(
        vc.infer_with_logs(
            params={"3-inputs-seed": 3}, view_comfy_api_url=DEPLOYMENT, override_workflow_api=sd_workflow(200)
        )
    )
    await until(lambda: any("step" in str(d.get("data")) for n, d in vc.events if n == "infer_log_message"))
    prompt_id = vc.last_prompt_id
    assert prompt_id is not None
    [running] = await client(vgate).infer_info([prompt_id])
    assert (running.status, running.completed, running.outputs) == ("running", False, [])
    waiting = await client(vgate).infer(
        params={"3-inputs-seed": 4}, view_comfy_api_url=DEPLOYMENT, override_workflow_api=sd_workflow(200)
    )
    [queued] = await client(vgate).infer_info([waiting.prompt_id])
    assert (queued.status, queued.completed) == ("queued", False)  # behind the running one on the one ComfyUI
    await client(vgate).infer_cancel(prompt_id=waiting.prompt_id, view_comfy_api_url=DEPLOYMENT)
    assert vgate.wait(uuid.UUID(waiting.prompt_id).hex)["status"] == "interrupted"
    [removed] = await client(vgate).infer_info([waiting.prompt_id])
    assert removed.status == "canceled"
    answer = await client(vgate).infer_cancel(prompt_id=prompt_id, view_comfy_api_url=DEPLOYMENT)
    assert answer["prompt_id"] == prompt_id
    assert await asyncio.wait_for(run, 10) is None
    assert vc.events[-1][0] == "infer_canceled_message"
    assert vgate.wait(uuid.UUID(prompt_id).hex)["status"] == "interrupted"
    [record] = await client(vgate).infer_info([prompt_id])
    assert record.status == "canceled"
    again = vgate.client.post(
        "/api/workflow/infer/cancel", json={"promptId": prompt_id}, headers=vc.auth
    )  # the browser client's keys
    assert again.status_code == 201 and again.json()["status"] == "canceled"


async def test_credentials_on_http_and_socketio(emulator: Any, gate_factory: Callable[..., Gate]) -> None:
    gate = gate_factory(
        [emulator.url],
        api_keys=[API_KEY],
        viewcomfy_server_client_id=CLIENT_ID,
        viewcomfy_server_client_secret=CLIENT_SECRET,
        viewcomfy_keepalive=0.1,
    )
    result = await client(gate).infer_with_logs(
        params={"1-inputs-width": 16},
        view_comfy_api_url=DEPLOYMENT,
        override_workflow_api=load_workflow("invert_save.json"),
    )
    assert result is not None and result.status == "success"
    assert (await download(result.outputs[0].filepath)).status_code == 200  # signed: no key needed
    tampered = result.outputs[0].filepath.replace("signature=", "signature=0")
    refused = await download(tampered)
    assert refused.status_code == 403 and refused.json()["error"] == "link_refused"

    with pytest.raises(ClientError, match="websocket"):  # wrong secret: the socket.io connect is refused
        await client(gate, "wrong").infer_with_logs(params={}, view_comfy_api_url=DEPLOYMENT)
    with pytest.raises(ClientError, match="401"):
        await client(gate, "wrong").infer(params={}, view_comfy_api_url=DEPLOYMENT)
    async with httpx.AsyncClient(base_url=gate.url) as raw:
        plain = await raw.post("/api/workflow/infer", data={"params": "{}"})
        keyed = await raw.get(
            "/api/workflow/infer/", params={"prompt_ids": result.prompt_id}, headers={"X-API-Key": API_KEY}
        )
        # the pair opens the current API's three routes only, not the library's paths that look alike
        pair = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        assert (await raw.delete("/api/workflow/infer", headers=pair)).status_code == 401
        assert (await raw.get("/api/workflow/inference", headers=pair)).status_code == 401
    assert plain.status_code == 401
    assert keyed.status_code == 200 and keyed.json()[0]["status"] == "success"

    with_key = socketio.AsyncClient()
    await with_key.connect(gate.url, auth={"token": API_KEY}, transports=["websocket"])
    assert with_key.get_sid("/")
    await with_key.disconnect()
    anonymous = socketio.AsyncClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await anonymous.connect(gate.url, transports=["websocket"])
    await anonymous.disconnect()

    # A refused peer holds nothing open: speaking Engine.IO by hand (a client that never hangs up itself),
    # the server answers CONNECT_ERROR, then closes the connection.
    async with ws_connect(f"{gate.ws_url}/socket.io/?EIO=4&transport=websocket") as raw_ws:
        assert str(await raw_ws.recv()).startswith("0{")  # Engine.IO open
        await raw_ws.send('40{"client_id": "vc-id", "client_secret": "wrong"}')
        assert str(await raw_ws.recv()).startswith("44")  # socket.io CONNECT_ERROR
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await raw_ws.recv()  # pings at most, until the server closes


async def test_foreign_browser_origin_is_refused_on_socketio(vgate: Gate) -> None:
    auth = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    evil = socketio.AsyncClient()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await evil.connect(vgate.url, auth=auth, transports=["websocket"], headers={"Origin": "https://evil.example"})
    await evil.disconnect()
    local = socketio.AsyncClient()
    await local.connect(vgate.url, auth=auth, transports=["websocket"], headers={"Origin": "http://localhost:3000"})
    await local.disconnect()


def test_bad_input_gets_clear_4xx(vgate: Gate) -> None:
    headers = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    workflow = json.dumps(load_workflow("invert_save.json"))

    def schedule(**fields: Any) -> httpx.Response:
        return vgate.client.post("/api/workflow/infer", data=fields, headers=headers)

    bad_id = schedule(prompt_id="not-a-uuid", params="{}", workflow_api=workflow)
    assert bad_id.status_code == 400 and "prompt_id must be a UUID" in bad_id.json()["message"]
    prompt_id = str(uuid.uuid4())
    assert schedule(prompt_id=prompt_id, params="{}", workflow_api=workflow).status_code == 201
    again = schedule(prompt_id=prompt_id, params="{}", workflow_api=workflow)
    assert again.status_code == 409 and "already used" in again.json()["message"]
    no_workflow = schedule(prompt_id=str(uuid.uuid4()), params="{}")
    assert no_workflow.status_code == 400 and "view_comfy_api_url" in no_workflow.json()["message"]
    unknown = schedule(prompt_id=str(uuid.uuid4()), params="{}", view_comfy_api_url="https://x.example/nope")
    assert unknown.status_code == 404, unknown.text
    stale_sid = schedule(params="{}", workflow_api=workflow, sid="gone-sid")
    assert stale_sid.status_code == 400 and "not a connected socket.io session" in stale_sid.json()["message"]
    bad_params = schedule(params="[1]", workflow_api=workflow)
    assert bad_params.status_code == 400 and "params" in bad_params.json()["message"]
    too_many = vgate.client.get(
        "/api/workflow/infer/", params={"prompt_ids": [str(uuid.uuid4())] * 101}, headers=headers
    )
    assert too_many.status_code == 400 and "at most 100" in too_many.json()["message"]
    missing = vgate.client.post("/api/workflow/infer/cancel", json={"prompt_id": str(uuid.uuid4())}, headers=headers)
    assert missing.status_code == 404
    no_id = vgate.client.post("/api/workflow/infer/cancel", json={}, headers=headers)
    assert no_id.status_code == 400 and "prompt_id is required" in no_id.json()["message"]
    nan = vgate.client.post(
        "/api/workflow/infer/cancel",
        content=b'{"prompt_id": NaN}',
        headers={**headers, "content-type": "application/json"},
    )
    assert nan.status_code == 422 and nan.json()["error"] == "invalid_json_value", nan.text
    not_object = vgate.client.post("/api/workflow/infer/cancel", json=[1], headers=headers)
    assert not_object.status_code == 400 and "prompt_id" in not_object.json()["message"]
    expired = vgate.client.get("/api/viewcomfy/files/abc/x.png", params={"expires": "1", "signature": "00"})
    assert expired.status_code == 403


def test_saved_workflow_named_by_view_comfy_api_url(vgate: Gate) -> None:
    (vgate.settings.workflows_dir / "invert.json").write_text(json.dumps(load_workflow("invert_save.json")))
    headers = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    answer = vgate.client.post(
        "/api/workflow/infer",
        data={
            "prompt_id": str(uuid.uuid4()),
            "view_comfy_api_url": "https://app.viewcomfy.com/d/invert/",
            "params": "{}",
        },
        headers=headers,
    )
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    assert set(data) == {"prompt_id", "message", "workflow"} and data["workflow"] == "invert"
    assert vgate.wait(uuid.UUID(data["prompt_id"]).hex)["status"] == "completed"


async def test_a_socketio_client_that_stops_taking_messages_is_dropped(vgate: Gate) -> None:
    """Engine.IO queues without a bound: a client that stops taking its messages is disconnected once
    MAX_BACKLOG packets wait for it, and what it had not taken is let go; a client that reads gets every
    message of the same flood."""
    from api.viewcomfy_socketio import MAX_BACKLOG

    sockets = vgate.server.app.state.viewcomfy_socketio
    assert vgate.server.server is not None
    loop = vgate.server.server.servers[0].get_loop()  # the app's loop, in the server's thread
    auth = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    async def flood(sid: str, count: int, size: int) -> tuple[int, int]:
        """Emit ``count`` messages as runs do (the loop turns between them); (sent, largest backlog seen)."""
        largest = 0
        line = "x" * size
        for sent in range(count):
            if not sockets.connected(sid):
                return sent, largest
            await sockets.emit("log", {"prompt_id": "p", "message": line, "n": sent}, sid)
            largest = max(largest, sockets.backlog(sid))
            await asyncio.sleep(0)
        return count, largest

    def on_server(coro: Any) -> Any:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    reader = socketio.AsyncClient()
    got: list[int] = []
    reader.on("log", lambda data: got.append(data["n"]))
    await reader.connect(vgate.url, auth=auth, transports=["websocket"])
    count = 3 * MAX_BACKLOG
    sent, largest = await on_server(flood(reader.get_sid("/"), count, 200))  # log lines
    await until(lambda: len(got) == count, timeout=30)
    assert sent == count and got == list(range(count)) and largest < MAX_BACKLOG
    await reader.disconnect()

    # Speaking Engine.IO by hand over long-polling: connect, then never poll again (packets wait on the server).
    async with httpx.AsyncClient(base_url=f"{vgate.url}/socket.io/", timeout=10) as raw:
        opened = await raw.get("", params={"EIO": 4, "transport": "polling"})
        assert opened.text.startswith("0{"), opened.text
        session = {"EIO": 4, "transport": "polling", "sid": json.loads(opened.text[1:])["sid"]}
        assert (await raw.post("", params=session, content="40" + json.dumps(auth))).text.lower() == "ok"
        ack = (await raw.get("", params=session)).text
        assert ack.startswith("40"), ack
        sid = json.loads(ack[2:])["sid"]
        sent, largest = await on_server(flood(sid, 20 * MAX_BACKLOG, 200))
        assert sent < 20 * MAX_BACKLOG, "a client that takes nothing was never dropped"
        assert largest <= MAX_BACKLOG
        assert not sockets.connected(sid)
        await until(lambda: sockets.backlog(sid) == 0)  # what it had not taken is let go
