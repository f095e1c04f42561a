"""Synchronous submit: answer when the task has ended, optionally with its output files inline.

The waiting request sleeps on an ``asyncio.Event`` that a task observer sets when the task finishes
(no polling). It also watches its own connection: a client that goes away stops the wait, and
cancels the task only when it asked for that with ``cancel_on_disconnect=true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from core.errors import InvalidRequest
from core.task import Task
from gateway.services import Services

WAIT_MARGIN = 5.0  # seconds past the task's own timeout, which ends the task anyway


class Waiters:
    """One Event per task somebody waits for, set by the task observer on "finished"."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, task_id: str) -> asyncio.Event:
        return self._events.setdefault(task_id, asyncio.Event())

    def release(self, task_id: str) -> None:
        event = self._events.get(task_id)
        if event is not None and not event.is_set():
            self._events.pop(task_id, None)

    def on_task(self, task: Task, change: str) -> None:
        if change == "finished":
            event = self._events.pop(task.task_id, None)
            if event is not None:
                event.set()


@dataclass(slots=True)
class SyncOptions:
    wait: bool | None = None
    wait_timeout: float | None = None
    output_format: str | None = None
    cancel_on_disconnect: bool = False


async def sync_options(
    wait: bool | None = Query(None, description="answer only when the task has ended (same as the body's wait)"),
    wait_timeout: float | None = Query(
        None, gt=0, description="longest wait in seconds (default: the task's timeout); then 202 with the task"
    ),
    output_format: Literal["url", "base64"] | None = Query(
        None, description='"base64": with wait, inline every output as base64 "data" (implies wait)'
    ),
    cancel_on_disconnect: bool = Query(False, description="with wait: cancel the task if the client goes away"),
) -> SyncOptions:
    """A coroutine so FastAPI does not run it in its thread pool (a thread hop on every submission)."""
    return SyncOptions(wait, wait_timeout, output_format, cancel_on_disconnect)


def resolve(options: SyncOptions, body_wait: bool, body_format: str | None) -> SyncOptions:
    """Query parameters win over the body's ``wait`` / ``output_format``; base64 implies waiting."""
    fmt = options.output_format or body_format
    if fmt not in (None, "url", "base64"):
        raise InvalidRequest(f'output_format must be "url" or "base64", not {fmt!r}')
    wait = options.wait if options.wait is not None else body_wait
    return SyncOptions(bool(wait or fmt == "base64"), options.wait_timeout, fmt, options.cancel_on_disconnect)


async def _disconnected(request: Request) -> None:
    """Return once the client has closed its connection (the body was already read by FastAPI)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_for_task(services: Services, request: Request, task: Task, options: SyncOptions) -> tuple[bool, bool]:
    """Wait for the end of ``task``; return (ended, client_gone)."""
    if task.status.final:
        return True, False
    waiters: Waiters = services.extras["waiters"]
    limit = task.timeout + WAIT_MARGIN
    if options.wait_timeout is not None:
        limit = min(limit, options.wait_timeout)
    ended = asyncio.create_task(waiters.event(task.task_id).wait())
    gone = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({ended, gone}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for job in (ended, gone):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
    client_gone = gone.done() and not gone.cancelled() and not task.status.final
    if not task.status.final:
        waiters.release(task.task_id)
    if client_gone and options.cancel_on_disconnect:
        await services.manager.interrupt(task)
    return task.status.final, client_gone


def inline_outputs(services: Services, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs with their bytes as base64 ``data``, within a total budget; the rest say why not."""
    budget = services.settings.inline_output_max_bytes
    result = []
    for output in outputs:
        item = dict(output)
        folder = services.settings.outputs_dir if item.get("type", "output") == "output" else services.manager.temp_dir
        path = folder / str(item.get("filename", ""))
        size = int(item.get("size") or 0)
        if size > budget:
            item["data"] = None
            item["data_skipped"] = (
                f"not inlined: {size} bytes exceed the remaining inline budget of {budget} bytes "
                "(COMFYUI_INLINE_OUTPUT_MAX_BYTES); fetch it from url"
            )
        elif not path.is_file():
            item["data"] = None
            item["data_skipped"] = "the file is no longer on disk"
        else:
            raw = path.read_bytes()
            budget -= len(raw)
            item["data"] = base64.b64encode(raw).decode("ascii")
        result.append(item)
    return result


async def respond_when_done(services: Services, request: Request, task: Task, options: SyncOptions) -> Any:
    ended, _gone = await wait_for_task(services, request, task, options)
    body = task.to_dict()
    if not ended:
        body["wait_timed_out"] = True
        return JSONResponse(jsonable_encoder(body), status_code=202, headers={"Location": f"/api/task/{task.task_id}"})
    if options.output_format == "base64":
        await services.local_outputs(task.outputs)
        body["outputs"] = await asyncio.to_thread(inline_outputs, services, task.outputs)
    return body
