"""What both ViewComfy-compatible APIs do alike: credentials, parameters and files, following a run, log lines.

The older API (one POST, SSE, base64: ``api/routers/viewcomfy.py``) and the current one (scheduled runs,
socket.io, links: ``api/routers/viewcomfy_current.py``) accept the same credentials and the same
``params`` / file parts, run the same kind of task, and describe its progress in the same words.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request

from backends.viewcomfy.protocol import InferRequest, split_viewcomfy_key
from core.errors import InvalidRequest, Unauthorized
from core.task import Task
from events.hub import Subscription
from gateway.services import Services
from gateway.uploads import push_upload
from security.auth import ViewComfyAuth, is_authenticated, viewcomfy_headers


def viewcomfy_auth(services: Services) -> ViewComfyAuth:
    """The one credential rule, built once per app from its settings."""
    auth = services.extras.get("viewcomfy_auth")
    if auth is None:
        auth = services.extras["viewcomfy_auth"] = ViewComfyAuth(services.settings)
    return auth


def check_credentials(request: Request, services: Services) -> None:
    """An API key the middleware accepted, else the ``client_id`` / ``client_secret`` headers (SECURITY.md)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not viewcomfy_auth(services).allowed(viewcomfy_headers(headers), key_ok=is_authenticated(request)):
        raise Unauthorized("client_id / client_secret are missing or wrong")


async def build_params(services: Services, body: InferRequest) -> dict[str, Any]:
    """``params`` without ``_`` context keys, plus each file part uploaded and set to its ComfyUI name."""
    params = {key: value for key, value in body.params.items() if not (isinstance(key, str) and key.startswith("_"))}
    for key, part in body.files.items():
        if split_viewcomfy_key(key) is None:
            raise InvalidRequest(f'file part {key!r} must be named by its parameter, like "52-inputs-image"', field=key)
        uploaded = await push_upload(services, part.filename, part.content)
        params[key] = f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded["subfolder"] else uploaded["name"]
    return params


async def follow_task(services: Services, task: Task, sub: Subscription) -> AsyncIterator[str | None]:
    """The task's hub messages, and ``None`` every keepalive interval, until the task is final.

    ``sub``: the caller subscribed right after submitting (nothing missed) and unsubscribes when done.
    Iterates the Subscription through one pending ``anext`` so a keepalive tick never cancels it.
    """
    interval = services.settings.viewcomfy_keepalive
    messages = aiter(sub)
    pending: asyncio.Future[str] | None = None
    try:
        while not task.status.final:
            if pending is None:
                pending = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                break  # the hub dropped this listener (it fell behind): keep time until the end below
            finally:
                pending = None
            yield message
        while not task.status.final:
            await asyncio.sleep(interval)
            yield None
    finally:
        if pending is not None:
            pending.cancel()


def log_line(task: Task, text: str) -> str | None:
    """One hub message as a ViewComfy log line: status changes, node changes, sampler steps, text."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    kind = message.get("type")
    if kind == "text":
        return str(message.get("text") or "") or None
    if kind != "task_update" or message.get("status") in (None, "completed", "failed", "interrupted", "timeout"):
        return None
    status = message["status"]
    progress = message.get("progress") or {}
    if status != "running" or not progress.get("node"):
        return f"ComfyGate task {task.task_id} {status} on {message.get('backend')}"
    title = progress.get("node_title") or progress.get("node_class") or "node"
    where = f"{title} (node {progress['node']})"
    if progress.get("max"):
        return f"{where}: step {progress.get('value') or 0}/{progress['max']}"
    return f"executing {where}"


def executed_node(text: str) -> str | None:
    """The node id of a ``node_output`` hub message (a node finished and wrote something), else None."""
    if '"node_output"' not in text:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return str(message.get("node")) if message.get("type") == "node_output" else None


def failure_line(task: Task) -> str:
    error = task.error or {}
    return f"task {task.status.value}: {error.get('message') or 'no details'}"


def output_path(services: Services, entry: dict[str, Any]) -> Path:
    """Where a task's output entry lives on disk: outputs/, or the temp folder for previews."""
    kind = entry.get("type", "output")
    folder = services.settings.outputs_dir if kind == "output" else services.manager.temp_dir
    return folder / str(entry["filename"])
