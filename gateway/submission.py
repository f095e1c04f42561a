"""From what a caller sent (inline or saved workflow, params) to an API-format prompt ready to run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidRequest, WorkflowFormatError
from gateway.remote_inputs import resolve_image_params
from gateway.services import Services
from workflow.format import detect_format, to_api, unwrap_prompt
from workflow.params import apply_params, randomize_seed_if_no_params, validate_workflow
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
    info = await services.object_info(backend, stale_ok=True)  # a held task is checked now
    titles: dict[str, str] = {}
    if detect_format(workflow) == "ui":
        conversion = convert_ui(unwrap_prompt(workflow), info)
        api, titles = conversion.api, conversion.subgraph_titles
    else:
        api = to_api(workflow, info)
    problems = validate_workflow(api, info)
    if problems:
        raise WorkflowFormatError(
            f"the workflow is not valid: {problems[0].get('message')}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=problems,
        )
    given = params or {}
    params = await resolve_image_params(services, api, info, given)  # data/URL/file images → uploaded
    if params != given:  # an upload changes the backends' LoadImage choices: validate against the new ones
        info = await services.object_info(backend, stale_ok=True)
    if viewcomfy_seed_rule:
        api, applied = randomize_seed_if_no_params(api, params, info)
    else:
        api, applied = apply_params(api, params, info)
    return Prepared(api, applied, name, titles)
