"""Workflow formats: tell API from UI format, and turn either into the API prompt to send.

Pure functions, no I/O: the server, the CLI and the tests all share them. A UI workflow is converted by
`workflow.ui_convert` exactly as ComfyUI's current frontend would queue it.

Decisions:
- A POST /prompt style wrapper `{"prompt": {...}, ...}` is accepted: `detect_format` reports the format
  of the wrapped workflow and `to_api` unwraps it (clients often paste the request body they already have).
- Unknown node classes raise `UnknownNodeClass` (the frontend silently emits an entry without
  class_type). Muted or bypassed nodes never reach the prompt, so their class is not checked.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from core.errors import UnknownNodeClass, WorkflowFormatError
from workflow.ui_convert import MAX_LINK_HOPS, ui_to_api

__all__ = [
    "MAX_LINK_HOPS",
    "detect_format",
    "to_api",
    "ui_to_api",
    "unwrap_prompt",
    "workflow_node_classes",
]


_EXPECTED = (
    "expected either an API-format workflow (an object mapping node ids to {class_type, inputs}, as "
    "saved by 'Export (API)') or a UI-format workflow (an object with 'nodes' and 'links', as saved by "
    "ComfyUI's 'Save')"
)


# --------------------------------------------------------------------------------------------------
# detection


def unwrap_prompt(data: Any) -> Any:
    """Return the workflow inside a `{"prompt": {...}}` request body, else `data` unchanged."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "nodes" not in data:
        inner = data["prompt"]
        if "class_type" not in inner:
            return inner
    return data


def detect_format(data: Any) -> Literal["api", "ui"]:
    """Say which format `data` is in, or raise WorkflowFormatError explaining what it looks like."""
    data = unwrap_prompt(data)
    if isinstance(data, list):
        raise WorkflowFormatError(f"this looks like a JSON list of {len(data)} items; {_EXPECTED}")
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"this looks like a JSON {type(data).__name__}; {_EXPECTED}")
    if not data:
        raise WorkflowFormatError(f"this workflow is an empty object; {_EXPECTED}")
    if "nodes" in data:
        if not isinstance(data["nodes"], list):
            raise WorkflowFormatError(
                f"this looks like a UI-format workflow but 'nodes' is a {type(data['nodes']).__name__}, "
                f"not a list; {_EXPECTED}"
            )
        return "ui"
    for node_id, node in data.items():
        if not isinstance(node, dict):
            raise WorkflowFormatError(
                f"this looks like an API-format workflow but node {node_id!r} is a "
                f"{type(node).__name__}, not an object with class_type and inputs; {_EXPECTED}"
            )
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise WorkflowFormatError(
                f"this looks like an API-format workflow but node {node_id!r} has no class_type; {_EXPECTED}"
            )
    return "api"


def _check_api_shape(api: dict[str, Any], object_info: dict[str, Any] | None) -> None:
    """Raise on an API workflow whose nodes could not be sent as they are."""
    for node_id, node in api.items():
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowFormatError(
                f"node {node_id} ({node['class_type']}): 'inputs' must be an object of input name → "
                f"value or link, got {type(inputs).__name__}"
            )
        if object_info is not None and node["class_type"] not in object_info:
            raise UnknownNodeClass(str(node_id), node["class_type"])


def to_api(data: Any, object_info: dict[str, Any] | None) -> dict[str, Any]:
    """Return an API-format copy of `data` whatever format it came in (needed before any submission)."""
    data = unwrap_prompt(data)
    if detect_format(data) == "ui":
        if object_info is None:
            raise WorkflowFormatError("converting a UI-format workflow needs the backend's object_info")
        return ui_to_api(data, object_info)
    api = {str(k): copy.deepcopy(v) for k, v in data.items()}
    for node in api.values():
        node.setdefault("inputs", {})
    _check_api_shape(api, object_info)
    return api


def workflow_node_classes(api: dict[str, Any]) -> set[str]:
    """Node classes an API workflow needs (to pick a backend that has them all)."""
    return {node["class_type"] for node in api.values() if isinstance(node, dict) and "class_type" in node}
