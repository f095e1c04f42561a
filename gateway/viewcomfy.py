"""What both ViewComfy-compatible APIs do alike: credentials, following a run, log lines, output files.

The older API (one POST, SSE, base64: ``api/routers/viewcomfy.py``) and the current one (scheduled runs,
socket.io, links: ``api/routers/viewcomfy_current.py``) accept the same credentials, run the same kind
of task, and describe its progress in the same words. (Their shared form reading, ``params`` and file
parts included, is the API layer's: ``api.viewcomfy_form``.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request

from core.errors import Unauthorized
from core.task import Task
from events.hub import Subscription
from gateway.services import Services
from security.auth import ViewComfyAuth, is_authenticated, viewcomfy_pair_problem


def viewcomfy_auth(services: Services) -> ViewComfyAuth:
    """The one credential rule, built once per app from its settings."""
    auth = services.extras.get("viewcomfy_auth")
    if auth is None:
        auth = services.extras["viewcomfy_auth"] = ViewComfyAuth(services.settings)
    return auth


def check_credentials(request: Request, services: Services) -> None:
    """An API key the middleware accepted, else the ``client_id`` / ``client_secret`` headers (SECURITY.md)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not viewcomfy_auth(services).allowed(headers, key_ok=is_authenticated(request)):
        problem = viewcomfy_pair_problem(services.settings)
        raise Unauthorized(problem or "client_id / client_secret are missing or wrong")


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
