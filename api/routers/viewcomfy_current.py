"""ViewComfy's current API, served by ComfyGate: the published client with ``API_URL`` = ComfyGate runs here.

Routes (the central API's paths; see ``backends/viewcomfy/current_protocol.py`` for the shapes):

* ``POST /api/workflow/infer``: schedule; 201 at once with ``{"data": {prompt_id, message, workflow}}``.
  With a ``sid`` of a socket.io connection, the run's events go there (``api/viewcomfy_socketio.py``).
* ``GET /api/workflow/infer/?prompt_ids=..``: the runs' records (running ones with their current status).
* ``POST /api/workflow/infer/cancel``: interrupt the run; 201.
* ``GET /api/viewcomfy/files/{task_id}/{filename}?expires=&signature=``: an output, by signed link.

Decisions:

* A run is an ordinary task (``source: viewcomfy``, on ComfyUI backends only); its id is the client's
  ``prompt_id`` as a UUID's hex, so results and cancel are lookups that survive a restart. A prompt id
  that is not a UUID is a 400; one already used is a 409.
* Workflow: ``workflow_api`` when sent, else the saved workflow named by ``view_comfy_api_url`` (its last
  path segment when it is a URL), else ``COMFYUI_VIEWCOMFY_DEFAULT_WORKFLOW``. Params, files and the
  seed rule as on the older endpoint; the same credentials.
* Scheduling is decoupled from the socket: a client that disconnects leaves the run going (it can poll or
  cancel it), unlike the older SSE endpoint where the open request is the only handle.
* Events: log lines as the older endpoint writes them (status, "KSampler (node 3): step 4/20"),
  ``infer_executed_message`` per node output, then exactly one of result (completed),
  error (failed, timeout) or canceled (interrupted).
* Statuses in results: success, error (failed / timeout), canceled (interrupted), else the task's own
  (pending, queued, running), with ``completed: false``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from api.dependencies import get_services
from api.viewcomfy_form import build_params, json_object_body, parse_infer_form
from api.viewcomfy_socketio import ViewComfySocketIO
from backends.viewcomfy.current_protocol import (
    SUCCESS,
    Event,
    LinkOutput,
    LinkResult,
    Scheduled,
    message,
    result_json,
    to_record,
)
from core.errors import Conflict, InvalidRequest, NotFound
from core.media_types import content_type
from core.task import Task, TaskStatus
from events.hub import Subscription
from gateway.links import OutputLinks, SignedLinks
from gateway.services import Services
from gateway.submission import prepare_submission
from gateway.viewcomfy import check_credentials, executed_node, failure_line, follow_task, log_line, output_path
from security.safe_paths import is_active_type, output_headers

router = APIRouter(tags=["viewcomfy"])

_FORM_FIELDS: dict[str, Any] = {
    "prompt_id": {"type": "string", "format": "uuid", "description": "a UUID you make: the run's id"},
    "view_comfy_api_url": {"type": "string", "description": "a saved workflow's name, or a URL ending in one"},
    "params": {"type": "string", "description": 'one JSON object as a string: {"6-inputs-text": "a fox"}'},
    "workflow_api": {"type": "string", "description": "an API-format workflow as a JSON string (wins)"},
    "sid": {"type": "string", "description": "your socket.io session id, for live events"},
}
_SCHEDULE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": _FORM_FIELDS}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": _FORM_FIELDS,
                    "additionalProperties": {"type": "string", "format": "binary"},
                    "description": "plus file parts named by their parameter key, e.g. 52-inputs-image",
                }
            },
        },
    }
}
_CANCEL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["prompt_id"],
                    "properties": {
                        "prompt_id": {"type": "string", "format": "uuid"},
                        "view_comfy_api_url": {"type": "string"},
                    },
                }
            }
        },
    }
}
MAX_PROMPT_IDS = 100
MAX_CANCEL_BODY = 16 * 1024
_STATUS = {
    TaskStatus.COMPLETED: "success",
    TaskStatus.FAILED: "error",
    TaskStatus.TIMEOUT: "error",
    TaskStatus.INTERRUPTED: "canceled",
}


# ---------------------------------------------------------------------------------------------- schedule
@router.post(
    "/api/workflow/infer",
    status_code=201,
    summary="Schedule a run as ViewComfy's current API does (answers at once; events over socket.io)",
    openapi_extra=_SCHEDULE_BODY,
    responses={
        400: {"description": "no workflow, malformed body, prompt_id not a UUID"},
        401: {"description": "client_id / client_secret (or API key) missing or wrong"},
        409: {"description": "prompt_id already used"},
        422: {"description": "parameters that do not fit the workflow, or ComfyUI refused the prompt"},
        503: {"description": "no ComfyUI backend is reachable"},
    },
)
async def schedule(request: Request, services: Services = Depends(get_services)) -> Response:
    check_credentials(request, services)
    settings = services.settings
    body = await parse_infer_form(request, max_file_bytes=settings.max_upload_bytes)
    prompt_id, task_id = parse_prompt_id(body.fields.get("prompt_id"))
    if services.store.get(task_id) is not None:
        raise Conflict(f"prompt_id {prompt_id} is already used; send a new uuid4", field="prompt_id")
    workflow, name = body.workflow_api, None
    if workflow is None:
        name = workflow_name(body.fields.get("view_comfy_api_url")) or settings.viewcomfy_default_workflow
        if not name:
            raise InvalidRequest(
                "no workflow to run: send workflow_api (an API-format workflow as a JSON string), or name a "
                "saved workflow in view_comfy_api_url, or set COMFYUI_VIEWCOMFY_DEFAULT_WORKFLOW",
                field="view_comfy_api_url",
            )
    sockets: ViewComfySocketIO = services.extras["viewcomfy_socketio"]
    sid = body.fields.get("sid") or None
    if sid is not None and not sockets.connected(sid):
        raise InvalidRequest(
            f"sid {sid[:64]!r} is not a connected socket.io session: connect to /socket.io/ first, then send "
            "its sid (or leave sid out and poll GET /api/workflow/infer/)",
            field="sid",
        )
    params = await build_params(services, body)
    prepared = await prepare_submission(services, workflow, name, params, viewcomfy_seed_rule=True)
    task = await services.manager.submit(
        prepared.workflow,
        params=prepared.applied,
        workflow_name=prepared.name,
        extra={"source": "viewcomfy", "viewcomfy_api": "current"},
        kind="comfyui",
        task_id=task_id,
    )
    if sid is not None:
        sub = services.hub.subscribe({task.task_id})  # now, before any await: no event is missed
        base = link_base(request, services)
        services.manager.spawn(
            emit_events(services, sockets, task, sub, prompt_id, sid, base), name=f"viewcomfy events {task_id}"
        )
    scheduled = Scheduled(
        prompt_id=prompt_id,
        message=f"scheduled as ComfyGate task {task.task_id} on {task.backend or 'the next free backend'}",
        workflow=prepared.name or "workflow_api",
    )
    return JSONResponse({"data": scheduled.model_dump(mode="json")}, status_code=201)


def parse_prompt_id(raw: str | None) -> tuple[str, str]:
    """(the client's prompt id, the task id): a new uuid4 when absent; a 400 when not a UUID."""
    if raw is None or not raw.strip():
        value = uuid.uuid4()
    else:
        try:
            value = uuid.UUID(raw.strip())
        except ValueError:
            raise InvalidRequest(
                f"prompt_id must be a UUID like {uuid.uuid4()}, got {raw[:80]!r}", field="prompt_id"
            ) from None
    return str(value), value.hex


def workflow_name(view_comfy_api_url: str | None) -> str | None:
    """The saved workflow named by ``view_comfy_api_url``: the value, or a URL's last path segment."""
    if not view_comfy_api_url or not view_comfy_api_url.strip():
        return None
    value = view_comfy_api_url.strip()
    if "://" in value:
        segments = [s for s in urlsplit(value).path.split("/") if s]
        return segments[-1] if segments else None
    return value


def link_base(request: Request, services: Services) -> str:
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


# ---------------------------------------------------------------------------------------------- events
async def emit_events(
    services: Services,
    sockets: ViewComfySocketIO,
    task: Task,
    sub: Subscription,
    prompt_id: str,
    sid: str,
    base: str,
) -> None:
    """Follow the task and emit its events to ``sid`` until it ends or that socket goes away."""
    try:
        last = f"ComfyGate task {task.task_id} queued on {task.backend or 'the next free backend'}"
        await sockets.emit(Event.LOG, message(prompt_id, last), sid)
        async for text in follow_task(services, task, sub):
            if not sockets.connected(sid):
                return  # the run goes on: it can still be polled or cancelled
            if text is None:
                continue
            node = executed_node(text)
            if node is not None:
                await sockets.emit(Event.EXECUTED, message(prompt_id, {"node": node}), sid)
                continue
            line = log_line(task, text)
            if line and line != last:
                last = line
                await sockets.emit(Event.LOG, message(prompt_id, line), sid)
        await emit_end(services, sockets, task, prompt_id, sid, base)
    finally:
        services.hub.unsubscribe(sub)


async def emit_end(
    services: Services, sockets: ViewComfySocketIO, task: Task, prompt_id: str, sid: str, base: str
) -> None:
    """Exactly one of: the result (completed), canceled (interrupted), error (failed, timeout, files gone)."""
    if task.status == TaskStatus.COMPLETED:
        result = await link_result(services, task, prompt_id, base)
        if result.status == SUCCESS:
            await sockets.emit(Event.RESULT, result_json(result), sid)
        else:
            await sockets.emit(Event.ERROR, message(prompt_id, str((result.error_data or {}).get("message"))), sid)
    elif task.status == TaskStatus.INTERRUPTED:
        await sockets.emit(Event.CANCELED, message(prompt_id, failure_line(task)), sid)
    else:
        await sockets.emit(Event.ERROR, message(prompt_id, failure_line(task)), sid)


# ---------------------------------------------------------------------------------------------- results
async def link_result(services: Services, task: Task, prompt_id: str, base: str) -> LinkResult:
    """The result object with outputs as signed links; a file gone from disk makes it an error."""
    links: OutputLinks = services.extras["output_links"]  # signed ComfyGate links, or another store's
    outputs: list[LinkOutput] = []
    problems: list[str] = []
    if task.status == TaskStatus.COMPLETED:
        await services.local_outputs(task.outputs)
        for entry in task.outputs:
            path = output_path(services, entry)
            try:
                size = (await asyncio.to_thread(path.stat)).st_size
            except OSError as exc:
                problems.append(f"output {entry['filename']} is gone: {exc.strerror or exc}")
                continue
            outputs.append(
                LinkOutput(
                    filename=(entry.get("comfyui") or {}).get("filename") or entry["filename"],
                    content_type=entry.get("content_type") or content_type(entry["filename"]),
                    size=size,
                    filepath=links.link(base, task.task_id, entry["filename"]),
                )
            )
    status = _STATUS.get(task.status, task.status.value)
    error_data: Any = None
    if problems:
        status, error_data = "error", {"type": "output_missing", "message": "; ".join(problems)}
    elif task.status.final and task.status != TaskStatus.COMPLETED:
        error_data = task.error or {"type": task.status.value}
    return LinkResult(
        prompt_id=prompt_id,
        status=status,
        completed=task.status == TaskStatus.COMPLETED and not problems,
        execution_time_seconds=task.execution_time or 0.0,
        prompt=await services.manager.load_workflow(task),
        outputs=outputs,
        error_data=error_data,
    )


@router.get(
    "/api/workflow/infer/",
    summary="Results of runs by prompt id, as ViewComfy's current API answers them",
    responses={401: {"description": "credentials missing or wrong"}, 400: {"description": "more than 100 ids"}},
)
async def results(
    request: Request,
    prompt_ids: list[str] = Query(default_factory=list, description="the runs' prompt ids (repeat the parameter)"),
    services: Services = Depends(get_services),
) -> list[dict[str, Any]]:
    check_credentials(request, services)
    if len(prompt_ids) > MAX_PROMPT_IDS:
        raise InvalidRequest(f"at most {MAX_PROMPT_IDS} prompt_ids per call, got {len(prompt_ids)}", field="prompt_ids")
    base = link_base(request, services)
    records = []
    for raw in prompt_ids:
        task = find_run(services, raw)
        if task is None:
            continue  # the client builds a result from every entry: an unknown id is simply absent
        prompt_id = str(uuid.UUID(task.task_id))
        result = await link_result(services, task, prompt_id, base)
        records.append(
            to_record(
                result,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(task.created_at)),
                workflow=task.workflow_name,
                client_id=None,
                user=None,
            )
        )
    return records


