"""Jobs: submit, list, get, the workflow that ran, cancel, events. A v2 job is an ordinary ComfyGate task.

Submission goes through ComfyGate's own path (validation, the pool, the durable store), so a v2 job
shows in ``/api/tasks``, on ``/ws`` and in the debugger, and ``POST /api/interrupt/{id}`` stops it as
well as ``POST /api/v2/jobs/{id}/cancel`` does. Cancel uses the task manager's interrupt, which works on
every ComfyUI generation: a job still waiting is removed from ComfyGate's queue or ComfyUI's
(``POST /queue {"delete": ...}``), a running one is interrupted and reads ``canceling`` until ComfyUI
confirms.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.dependencies import get_services
from api.v2 import asset_refs, asset_sharing, listing, view
from api.v2.bodies import caller_scope, idempotency_key, read_object
from api.v2.errors import V2Error, from_comfygate
from api.v2.events import JobStream
from api.v2.labels import check_labels
from api.v2.models import IDEMPOTENCY_HEADER, SUBMIT_BODY, Job, JobList, JobWorkflow, errors
from api.v2.state import V2State, get_state
from core.errors import ComfyGateError, ComfyUIUnavailable
from core.task import Task, TaskStatus
from gateway.integration import public_base
from gateway.services import Services
from gateway.submission import prepare_submission
from workflow.format import detect_format

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])
_ASSETS_HERE = "uploaded v2 assets (stored on the replica that took the upload)"
_EXTRA_DATA_HERE = "v2 extra_data (kept in this replica's memory)"

FINISHING_WAIT = 5.0  # s a poll may wait for the outputs of a task ComfyUI has finished


# --- helpers ---------------------------------------------------------------------------------------
def task_or_404(services: Services, job_id: str) -> Task:
    """The task behind a job id (ComfyGate's task id; the hyphenated UUID form is accepted too)."""
    task = services.store.get(job_id)
    if task is None:
        try:
            task = services.store.get(uuid.UUID(job_id).hex)
        except ValueError:
            task = None
    if task is None:
        raise V2Error(404, "not_found", f"no job {job_id!r}")
    return task


def queue_position(services: Services, task: Task) -> int | None:
    """1-based place among the tasks ahead of it: ComfyGate's queue first, then its backend's queue."""
    manager = services.manager
    if task.status == TaskStatus.PENDING:
        for index, task_id in enumerate(manager.pending, start=1):
            if task_id == task.task_id:
                return index
        return None
    if task.status != TaskStatus.QUEUED:
        return None
    backend = manager.backends.get(task.backend or "")
    if backend is None:
        return None
    ahead = 0
    for other_id in backend.inflight:
        other = services.store.get(other_id) if other_id != task.task_id else None
        if other is not None and other.status == TaskStatus.QUEUED and (other.queued_at or 0) < (task.queued_at or 0):
            ahead += 1
    return ahead + 1


def finishing(services: Services, task: Task) -> bool:
    """ComfyGate is fetching the task's outputs, the last step before its end: every output node has
    reported (``executed``: the downloads start then), or ComfyUI has finished the prompt (its backend runs
    something else, or nothing) while the task still reads running."""
    if task.status != TaskStatus.RUNNING or task.extra.get("interrupt_requested"):
        return False
    backend = services.manager.pool.comfyui.get(task.backend or "")
    if backend is None or not backend.connected:
        return False
    return backend.running_prompt != task.prompt_id or services.manager.outputs.all_reported(task, backend)


async def until_final(services: Services, task: Task, timeout: float) -> Task:
    """``task`` once final (or as it is after ``timeout`` s), woken by its own updates on the hub."""
    sub = services.hub.subscribe({task.task_id})
    try:
        if task.status.final:
            return task
        async with asyncio.timeout(timeout):
            async for _ in sub:
                if task.status.final:
                    break
    except TimeoutError:
        pass
    finally:
        services.hub.unsubscribe(sub)
    return services.store.get(task.task_id) or task


def render(services: Services, state: V2State, task: Task, base: str) -> dict[str, Any]:
    return view.job_of(
        task,
        base,
        retention=services.settings.v2_job_retention,
        queue_position=queue_position(services, task),
        hashes=state.hashes,
    )


def check_workflow(body: dict[str, Any], convert_ui: bool) -> dict[str, Any]:
    """The submitted workflow: an API-format graph (a UI export only with the conversion extension on)."""
    for reserved in ("webhook_url", "inputs"):
        if body.get(reserved) is not None:
            raise V2Error(422, "invalid_request", f"'{reserved}' is reserved by the contract and not accepted yet")
    workflow = body.get("workflow")
    if not isinstance(workflow, dict) or not workflow:
        raise V2Error(
            422,
            "invalid_workflow",
            "send 'workflow': the API-format graph, an object of node id → {class_type, inputs}",
        )
    if is_ui_format(workflow) and not convert_ui:
        raise V2Error(
            422,
            "workflow_format_ui",
            "this is a UI export (nodes/links); export the workflow in API format (Workflow → Export (API)),"
            " or let ComfyGate convert it with COMFYUI_V2_CONVERT_UI_WORKFLOWS=true",
        )
    return workflow


def check_extra_data(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"api_key_comfy_org"}:
        raise V2Error(400, "invalid_request", "'extra_data' accepts only 'api_key_comfy_org' (a partner-node API key)")
    if "api_key_comfy_org" in raw and not isinstance(raw["api_key_comfy_org"], str):
        raise V2Error(400, "invalid_request", "'extra_data.api_key_comfy_org' must be a string")
    return dict(raw) or None


def is_ui_format(workflow: dict[str, Any]) -> bool:
    try:
        return detect_format(workflow) == "ui"
    except Exception:
        return isinstance(workflow.get("nodes"), list) and "links" in workflow


# --- routes ----------------------------------------------------------------------------------------
@router.post(
    "/jobs",
    status_code=201,
    summary="Submit a workflow (API format) as a job",
    responses={201: {"model": Job, "description": "the job, queued"}, **errors(400, 401, 413, 422, 429, 503)},
    openapi_extra={"requestBody": SUBMIT_BODY, "parameters": [IDEMPOTENCY_HEADER]},
)
async def submit_job(
    request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    key = idempotency_key(request)
    body = await read_object(request)
    workflow = check_workflow(body, services.settings.v2_convert_ui_workflows)
    labels = check_labels(body.get("metadata"))
    extra_data = check_extra_data(body.get("extra_data"))
    refs = [ref for _, _, ref in asset_refs.find_refs(workflow)]
    wanted = {asset_id for ref in refs if (asset_id := asset_refs.ref_id(ref))}
    records = {asset_id: await asset_sharing.find(state, asset_id) for asset_id in wanted}
    scope = caller_scope(request)
    if key is not None and not await state.keys.take(scope, key, "submitting"):
        raise V2Error(
            422,
            "idempotency_key_reuse",
            "this Idempotency-Key was used before; keys are single-use: list or poll your jobs instead of resubmitting",
        )
    extra: dict[str, Any] = {"source": "api_v2"}
    try:
        resolved, inputs = asset_refs.resolve(workflow, records) if refs else (workflow, [])
        prepared = await prepare_submission(services, resolved, None, None)
        if labels:
            extra["v2_metadata"] = labels
        if inputs:
            extra["v2_inputs"] = inputs  # names and where the bytes are; uploaded at dispatch
        if extra_data:
            extra["v2_partner_key"] = state.remember_partner_key(extra_data)  # a token: the key stays in memory
        # Files and partner keys only reach a ComfyUI server (a ViewComfy backend has no place for them). Partner keys,
        # and files without an object store to share them, are kept here (several replicas: posted by this one, or
        # refused); shared assets reach the backend from whichever replica posts the job.
        kind = "comfyui" if inputs or extra_data else None
        local = inputs if asset_sharing.shared(state) is None else []
        needs = [what for what, used in ((_ASSETS_HERE, local), (_EXTRA_DATA_HERE, extra_data)) if used]
        task = await services.manager.submit(prepared.workflow, extra=extra, kind=kind, bound_here=" and ".join(needs))
    except (V2Error, ComfyGateError) as exc:
        state.forget_partner_key(extra.get("v2_partner_key"))
        if key is not None and not isinstance(exc, ComfyUIUnavailable):
            await state.keys.give_back(scope, key)  # refused before any job existed: the same key may be retried
        # (ComfyUI unreachable mid-submit: it may hold the prompt, so the key stays spent.)
        if isinstance(exc, V2Error):
            raise
        raise from_comfygate(exc) from exc
    if key is not None:
        state.keys.settle(scope, key, task.task_id)
    return JSONResponse(render(services, state, task, public_base(services, request)), status_code=201)


@router.get(
    "/jobs",
    summary="List jobs, newest first (status and label filters, cursor pages)",
    responses={200: {"model": JobList}, **errors(400, 401)},
    openapi_extra={
        "parameters": [
            {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "comma-separated"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": listing.LIST_MAX}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "a next_cursor"},
        ]
    },
)
async def list_jobs(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    query = listing.parse(request.query_params, request.query_params.multi_items(), services.store)
    return JSONResponse(listing.page(services.store, query))


@router.get(
    "/jobs/{job_id}",
    summary="A job: status, progress, outputs so far",
    responses={200: {"model": Job}, **errors(401, 404)},
)
async def get_job(
    job_id: str, request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    task = task_or_404(services, job_id)
    if finishing(services, task):
        # ComfyUI is done with it; ComfyGate is fetching its outputs (milliseconds for most files):
        # answer with them rather than "running" and a poll interval later (the SDK's next poll is 0.5 s on).
        task = await until_final(services, task, FINISHING_WAIT)
    elif not task.status.final and services.settings.v2_poll_hold > 0:
        # A long poll: a short job ends within the hold and its first poll already has the outputs.
        task = await until_final(services, task, services.settings.v2_poll_hold)
    return JSONResponse(render(services, state, task, public_base(services, request)))


@router.get(
    "/jobs/{job_id}/workflow",
    summary="The API-format workflow the job ran (assets replaced by their names)",
    responses={200: {"model": JobWorkflow}, **errors(401, 404)},
)
async def get_job_workflow(job_id: str, services: Services = Depends(get_services)) -> JSONResponse:
    task = task_or_404(services, job_id)
    workflow = await services.manager.load_workflow(task)
    if not workflow:
        raise V2Error(404, "not_found", f"the workflow of job {job_id!r} is no longer kept")
    return JSONResponse({"workflow": workflow, "format": "api"})


@router.get(
    "/jobs/{job_id}/logs",
    status_code=204,
    summary="What the run printed: ComfyGate captures no logs, so 204 for every job it holds (the contract's rule)",
    responses={204: {"description": "this job has no log"}, **errors(401, 404)},
)
async def get_job_logs(job_id: str, services: Services = Depends(get_services)) -> Response:
    task_or_404(services, job_id)
    return Response(status_code=204)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job (queued: removed; running: interrupted)",
    responses={200: {"model": Job, "description": "the job: canceling, or its final state"}, **errors(401, 404, 503)},
)
async def cancel_job(
    job_id: str, request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    task = task_or_404(services, job_id)
    if not task.status.final:
        try:
            await services.manager.interrupt(task)
        except ComfyGateError as exc:
            raise from_comfygate(exc) from exc
    return JSONResponse(render(services, state, task, public_base(services, request)))


@router.get(
    "/jobs/{job_id}/events",
    summary="The job's live events (SSE): status, progress, preview, output",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors(401, 404, 429)},
)
async def job_events(
    job_id: str, request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> StreamingResponse:
    task = task_or_404(services, job_id)
    settings = services.settings
    if state.streams >= settings.v2_max_event_streams:
        raise V2Error(
            429,
            "too_many_streams",
            f"{state.streams} event streams are open, the limit (COMFYUI_V2_MAX_EVENT_STREAMS);"
            " poll GET /api/v2/jobs/{id} meanwhile",
            retry_after=5,
        )
    stream = JobStream(
        services,
        task.task_id,
        public_base(services, request),
        retention=settings.v2_job_retention,
        keepalive=settings.sse_keepalive,
        previews=state.previews,
        queue_position=lambda t: queue_position(services, t),
    )

    async def body() -> Any:
        state.streams += 1  # counted once running: a stream that never starts never ends either
        try:
            async for chunk in stream.frames():
                yield chunk
        finally:
            state.streams -= 1

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
