"""Routes for the workflow library and for looking into workflows: upload, list, get, update, delete,
convert and detect parameters. Used by API clients and by the browser debugger.

Decisions:
- Files are stored as uploaded: a UI-format workflow stays UI so it can be re-opened in ComfyUI (a
  `{"prompt": {...}}` request body is unwrapped first). Responses always carry the API-format
  workflow and its detected params, so a caller never has to convert anything itself.
- `POST /workflow/update` with `params` stores the API format: new defaults are values of API inputs,
  and writing them back into a UI graph's `widgets_values` (subgraphs, primitives, links) would be a
  second, riskier converter. The response says so: `format: "api"`, `converted: true`. Updating with a
  whole `workflow` stores it as sent, like an upload. Update never creates a file (404): upload does.
- Everything stored is checked first against a reachable backend's object_info (conversion, unknown
  classes, dangling links), so the library only holds workflows that can be submitted. No backend →
  503 with Retry-After (ServiceBusy), since nothing can be converted or described without one.
- Writes are serialised by one lock per app, so `overwrite=false` cannot race and concurrent updates
  do not lose each other's changes. File I/O runs in threads (WorkflowLibrary); so do conversion and
  detection, which are CPU work proportional to the graph size.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, UploadFile
from fastapi.openapi.models import Example

from api.dependencies import get_services
from api.models import (
    ConvertOut,
    ErrorBody,
    WorkflowDeleted,
    WorkflowIn,
    WorkflowListOut,
    WorkflowOut,
    WorkflowParamsOut,
    WorkflowUpdateIn,
)
from core.errors import InvalidJSON, InvalidRequest
from gateway.offload import run_cpu
from gateway.services import Services
from gateway.submission import checked_api
from gateway.uploads import read_limited
from security.json_safety import UnsafeJSON, strict_loads
from security.limits import json_depth
from security.safe_paths import sanitize_filename
from workflow.format import detect_format, to_api, unwrap_prompt
from workflow.library import MAX_WORKFLOW_BYTES, normalise_name
from workflow.missing import missing_classes, unknown_classes_error, without_classes
from workflow.param_groups import arrange_params
from workflow.params import apply_params, detect_params
from workflow.size import check_node_count

MAX_JSON_DEPTH = 64  # as COMFYUI_MAX_JSON_DEPTH's default; workflows nest 3-4 levels

router = APIRouter(prefix="/api", tags=["workflows"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad name, not JSON, or nothing to do"},
    404: {"model": ErrorBody, "description": "no such saved workflow"},
    422: {"model": ErrorBody, "description": "not a workflow, unknown node class, or invalid params"},
    503: {"model": ErrorBody, "description": "no ComfyUI backend reachable to describe its nodes"},
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._\- ]")
_WORKFLOW_EXAMPLE: dict[str, Example] = {
    "api": {
        "summary": "API format",
        "value": {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "color": 0}}},
    },
    "wrapped": {
        "summary": "wrapped",
        "value": {"workflow": {"nodes": [], "links": []}},
    },
}


# --------------------------------------------------------------------------------------------------
# helpers


def parse_json(data: bytes, what: str) -> Any:
    """Parse uploaded bytes; a 400 points at the line and column so the file can be fixed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"{what} is not UTF-8 text (byte {exc.start}): is it really a workflow JSON?") from exc
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:  # before json.loads, which would recurse that deep
        raise InvalidJSON(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels; no workflow is")
    try:
        return strict_loads(text)  # no NaN, lone surrogate or 1e400 in the library (json_safety)
    except UnsafeJSON as exc:
        raise exc.as_error() from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from exc


def name_from_filename(filename: str | None) -> str:
    """A library name from an uploaded file's name, made safe silently (the caller did not choose it)."""
    base = sanitize_filename(filename or "", "workflow.json")
    stem = base[:-5] if base.lower().endswith(".json") else base
    stem = _NAME_CHARS.sub("_", stem).lstrip("._- ")[:120] or "workflow"
    return normalise_name(stem)


def unwrap_body(body: dict[str, Any]) -> dict[str, Any]:
    """`{"workflow": {...}}` → the workflow; anything else is taken as the workflow itself.

    An API workflow may have a node with id "workflow", so only unwrap when the inner object is not a
    node (no class_type) and the outer one is not a UI graph.
    """
    inner = body.get("workflow")
    if isinstance(inner, dict) and "nodes" not in body and "class_type" not in inner:
        return inner
    return body


def _convert(
    workflow: Any, info: dict[str, Any], limit: int, *, validate: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """API format and the detected parameters, grouped as the user sees them (CPU work: run through run_cpu)."""
    api, titles, exposed = checked_api(workflow, info, limit, validate=validate)
    return api, arrange_params(detect_params(api, info), titles, exposed)


async def describe(
    services: Services, workflow: Any, backend: str | None, *, validate: bool = False
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(format, API workflow, params) of a workflow in either format, checked against a backend."""
    workflow = unwrap_prompt(workflow)
    fmt = detect_format(workflow)  # before asking for object_info: a non-workflow is a 422 even with no backend
    limit = services.settings.max_workflow_nodes
    check_node_count(workflow, limit)
    info = await services.object_info(backend)
    api, params = await run_cpu(_convert, workflow, info, limit, validate=validate)
    return fmt, api, params


def write_lock(services: Services) -> asyncio.Lock:
    lock = services.extras.get("workflow_write_lock")
    if lock is None:
        lock = services.extras["workflow_write_lock"] = asyncio.Lock()
    return lock


# --------------------------------------------------------------------------------------------------
# routes


@router.post(
    "/workflow/upload",
    response_model=WorkflowOut,
    summary="Save a workflow file (API or UI format) in the library and detect its parameters",
    responses={**_ERRORS, 409: {"model": ErrorBody, "description": "name taken"}, 413: {"model": ErrorBody}},
)
async def upload_workflow(
    services: Services = Depends(get_services),
    file: UploadFile = File(..., description="the workflow JSON: workflow.json (UI) or workflow_api.json (API)"),
    name: str | None = Form(None, description="library name (default: the uploaded file's name)"),
    overwrite: bool = Form(False, description="replace a workflow of the same name (else 409)"),
    backend: str | None = Form(None, description="the backend whose object_info checks the workflow"),
) -> dict[str, Any]:
    limit = min(services.settings.max_upload_bytes, MAX_WORKFLOW_BYTES)
    data = await read_limited(file, limit)
    if not data.strip():
        raise InvalidRequest("the uploaded file is empty")
    target = normalise_name(name) if name else name_from_filename(file.filename)
    workflow = unwrap_prompt(parse_json(data, f"uploaded file {file.filename or target!r}"))
    fmt, api, params = await describe(services, workflow, backend, validate=True)
    async with write_lock(services):
        saved = await services.library.save(target, workflow, overwrite=overwrite)
    return {"name": saved, "format": fmt, "workflow": api, "params": params}


@router.get("/workflows", response_model=WorkflowListOut, summary="The saved workflows, by name")
async def list_workflows(services: Services = Depends(get_services)) -> dict[str, Any]:
    return {"workflows": await services.library.list()}


@router.get(
    "/workflow/{filename:path}",
    response_model=WorkflowOut,
    summary="One saved workflow, in API format, with its parameters",
    responses=_ERRORS,
)
async def get_workflow(
    filename: str,
    services: Services = Depends(get_services),
    backend: str | None = Query(None, description="the backend whose object_info is used"),
    include: str | None = Query(None, description='"source": also the file as stored (a UI workflow as it is)'),
) -> dict[str, Any]:
    if include not in (None, "", "source"):
        raise InvalidRequest(f"include={include!r}: the only extra a saved workflow has is 'source'")
    stored = await services.library.load(filename)
    fmt, api, params = await describe(services, stored, backend)
    body = {"name": normalise_name(filename), "format": fmt, "workflow": api, "params": params}
    if include == "source":
        body["source"] = stored
    return body


@router.post(
    "/workflow/update",
    response_model=WorkflowOut,
    summary="Store new default parameter values in a saved workflow, or replace it",
    responses=_ERRORS,
)
async def update_workflow(body: WorkflowUpdateIn, services: Services = Depends(get_services)) -> dict[str, Any]:
    if body.workflow is None and not body.params:
        raise InvalidRequest("send 'params' (new default values) or 'workflow' (a replacement), or both")
    async with write_lock(services):
        stored = await services.library.load(body.name)  # 404 when missing, in both cases
        workflow = unwrap_prompt(body.workflow if body.workflow is not None else stored)
        fmt, api, params = await describe(services, workflow, body.backend, validate=True)
        converted = False
        if body.params:
            info = await services.object_info(body.backend)
            api, _ = await run_cpu(apply_params, api, body.params, info)
            params = await run_cpu(detect_params, api, info)
            converted, fmt, workflow = fmt == "ui", "api", api
        saved = await services.library.save(body.name, workflow, overwrite=True)
    return {"name": saved, "format": fmt, "workflow": api, "params": params, "converted": converted}


@router.delete(
    "/workflow/{filename:path}",
    response_model=WorkflowDeleted,
    summary="Remove a saved workflow",
    responses={400: _ERRORS[400], 404: _ERRORS[404]},
)
async def delete_workflow(filename: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    async with write_lock(services):
        return {"deleted": await services.library.delete(filename)}


@router.post(
    "/workflow/convert",
    response_model=ConvertOut,
    summary="Convert a workflow (UI or API format, raw or as {workflow}) to API format",
    responses={422: _ERRORS[422], 503: _ERRORS[503]},
)
async def convert_workflow(
    services: Services = Depends(get_services),
    body: dict[str, Any] = Body(..., description="a workflow, or {workflow}", openapi_examples=_WORKFLOW_EXAMPLE),
    backend: str | None = Query(None, description="the backend whose object_info is used"),
) -> dict[str, Any]:
    workflow = unwrap_prompt(unwrap_body(body))
    fmt = detect_format(workflow)
    limit = services.settings.max_workflow_nodes
    check_node_count(workflow, limit)
    info = await services.object_info(backend)
    api = await run_cpu(to_api, workflow, info)
    check_node_count(api, limit, "the workflow, with its subgraphs expanded,")
    return {"format": fmt, "workflow": api}


@router.post(
    "/workflow/params",
    response_model=WorkflowParamsOut,
    summary="Detect the editable parameters of an inline workflow (not saved)",
    responses={422: _ERRORS[422], 503: _ERRORS[503]},
)
async def workflow_params(
    body: WorkflowIn,
    services: Services = Depends(get_services),
    partial: bool = Query(
        False,
        description="describe a workflow whose node classes are not all installed, for viewing: the missing "
        "ones are listed in missing_classes and left out of workflow and params, and runnable is false",
    ),
) -> dict[str, Any]:
    workflow = unwrap_prompt(body.workflow)
    detect_format(workflow)  # a non-workflow is a 422 even with no backend
    check_node_count(workflow, services.settings.max_workflow_nodes)  # before walking it
    info = await services.object_info(body.backend)
    missing = await run_cpu(missing_classes, workflow, info)
    if missing and not partial:
        raise unknown_classes_error(missing)
    if missing:
        workflow = await run_cpu(without_classes, workflow, {m["class_type"] for m in missing})
    fmt, api, params = await describe(services, workflow, body.backend)
    return {"format": fmt, "workflow": api, "params": params, "missing_classes": missing, "runnable": not missing}