def find_run(services: Services, raw: str) -> Task | None:
    try:
        task_id = uuid.UUID(raw.strip()).hex
    except ValueError:
        return None
    return services.store.get(task_id)


# ---------------------------------------------------------------------------------------------- cancel
@router.post(
    "/api/workflow/infer/cancel",
    status_code=201,
    summary="Cancel a run (queued or running), as ViewComfy's current API does",
    openapi_extra=_CANCEL_BODY,
    responses={401: {"description": "credentials missing or wrong"}, 404: {"description": "no such run"}},
)
async def cancel(request: Request, services: Services = Depends(get_services)) -> Response:
    check_credentials(request, services)
    raw = await request.body()
    if len(raw) > MAX_CANCEL_BODY:
        raise InvalidRequest(f"the cancel body must be a small JSON object (at most {MAX_CANCEL_BODY} bytes)")
    body = json_object_body(raw, '{"prompt_id": "<uuid>", "view_comfy_api_url": "..."}')
    raw_id = body.get("prompt_id") or body.get("promptId")
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise InvalidRequest('prompt_id is required: {"prompt_id": "<uuid>"}', field="prompt_id")
    task = find_run(services, raw_id)
    if task is None:
        raise NotFound(f"no run with prompt_id {raw_id[:80]!r}")
    await services.manager.interrupt(task)
    status = _STATUS.get(task.status, task.status.value)
    note = f"the run has ended ({status})" if task.status.final else "cancel requested"
    return JSONResponse({"prompt_id": str(uuid.UUID(task.task_id)), "status": status, "message": note}, 201)


