"""Synchronous submit: answer when the task has ended, optionally with its output files inline.

The waiting request sleeps on an ``asyncio.Event`` that a task observer sets when the task finishes
(no polling). It also watches its own connection: a client that goes away stops the wait, and
cancels the task only when it asked for that with ``cancel_on_disconnect=true``.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidRequest
from core.task import Task
from gateway.services import Services

WAIT_MARGIN = 5.0  # seconds past the task's own timeout, which ends the task anyway


class Waiters:
    """One future per task somebody waits for, resolved by the task observer on "finished" (a future, not
    an Event and a task waiting on it: the waiting request resumes one loop turn sooner)."""

    def __init__(self) -> None:
        self._ends: dict[str, asyncio.Future[None]] = {}

    def end(self, task_id: str) -> asyncio.Future[None]:
        end = self._ends.get(task_id)
        if end is None:
            end = self._ends[task_id] = asyncio.get_running_loop().create_future()
        return end

    def release(self, task_id: str) -> None:
        end = self._ends.get(task_id)
        if end is not None and not end.done():
            self._ends.pop(task_id, None)

    def on_task(self, task: Task, change: str) -> None:
        if change == "finished":
            end = self._ends.pop(task.task_id, None)
            if end is not None and not end.done():
                end.set_result(None)


@dataclass(slots=True)
class SyncOptions:
    wait: bool | None = None
    wait_timeout: float | None = None
    output_format: str | None = None
    cancel_on_disconnect: bool = False


class SyncQuery(BaseModel):
    """The submit's query parameters (in the route's OpenAPI entry through ``SYNC_QUERY_PARAMETERS``)."""

    model_config = ConfigDict(extra="ignore")

    wait: bool | None = Field(None, description="answer only when the task has ended (same as the body's wait)")
    wait_timeout: float | None = Field(
        None, gt=0, description="longest wait in seconds (default: the task's timeout); then 202 with the task"
    )
    output_format: Literal["url", "base64"] | None = Field(
        None, description='"base64": with wait, inline every output as base64 "data" (implies wait)'
    )
    cancel_on_disconnect: bool = Field(False, description="with wait: cancel the task if the client goes away")


NO_OPTIONS = SyncOptions(None, None, None, False)
SYNC_QUERY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": spec.get("description", ""),
        "schema": {k: v for k, v in spec.items() if k not in ("description", "title")},
    }
    for name, spec in SyncQuery.model_json_schema()["properties"].items()
]


def request_error(exc: ValidationError, where: tuple[str, ...]) -> RequestValidationError:
    """A model validated by hand, refused as FastAPI refuses its own parameters: a 422 whose ``loc`` starts
    with ``where`` ("query", "body", ...)."""
    return RequestValidationError(
        [
            {"type": e["type"], "loc": (*where, *e["loc"]), "msg": e["msg"], "input": e.get("input")}
            for e in exc.errors()
        ]
    )


async def sync_options(request: Request) -> SyncOptions:
    """Read here rather than as four FastAPI ``Query`` parameters: solving those cost every submission
    ~50 µs of CPU (~0.15 ms in the latency benchmark, issue 18), though most send none. Errors are the
    same 422 with ``loc: ["query", name]``."""
    query = request.query_params
    if not query:
        return NO_OPTIONS
    try:
        given = SyncQuery.model_validate({name: query[name] for name in SyncQuery.model_fields if name in query})
    except ValidationError as exc:
        raise request_error(exc, ("query",)) from None
    return SyncOptions(given.wait, given.wait_timeout, given.output_format, given.cancel_on_disconnect)


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
    ended = waiters.end(task.task_id)
    gone = asyncio.create_task(_disconnected(request))
    gone.add_done_callback(lambda job: job.cancelled() or job.exception())  # retrieved: never "never retrieved"
    try:
        await asyncio.wait({ended, gone}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Not awaited: it ends at the next turn, while the answer is already on its way.
        gone.cancel()
    client_gone = gone.done() and not gone.cancelled() and not task.status.final
    if not task.status.final:
        waiters.release(task.task_id)
    if client_gone and options.cancel_on_disconnect:
        await services.manager.interrupt(task)
    return task.status.final, client_gone


def inline_outputs(
    services: Services, outputs: list[dict[str, Any]], in_memory: dict[str, bytes] | None = None
) -> list[dict[str, Any]]:
    """Outputs with their bytes as base64 ``data``, within a total budget; the rest say why not.
    ``in_memory``: bytes already at hand by file name (the output cache), not read from disk."""
    in_memory = in_memory or {}
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
        elif item.get("filename") not in in_memory and not path.is_file():
            item["data"] = None
            item["data_skipped"] = "the file is no longer on disk"
        else:
            name = item.get("filename", "")
            raw = in_memory[name] if name in in_memory else path.read_bytes()
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
        body["outputs"] = await _inlined(services, task.outputs)
    # Sent as it is: validating it against the route's response model again would only cost time.
    return JSONResponse(jsonable_encoder(body))


INLINE_ON_LOOP_BYTES = 64 * 1024  # base64 of this much takes ~50 µs: less than a hop to a thread


async def _inlined(services: Services, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``inline_outputs``, from the output cache where it can (a just-finished small output is there,
    possibly not yet on disk), reading the rest from outputs/ in a worker thread."""
    cache = services.manager.outputs.cache
    in_memory: dict[str, bytes] = {}
    for output in outputs:
        cached = cache.get(str(output.get("filename", ""))) if output.get("type", "output") == "output" else None
        if cached is not None:
            in_memory[str(output["filename"])] = cached.data
    rest = [o for o in outputs if o.get("filename") not in in_memory]
    if not rest and sum(map(len, in_memory.values())) <= INLINE_ON_LOOP_BYTES:
        return inline_outputs(services, outputs, in_memory)
    await services.local_outputs(rest)
    return await asyncio.to_thread(inline_outputs, services, outputs, in_memory)
