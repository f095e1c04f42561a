"""A ViewComfy-compatible endpoint: existing ViewComfy client code runs workflows on ComfyGate's ComfyUI.

``POST /api/viewcomfy/infer`` and ``POST /api/viewcomfy/infer/{name}`` speak the wire format of
``backends.viewcomfy.protocol`` (see ``/work/shared/viewcomfy-protocol.md``) and run the request as an ordinary
task (it shows in ``/api/tasks`` and on ``/ws``), on ComfyUI backends only, never on a ViewComfy backend
(which could be this very endpoint).

Decisions:

* Workflow: the request's ``workflow_api``, else the saved workflow named in the URL, else
  ``settings.viewcomfy_default_workflow``, else a 400 that says how to fix it.
* No parameters at all (no ``params`` key that is not ``_`` context, no file): every seed changes, as
  ViewComfy requires of its callers, so a repeated call is not answered from ComfyUI's cache.
* Anything refused before the run (credentials, body, workflow, params, ComfyUI's own validation) is an
  HTTP error with a JSON body. A run that starts and then fails, times out or is interrupted is a 201
  whose result has ``status: "error"`` (after ``error`` events when streaming): the result object has
  a field for exactly that, and both of ViewComfy's answer modes then end the same way.
* ``outputs`` carries every file the task saved (previews included), read back from ``outputs/``, under
  ComfyUI's own file name.
* A caller that goes away before the end stops the task (interrupt): a ViewComfy client has no other way
  to cancel, and a ComfyGate ViewComfy backend in front of this one relies on it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.dependencies import get_services
from api.viewcomfy_form import InferRequest, build_params, parse_infer_form
from backends.viewcomfy.protocol import FileOutput, result_to_json
from backends.viewcomfy.sse import SSE_KEEPALIVE, sse_event
from core.errors import InvalidRequest
from core.media_types import content_type
from core.task import Task, TaskStatus
from events.hub import Subscription
from gateway.services import Services
from gateway.submission import prepare_submission
from gateway.viewcomfy import check_credentials, failure_line, follow_task, log_line, output_path

router = APIRouter(prefix="/api/viewcomfy", tags=["viewcomfy"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "the result object, or (logs=true) an SSE stream ending with prompt_result"},
    400: {"description": "no workflow, malformed body"},
    401: {"description": "client_id / client_secret do not match"},
    422: {"description": "parameters that do not fit the workflow, or ComfyUI refused the prompt"},
    503: {"description": "no ComfyUI backend is reachable"},
}


@router.post("/infer", status_code=201, responses=_RESPONSES, summary="Run a workflow as ViewComfy's API does")
async def infer(request: Request, services: Services = Depends(get_services)) -> Response:
    return await _infer(request, services, None)


@router.post(
    "/infer/{name}", status_code=201, responses=_RESPONSES, summary="Run a saved workflow as ViewComfy's API does"
)
async def infer_named(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    return await _infer(request, services, name)


async def _infer(request: Request, services: Services, name: str | None) -> Response:
    check_credentials(request, services)
    settings = services.settings
    body = await parse_infer_form(request, max_file_bytes=settings.max_upload_bytes)
    workflow, workflow_name = pick_workflow(body, name, settings.viewcomfy_default_workflow)
    params = await build_params(services, body)
    prepared = await prepare_submission(services, workflow, workflow_name, params, viewcomfy_seed_rule=True)
    task = await services.manager.submit(
        prepared.workflow,
        params=prepared.applied,
        workflow_name=prepared.name,
        extra={"source": "viewcomfy"},
        kind="comfyui",
    )
    sub = services.hub.subscribe({task.task_id})
    if body.logs:
        return StreamingResponse(
            _stream(services, task, sub),
            status_code=201,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    try:
        async for _ in follow_task(services, task, sub):
            if await request.is_disconnected():
                _stop(services, task)
                break
    finally:
        services.hub.unsubscribe(sub)
    result, _ = await build_result(services, task)
    return JSONResponse(result, status_code=201)


def pick_workflow(
    body: InferRequest, name: str | None, default: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(inline workflow, saved name): workflow_api, else the URL's name, else the configured default."""
    if body.workflow_api is not None:
        return body.workflow_api, None
    if name or default:
        return None, name or default
    raise InvalidRequest(
        "no workflow to run: send workflow_api (an API-format workflow as a JSON string), or call "
        "/api/viewcomfy/infer/<saved workflow name>, or set COMFYUI_VIEWCOMFY_DEFAULT_WORKFLOW",
        field="workflow_api",
    )


async def _stream(services: Services, task: Task, sub: Subscription) -> AsyncIterator[bytes]:
    finished = False
    try:
        yield SSE_KEEPALIVE  # headers out now, even on a cold start
        last = f"ComfyGate task {task.task_id} queued on {task.backend}"  # the id to look it up in /api/task
        yield sse_event("log_message", last)
        async for message in follow_task(services, task, sub):
            if message is None:
                yield SSE_KEEPALIVE
                continue
            line = log_line(task, message)
            if line and line != last:
                last = line
                yield sse_event("log_message", line)
        if task.status != TaskStatus.COMPLETED:
            yield sse_event("error", failure_line(task))
        result, problems = await build_result(services, task)
        for problem in problems:
            yield sse_event("error", problem)
        finished = True
        yield sse_event("prompt_result", result)
    finally:
        services.hub.unsubscribe(sub)
        if not finished:
            _stop(services, task)


def _stop(services: Services, task: Task) -> None:
    """The caller went away: stop its task (it cannot be collected any more)."""
    if not task.status.final:
        services.manager.spawn(services.manager.interrupt(task), name=f"viewcomfy caller gone {task.task_id}")


async def build_result(services: Services, task: Task) -> tuple[dict[str, Any], list[str]]:
    """The six-key result (outputs inline as base64, read back from outputs/), and what went wrong reading them.

    A file that vanished from disk turns the result into ``status: "error"`` rather than a broken stream.
    """
    outputs: list[FileOutput] = []
    problems: list[str] = []
    if task.status == TaskStatus.COMPLETED:
        await services.local_outputs(task.outputs)
        for entry in task.outputs:
            try:
                data = await asyncio.to_thread(output_path(services, entry).read_bytes)
            except OSError as exc:
                problems.append(f"output {entry['filename']} could not be read back: {exc.strerror or exc}")
                continue
            name = (entry.get("comfyui") or {}).get("filename") or entry["filename"]
            outputs.append(
                FileOutput(
                    filename=name,
                    content_type=entry.get("content_type") or content_type(name),
                    data=base64.b64encode(data).decode("ascii"),
                    size=len(data),
                )
            )
    success = task.status == TaskStatus.COMPLETED and not problems
    result = result_to_json(
        {
            "prompt_id": task.prompt_id,
            "status": "success" if success else "error",
            "completed": task.status == TaskStatus.COMPLETED,
            "execution_time_seconds": task.execution_time or 0.0,
            "prompt": await services.manager.load_workflow(task),  # finished tasks keep it on disk only
            "outputs": outputs,
        }
    )
    return result, problems