# ---------------------------------------------------------------------------------------------- links
@router.get(
    "/api/viewcomfy/files/{task_id}/{filename}",
    summary="An output by signed link (what the result's filepath points to; no credentials needed)",
    response_class=FileResponse,
    responses={403: {"description": "signature wrong or link expired"}, 404: {"description": "no such output"}},
)
async def output_file(
    task_id: str, filename: str, expires: str = "", signature: str = "", services: Services = Depends(get_services)
) -> Response:
    links = services.extras["output_links"]
    if not isinstance(links, SignedLinks):
        raise NotFound("outputs are linked from elsewhere (object storage), not served here")
    links.verify(task_id, filename, expires, signature)  # LinkRefused: 403 saying why
    task = services.store.get(task_id)
    entry = next((e for e in (task.outputs if task else []) if e.get("filename") == filename), None)
    if entry is None:
        raise NotFound(f"no output {filename!r} in task {task_id}")
    await services.local_outputs([entry])
    path = output_path(services, entry)
    if not await asyncio.to_thread(path.is_file):
        raise NotFound(f"output {filename!r} is no longer on disk")
    media = entry.get("content_type") or content_type(filename)
    return FileResponse(  # served on ComfyGate's origin: never sniffed, an active type only as a download
        path,
        media_type=media,
        headers=output_headers(media),
        filename=filename,
        content_disposition_type="attachment" if is_active_type(media) else "inline",
    )
