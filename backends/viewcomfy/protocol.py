"""The ViewComfy serverless API wire format, shared by the client and the ViewComfy-compatible endpoint.

Everything here is pure (no network): both directions must agree byte for byte with ViewComfy's
published clients, so the rules live in one place. See ``/work/shared/viewcomfy-protocol.md``.
SSE framing is in ``backends.viewcomfy.sse``; reading an incoming form (Starlette) is the API layer's
``api.viewcomfy_form``.

Rules worth remembering (they come from the published Python client, which existing users run):

* Success is HTTP 201. The result has EXACTLY six keys, because the client calls
  ``PromptResult(**result)``: an extra key is a ``TypeError`` there, so it is a validation error here.
* SSE ``data:`` must be ONE line: the client *overwrites* data on each ``data:`` line instead of
  appending, and strips whitespace around it. Comment lines (``: ...``) are safe keepalives.
* Form fields: ``params`` is ONE JSON string, ``workflow_api`` is a JSON string or ``""`` (= absent),
  ``logs`` is ``"true"``/``"false"``. Files are parts named by their parameter key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.errors import InvalidRequest
from security.json_safety import UnsafeJSON
from security.limits import safe_json_loads

__all__ = [
    "FORM_FIELDS",
    "PARAM_KEY_SEPARATOR",
    "RESULT_KEYS",
    "FileOutput",
    "PromptResult",
    "json_type",
    "parse_bool_field",
    "parse_params_field",
    "parse_workflow_api_field",
    "result_to_json",
    "split_viewcomfy_key",
    "viewcomfy_key",
]

#: Form field names with a fixed meaning; a file part may not use them.
FORM_FIELDS: frozenset[str] = frozenset({"params", "workflow_api", "logs"})
PARAM_KEY_SEPARATOR = "-inputs-"

# --------------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------------


class FileOutput(BaseModel):
    """One output file, base64 inline.

    Lenient on purpose (extra keys kept, defaults like the published client's ``.get``): ViewComfy
    also sends S3-style outputs (``filepath`` instead of ``data``), and the published client accepts
    any output dict. Only the top-level result must have exact keys.
    """

    model_config = ConfigDict(extra="allow")

    filename: str = ""
    content_type: str = ""
    data: str = ""
    size: int = 0

    @classmethod
    def from_bytes(cls, filename: str, content: bytes, content_type: str = "application/octet-stream") -> FileOutput:
        """Build an output from raw bytes (server side): standard base64, size = decoded length."""
        return cls(
            filename=filename,
            content_type=content_type,
            data=base64.b64encode(content).decode("ascii"),
            size=len(content),
        )


class PromptResult(BaseModel):
    """The result object. ``extra="forbid"`` mirrors ``PromptResult(**result)`` in the published client."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str
    status: str  # "success" or "error"; kept as str so an unknown status from upstream is not fatal
    completed: bool
    execution_time_seconds: float
    prompt: dict[str, Any]
    outputs: list[FileOutput]


#: The exact top-level keys of a result, in wire order.
RESULT_KEYS: tuple[str, ...] = tuple(PromptResult.model_fields)


def result_to_json(result: PromptResult | Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready dict with exactly the six result keys (validated), for a 201 body or a ``prompt_result``.

    Accepts a mapping so the endpoint can build results as plain dicts and still get them checked:
    a stray key here would break every published client downstream.
    """
    model = result if isinstance(result, PromptResult) else PromptResult.model_validate(dict(result))
    return model.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------------


def viewcomfy_key(node_id: str | int, input_name: str) -> str:
    """``"6", "text"`` -> ``"6-inputs-text"``."""
    return f"{node_id}{PARAM_KEY_SEPARATOR}{input_name}"


def split_viewcomfy_key(key: str) -> tuple[str, str] | None:
    """``"6-inputs-text"`` -> ``("6", "text")``; ``None`` for context keys (``_...``) and anything else.

    Splits at the FIRST separator: node ids are simple (``"12"``, ``"12:3"``), input names are freer.
    """
    if not key or key.startswith("_"):
        return None
    node_id, sep, input_name = key.partition(PARAM_KEY_SEPARATOR)
    if not sep or not node_id or not input_name:
        return None
    return node_id, input_name


def parse_params_field(raw: str | None) -> dict[str, Any]:
    """The ``params`` form field (one JSON string) -> dict. Absent or ``""`` -> ``{}``."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = safe_json_loads(raw, root="params")  # ValueError when nested too deep: no RecursionError
    except UnsafeJSON as exc:
        raise exc.as_error() from None
    except ValueError as exc:
        raise InvalidRequest(
            f"params must be a JSON object encoded as a string; it is not valid JSON ({exc})", field="params"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f'params must be a JSON object like {{"6-inputs-text": "a cat"}}, got {json_type(value)}',
            field="params",
        )
    return value


def parse_workflow_api_field(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``workflow_api`` field -> dict, or ``None`` when absent (``""``/``null``, as the client sends)."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise InvalidRequest(
            f"workflow_api must be a JSON object (an API-format workflow), got {json_type(raw)}",
            field="workflow_api",
        )
    if not raw.strip():
        return None
    try:
        value = safe_json_loads(raw, root="workflow_api")  # ValueError when nested too deep: no RecursionError
    except UnsafeJSON as exc:
        raise exc.as_error() from None
    except ValueError as exc:
        raise InvalidRequest(
            f"workflow_api must be an API-format workflow as a JSON string; it is not valid JSON ({exc})",
            field="workflow_api",
        ) from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"workflow_api must be a JSON object (an API-format workflow), got {json_type(value)}",
            field="workflow_api",
        )
    return value


def parse_bool_field(raw: str | bool | None, name: str = "logs") -> bool:
    """``"true"``/``"false"`` (any case), ``"1"``/``"0"``, real bools; absent or ``""`` -> False."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str):
        value = raw.strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off", ""):
            return False
    raise InvalidRequest(f'{name} must be "true" or "false", got {raw!r}', field=name)


def json_type(value: Any) -> str:
    """How a JSON value is named in an error message ("an object", "a number", ...)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
