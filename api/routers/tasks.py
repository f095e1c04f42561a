"""Routes about tasks: submit a workflow, follow a task, list tasks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.dependencies import get_services
from api.models import SubmitResponse, TaskList, TaskOut
from api.submit_body import SUBMIT_OPENAPI, submit_body
from core.errors import InvalidRequest
from core.task import TaskStatus
from gateway import submission
from gateway.services import Services
from gateway.submission import SubmitOrder
from gateway.task_search import search_tasks
from gateway.wait import SYNC_QUERY_PARAMETERS, sync_options

router = APIRouter(prefix="/api", tags=["tasks"])


@router.post(
    "/workflow/submit",
    response_model=SubmitResponse,
    summary="Run a workflow (inline or saved) with parameters",
    description="JSON body, or multipart/form-data: a `request` field holding the JSON body plus one image "
    "file part per image parameter, named by its key (`1.image` or `1-inputs-image`).",
    responses={422: {"description": "invalid parameters, or ComfyUI's node_errors"}, 503: {"description": "busy"}},
    openapi_extra={**SUBMIT_OPENAPI, "parameters": SYNC_QUERY_PARAMETERS},
)
async def submit(request: Request) -> Any:
    # Read here rather than as three FastAPI dependencies (~40 µs of CPU a submission, issue 18); the
    # body and the query parameters are documented through openapi_extra.
    services: Services = request.app.state.services
    body = await submit_body(request, services)
    sync = await sync_options(request)
    order = SubmitOrder(
        workflow=body.workflow,
        workflow_name=body.workflow_name,
        params=body.params,
        backend=body.backend,
        timeout=body.timeout,
        webhook=body.webhook,
        wait=body.wait,
        output_format=body.output_format,
        partner_key=body.api_key_comfy_org.get_secret_value() if body.api_key_comfy_org else None,
    )
    return await submission.submit(services, request, order, sync)


@router.get("/task/{task_id}", response_model=TaskOut, summary="One task: status, progress, outputs, error")
async def get_task(
    task_id: str,
    services: Services = Depends(get_services),
    include: str | None = Query(None, description='"workflow": also the API workflow the task ran (values applied)'),
) -> dict[str, Any]:
    task = services.manager.get(task_id)
    wanted = {part.strip() for part in (include or "").split(",") if part.strip()}
    if wanted - {"workflow"}:
        raise InvalidRequest(f"include={include!r}: the only extra a task has is 'workflow'")
    body = task.to_dict()
    if "workflow" in wanted:
        body["workflow"] = await services.manager.load_workflow(task)
    return body


@router.get("/tasks", response_model=TaskList, summary="Tasks, newest first, optionally by status")
async def list_tasks(
    services: Services = Depends(get_services),
    status: str | None = Query(None, description="comma-separated statuses, e.g. running,queued"),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=1000),
    q: str | None = Query(
        None,
        max_length=200,
        description="only tasks whose id starts with it, or whose workflow name or a text "
        "parameter contains it (case-insensitive)",
    ),
    workflow_name: str | None = Query(None, max_length=300, description="only tasks of this saved workflow"),
) -> dict[str, Any]:
    wanted: set[TaskStatus] | None = None
    if status:
        try:
            wanted = {TaskStatus(s.strip()) for s in status.split(",") if s.strip()}
        except ValueError as exc:
            raise InvalidRequest(
                f"unknown status in {status!r}; use any of {', '.join(s.value for s in TaskStatus)}"
            ) from exc
    if q or workflow_name is not None:
        total, tasks = await search_tasks(services.store, wanted, q, workflow_name, offset, limit)
    else:
        total, tasks = services.store.query(wanted, offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "tasks": [t.to_dict() for t in tasks]}
