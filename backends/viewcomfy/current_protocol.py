"""The wire format of ViewComfy's current API (one central API, socket.io events, output links).

Pure (no network), shared by ComfyGate's server for the current clients and by the ViewComfy backend in
its ``current`` mode. See the second half of ``/work/shared/viewcomfy-protocol.md``.

Rules the published client depends on:

* Schedule and cancel answer **201**; results answer 200. The results route is exactly
  ``/api/workflow/infer/`` (the client follows no redirect there).
* The scheduled answer's ``data`` has exactly ``prompt_id``, ``message``, ``workflow``.
* The socket.io result has exactly the result keys (``error_data`` optional): one extra key and the
  client's event handler raises, so ``infer_with_logs`` waits forever.
* A results record is camelCase with exactly :data:`RECORD_KEYS`: the client deletes ``createdAt``,
  ``workflow``, ``clientId``, ``user`` (so they must be there) and builds the result from the rest.
* ``status`` is exactly ``"success"`` for a run that finished well; anything else is "not (yet)".
* Log, error, executed and canceled events carry ``{"prompt_id", "data"}`` (ViewComfy's own app reads them so).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CANCEL_PATH",
    "FINAL_STATUSES",
    "RECORD_KEYS",
    "RESULTS_PATH",
    "SCHEDULE_FIELDS",
    "SCHEDULE_PATH",
    "SUCCESS",
    "Event",
    "LinkOutput",
    "LinkResult",
    "Scheduled",
    "from_record",
    "message",
    "result_json",
    "snake",
    "to_record",
]

SCHEDULE_PATH = "/api/workflow/infer"
RESULTS_PATH = "/api/workflow/infer/"
CANCEL_PATH = "/api/workflow/infer/cancel"
#: Text fields of a schedule request besides the older API's ``params`` / ``workflow_api``.
SCHEDULE_FIELDS: frozenset[str] = frozenset({"prompt_id", "view_comfy_api_url", "sid"})
SUCCESS = "success"
#: Statuses after which a run changes no more (ViewComfy's own words and ComfyGate's).
FINAL_STATUSES: frozenset[str] = frozenset(
    {"success", "error", "failed", "canceled", "cancelled", "interrupted", "timeout"}
)


class Event(StrEnum):
    """The socket.io events the server emits to the ``sid`` named when scheduling."""

    LOG = "infer_log_message"
    ERROR = "infer_error_message"
    EXECUTED = "infer_executed_message"
    RESULT = "infer_result_message"
    CANCELED = "infer_canceled_message"


class LinkOutput(BaseModel):
    """One output: a link instead of base64. Lenient (extra keys kept), like the client's ``.get``."""

    model_config = ConfigDict(extra="allow")

    filename: str = ""
    content_type: str = ""
    size: int = 0
    filepath: str = ""


class LinkResult(BaseModel):
    """The result object. ``extra="forbid"`` mirrors ``PromptResult(**data)`` in the published client."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str
    status: str
    completed: bool
    execution_time_seconds: float
    prompt: dict[str, Any]
    outputs: list[LinkOutput]
    error_data: Any = None


class Scheduled(BaseModel):
    """``data`` of the 201 answer to a schedule (``PromptScheduled(**data)`` in the client)."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str
    message: str
    workflow: Any = None


#: The exact keys of a results record, in wire order.
RECORD_KEYS: tuple[str, ...] = (
    "promptId",
    "status",
    "completed",
    "executionTimeSeconds",
    "prompt",
    "outputs",
    "errorData",
    "createdAt",
    "workflow",
    "clientId",
    "user",
)
_DROPPED_BY_CLIENT = ("created_at", "workflow", "client_id", "user")


def result_json(result: LinkResult) -> dict[str, Any]:
    """The socket.io result: exact keys; ``error_data`` only when there is one (older clients lack it)."""
    body = result.model_dump(mode="json")
    if body.get("error_data") is None:
        body.pop("error_data", None)
    return body


def message(prompt_id: str, data: Any) -> dict[str, Any]:
    """A log / error / executed / canceled event's payload."""
    return {"prompt_id": prompt_id, "data": data}


def to_record(
    result: LinkResult, *, created_at: str, workflow: Any, client_id: str | None, user: Any
) -> dict[str, Any]:
    """One entry of the results list, camelCase, exactly :data:`RECORD_KEYS`."""
    return {
        "promptId": result.prompt_id,
        "status": result.status,
        "completed": result.completed,
        "executionTimeSeconds": result.execution_time_seconds,
        "prompt": result.prompt,
        "outputs": [
            {"filename": o.filename, "contentType": o.content_type, "size": o.size, "filepath": o.filepath}
            for o in result.outputs
        ],
        "errorData": result.error_data,
        "createdAt": created_at,
        "workflow": workflow,
        "clientId": client_id,
        "user": user,
    }


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


def from_record(record: dict[str, Any]) -> LinkResult:
    """Read a results record the way the client does: snake_case, drop the four bookkeeping keys.

    Raises ``pydantic.ValidationError`` when a key is missing or one too many is there.
    """
    body = {snake(k): v for k, v in record.items()}
    for key in _DROPPED_BY_CLIENT:
        body.pop(key, None)
    outputs = body.get("outputs")
    if isinstance(outputs, list):
        body["outputs"] = [{snake(k): v for k, v in o.items()} if isinstance(o, dict) else o for o in outputs]
    return LinkResult.model_validate(body)
