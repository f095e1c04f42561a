"""From what a caller sent (inline or saved workflow, params) to an API-format prompt ready to run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequest, WorkflowFormatError
from gateway.offload import run_cpu
from gateway.remote_inputs import resolve_image_params
from gateway.services import Services
from workflow.format import to_api
from workflow.params import apply_params, randomize_seed_if_no_params, validate_workflow
from workflow.size import check_node_count


@dataclass(slots=True)
class Prepared:
    workflow: dict[str, Any]
    applied: dict[str, Any]
    name: str | None


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
    api = await run_cpu(checked_api, workflow, info, limit)
    given = params or {}
    params = await resolve_image_params(services, api, info, given)  # data/URL/file images → uploaded
    if params != given:  # an upload changes the backends' LoadImage choices: validate against the new ones
        info = await services.object_info(backend, stale_ok=True)
    apply = randomize_seed_if_no_params if viewcomfy_seed_rule else apply_params
    api, applied = await run_cpu(apply, api, params, info)
    return Prepared(api, applied, name)


def checked_api(workflow: dict[str, Any], info: dict[str, Any], limit: int) -> dict[str, Any]:
    """The workflow in API format, valid against ``info`` (CPU work: run it through ``run_cpu``)."""
    api = to_api(workflow, info)
    check_node_count(api, limit, "the workflow, with its subgraphs expanded,")
    problems = validate_workflow(api, info)
    if problems:
        raise WorkflowFormatError(
            f"the workflow is not valid: {problems[0].get('message')}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=problems,
        )
    return api
