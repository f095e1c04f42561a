"""What both ViewComfy-compatible APIs share: following a task, its log lines, the credential rule."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from core.task import Task, TaskStatus
from events.hub import EventHub
from gateway.viewcomfy import executed_node, follow_task, log_line
from security.auth import ViewComfyAuth
from tests.conftest import make_settings


async def test_follow_keeps_time_after_the_hub_drops_a_slow_listener() -> None:
    """A dropped subscription must not end the stream early: the result waits for the task's end."""
    hub = EventHub(queue_size=1)
    task = Task(task_id="t1", workflow={}, prompt_id="p1", status=TaskStatus.RUNNING)
    sub = hub.subscribe({"t1"})
    for n in range(3):
        hub.publish({"type": "task_update", "n": n}, "t1")
    assert sub.dropped
    services = SimpleNamespace(settings=SimpleNamespace(viewcomfy_keepalive=0.02))
    asyncio.get_running_loop().call_later(0.1, setattr, task, "status", TaskStatus.COMPLETED)
    seen = [message async for message in follow_task(services, task, sub)]  # type: ignore[arg-type]
    assert task.status == TaskStatus.COMPLETED and seen.count(None) >= 2


def test_log_lines_name_node_and_step() -> None:
    task = Task(task_id="t1", workflow={}, prompt_id="p1", status=TaskStatus.RUNNING)
    update = {"type": "task_update", "status": "running", "backend": "comfyui-1"}
    step = {**update, "progress": {"node": "3", "node_class": "KSampler", "value": 4, "max": 20}}
    assert log_line(task, json.dumps(step)) == "KSampler (node 3): step 4/20"
    assert log_line(task, json.dumps({**update, "progress": {"node": "8", "node_title": "VAE Decode"}})) == (
        "executing VAE Decode (node 8)"
    )
    assert log_line(task, json.dumps({**update, "status": "queued"})) == "ComfyGate task t1 queued on comfyui-1"
    assert log_line(task, json.dumps({**update, "status": "completed"})) is None
    assert executed_node(json.dumps({"type": "node_output", "node": "9", "output": {}})) == "9"
    assert executed_node(json.dumps(step)) is None


def test_one_credential_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pair = {"client_id": "id", "client_secret": "secret"}
    both = ViewComfyAuth(
        make_settings(
            tmp_path,
            ["http://127.0.0.1:1"],
            api_keys=["k" * 20],
            viewcomfy_server_client_id="id",
            viewcomfy_server_client_secret="secret",
        )
    )
    assert both.allowed(pair, key_ok=False) and both.allowed({}, key_ok=True)
    assert not both.allowed({**pair, "client_secret": "nope"}, key_ok=False)
    assert both.socket_allowed({}, {"token": "k" * 20}) and both.socket_allowed(
        {}, {"authorization": "Bearer " + "k" * 20}
    )
    assert both.socket_allowed({}, pair) and not both.socket_allowed({}, {})
    keys_only = ViewComfyAuth(make_settings(tmp_path, ["http://127.0.0.1:1"], api_keys=["k" * 20]))
    assert not keys_only.allowed(pair, key_ok=False)  # keys on and no pair configured: only a key will do
    open_ = ViewComfyAuth(make_settings(tmp_path, ["http://127.0.0.1:1"]))
    assert open_.allowed({}, key_ok=False) and open_.socket_allowed({}, {})


def test_a_half_configured_pair_fails_closed_over_http_and_socketio(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The rule is built on security.auth.viewcomfy_credentials_ok: half a pair opens nothing, keys or not."""
    for keys in ([], ["k" * 20]):
        half = ViewComfyAuth(
            make_settings(tmp_path, ["http://127.0.0.1:1"], api_keys=keys, viewcomfy_server_client_id="id")
        )
        for given in ({"client_id": "id", "client_secret": ""}, {"client_id": "id"}, {}):
            assert not half.allowed(given, key_ok=False) and not half.socket_allowed({}, given)
    dashed = ViewComfyAuth(
        make_settings(
            tmp_path, ["http://127.0.0.1:1"], viewcomfy_server_client_id="id", viewcomfy_server_client_secret="s"
        )
    )
    assert dashed.allowed({"client-id": "id", "client-secret": "s"}, key_ok=False)  # proxies drop underscores
    assert not dashed.allowed({}, key_ok=False)
