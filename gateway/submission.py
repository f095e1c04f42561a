"""From what a caller sent (inline or saved workflow, params) to an API-format prompt ready to run, and run.

``submit`` is the whole submission path without a route: whichever public API received the request
(ComfyGate's JSON or multipart submit today) hands it a ``SubmitOrder``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from starlette.requests import Request

from core.errors import InvalidRequest, WorkflowFormatError
from gateway import integration
from gateway.offload import INLINE_NODES, run_cpu
from gateway.remote_inputs import resolve_image_params
from gateway.services import Services
from gateway.wait import SyncOptions
from workflow.format import detect_format, to_api, unwrap_prompt
from workflow.params import apply_params, randomize_seed_if_no_params, validate_workflow
from workflow.size import check_node_count
from workflow.ui_convert import convert_ui


@dataclass(slots=True)
class Prepared:
    workflow: dict[str, Any]
    applied: dict[str, Any]
    name: str | None
    subgraph_titles: dict[str, str] = field(default_factory=dict)  # of a UI workflow: what progress shows


async def prepare_submission(
    services: Services,
    workflow: dict[str, Any] | None,
    name: str | None,
    params: dict[str, Any] | None,
    backend: str | None = None,
    *,
    viewcomfy_seed_rule: bool = False,
) -> Prepared:
    """Validate and apply; ``viewcomfy_seed_rule``: no parameters at all means a new seed (ViewComfy's rule)."""
    if workflow is None and not name:
        raise InvalidRequest("send a workflow: 'workflow' (inline, API or UI format) or 'workflow_name' (saved)")
    if workflow is not None and name:
        raise InvalidRequest("send either 'workflow' or 'workflow_name', not both")
    if workflow is None:
        workflow = await services.library.load(name)  # type: ignore[arg-type]
    if not isinstance(workflow, dict) or not workflow:
        raise WorkflowFormatError("the workflow must be a non-empty JSON object")
    limit = services.settings.max_workflow_nodes
    check_node_count(workflow, limit)  # before any work proportional to its size
    info = await services.object_info(backend, stale_ok=True)  # a held task is checked now
    small = is_small_api(workflow)
    api, titles, _ = await run_cpu(checked_api, workflow, info, limit, inline=small)
    given = params or {}
    params = await resolve_image_params(services, api, info, given)  # data/URL/file images → uploaded
    if params != given:  # an upload changes the backends' LoadImage choices: validate against the new ones
        info = await services.object_info(backend, stale_ok=True)
    apply = randomize_seed_if_no_params if viewcomfy_seed_rule else apply_params
    api, applied = await run_cpu(apply, api, params, info, inline=small)
    return Prepared(api, applied, name, titles)


Exposed = list[tuple[str, str]]


def is_small_api(workflow: dict[str, Any]) -> bool:
    """An API-format workflow of at most ``INLINE_NODES`` nodes (a UI workflow's conversion costs more)."""
    nodes = unwrap_prompt(workflow)
    return isinstance(nodes, dict) and len(nodes) <= INLINE_NODES and "nodes" not in nodes


def checked_api(
    workflow: dict[str, Any], info: dict[str, Any], limit: int, *, validate: bool = True
) -> tuple[dict[str, Any], dict[str, str], Exposed]:
    """The workflow in API format (valid against ``info`` unless ``validate`` is False), the titles of its
    subgraph instances and the inputs App Mode exposes (CPU work: run it through ``run_cpu``)."""
    titles: dict[str, str] = {}
    exposed: Exposed = []
    if detect_format(workflow) == "ui":
        conversion = convert_ui(unwrap_prompt(workflow), info)
        api, titles, exposed = conversion.api, conversion.subgraph_titles, conversion.exposed
    else:
        api = to_api(workflow, info)
    check_node_count(api, limit, "the workflow, with its subgraphs expanded,")
    problems = validate_workflow(api, info) if validate else []
    if problems:
        raise WorkflowFormatError(
            f"the workflow is not valid: {problems[0].get('message')}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=problems,
        )
    return api, titles, exposed


@dataclass(slots=True)
class SubmitOrder:
    """What a caller asks to run, whatever API it came through."""

    workflow: dict[str, Any] | None = None
    workflow_name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    timeout: float | None = None
    webhook: str | None = None
    wait: bool = False
    output_format: str | None = None
    # Comfy's partner API nodes' key for this run only: passed to ComfyUI, never stored, logged or returned.
    partner_key: str | None = None


async def submit(services: Services, request: Request, order: SubmitOrder, sync: SyncOptions) -> Any:
    """Prepare, queue and (when asked) wait: the task's summary, or what waiting produced."""
    prepared = await prepare_submission(services, order.workflow, order.workflow_name, order.params, order.backend)
    task = await services.manager.submit(
        prepared.workflow,
        params=prepared.applied,
        timeout=order.timeout,
        workflow_name=prepared.name,
        backend=order.backend,
        extra={
            **await integration.submission_extra(services, order.webhook),
            **({"subgraph_titles": prepared.subgraph_titles} if prepared.subgraph_titles else {}),
        },
        partner_key=order.partner_key,
    )
    waited = await integration.after_submit(services, request, task, sync, order.wait, order.output_format)
    if waited is not None:
        return waited
    # A response, not a dict: FastAPI would validate it against SubmitResponse again (~0.1 ms).
    return JSONResponse(
        jsonable_encoder(
            {
                "task_id": task.task_id,
                "prompt_id": task.prompt_id,
                "status": task.status.value,
                "params": task.params,
                "warnings": task.warnings,
            }
        )
    )
