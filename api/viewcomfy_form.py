"""Reading an incoming ViewComfy infer request (form or JSON body) with Starlette, for the API layer.

The field rules (``params`` one JSON string, ``workflow_api`` a JSON string or ``""``, ``logs``
``"true"``/``"false"``) are the wire format's, in ``backends.viewcomfy.protocol``; this module only gets
the fields and files out of a request within the size limits, and (``build_params``) turns them into
the task's parameters with the files uploaded, as both ViewComfy APIs (older and current) take them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from backends.viewcomfy.protocol import (
    FORM_FIELDS,
    json_type,
    parse_bool_field,
    parse_params_field,
    parse_workflow_api_field,
    split_viewcomfy_key,
)
from core.errors import InvalidRequest, PayloadTooLarge
from gateway.services import Services
from gateway.uploads import push_upload
from security.json_safety import UnsafeJSON
from security.limits import safe_json_loads
from security.safe_paths import sanitize_filename

__all__ = ["InferFile", "InferRequest", "build_params", "json_object_body", "parse_infer_form"]


@dataclass(slots=True)
class InferFile:
    """One uploaded file part. ``filename`` is already a safe basename; ``key`` is the parameter key."""

    key: str
    filename: str
    content: bytes
    content_type: str | None = None


@dataclass(slots=True)
class InferRequest:
    logs: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    workflow_api: dict[str, Any] | None = None
    files: dict[str, InferFile] = field(default_factory=dict)
    content_type: Literal["urlencoded", "multipart", "json"] = "urlencoded"
    #: Every other text field (the current API's prompt_id, view_comfy_api_url, sid; context otherwise).
    fields: dict[str, str] = field(default_factory=dict)


_DEFAULT_MAX_FIELD_BYTES = 32 * 1024 * 1024  # workflow_api can be far larger than Starlette's 1 MiB default


async def parse_infer_form(
    request: Request,
    *,
    max_files: int = 64,
    max_file_bytes: int | None = None,
    max_field_bytes: int = _DEFAULT_MAX_FIELD_BYTES,
) -> InferRequest:
    """Parse a ViewComfy infer request the way ViewComfy's server accepts it.

    ``application/x-www-form-urlencoded`` (the Python client with no files), ``multipart/form-data``
    (with files) and, as an extra, ``application/json`` with the same field names (``params`` and
    ``workflow_api`` may then be objects or JSON strings, ``logs`` a bool). Unknown text fields are
    ignored (clients send context along); file parts are keyed by their parameter key and read into
    memory. Raises ``InvalidRequest`` / ``PayloadTooLarge``.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return await _parse_json_body(request, max_field_bytes)
    if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidRequest(
            "a ViewComfy request must be multipart/form-data or application/x-www-form-urlencoded "
            f"(or application/json), got {media_type or 'no content-type'!r}"
        )
    try:
        form = await request.form(max_files=max_files, max_fields=1000, max_part_size=max_field_bytes)
    except HTTPException as exc:  # Starlette wraps multipart errors when running inside an app
        raise _form_error(str(exc.detail)) from None
    except Exception as exc:  # MultiPartException outside an app, or a malformed body
        raise _form_error(str(getattr(exc, "message", exc))) from None

    try:
        text: dict[str, str] = {}
        files: dict[str, InferFile] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in FORM_FIELDS:
                    raise InvalidRequest(f"{key!r} must be a text field, not a file", field=key)
                if key in files:
                    raise InvalidRequest(f"more than one file for parameter {key!r}", field=key)
                if max_file_bytes is not None and (value.size or 0) > max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {key!r} is larger than {max_file_bytes} bytes", field=key, limit=max_file_bytes
                    )
                content = await value.read()
                if max_file_bytes is not None and len(content) > max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {key!r} is larger than {max_file_bytes} bytes", field=key, limit=max_file_bytes
                    )
                files[key] = InferFile(
                    key=key,
                    filename=sanitize_filename(value.filename or "", default=sanitize_filename(key, "upload")),
                    content=content,
                    content_type=value.content_type,
                )
            else:
                text[key] = value
    finally:
        await form.close()

    return InferRequest(
        logs=parse_bool_field(text.get("logs")),
        params=parse_params_field(text.get("params")),
        workflow_api=parse_workflow_api_field(text.get("workflow_api")),
        files=files,
        content_type="multipart" if media_type == "multipart/form-data" else "urlencoded",
        fields={k: v for k, v in text.items() if k not in FORM_FIELDS},
    )


def _form_error(message: str) -> InvalidRequest | PayloadTooLarge:
    if "maximum size" in message or "Too many" in message:
        return PayloadTooLarge(f"request form too large: {message}")
    return InvalidRequest(f"malformed form body: {message}")


def json_object_body(raw: bytes, expected: str) -> dict[str, Any]:
    """A JSON body that must be an object (empty = ``{}``): a value no answer can carry is a 422 naming its
    field (``UnsafeJSON``), anything else unusable a 400 saying what was ``expected``."""
    try:
        payload = safe_json_loads(raw) if raw.strip() else {}
    except UnsafeJSON as exc:
        raise exc.as_error() from None
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON ({exc}); send {expected}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest(f"JSON body must be {expected}, got {json_type(payload)}")
    return payload


async def _parse_json_body(request: Request, max_bytes: int) -> InferRequest:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"JSON body is larger than {max_bytes} bytes", limit=max_bytes)
    payload = json_object_body(body, "an object with params/workflow_api/logs")
    raw_params = payload.get("params")
    if isinstance(raw_params, dict):
        params = raw_params
    elif raw_params is None or isinstance(raw_params, str):
        params = parse_params_field(raw_params)
    else:
        raise InvalidRequest(f"params must be a JSON object, got {json_type(raw_params)}", field="params")
    return InferRequest(
        logs=parse_bool_field(payload.get("logs")),
        params=params,
        workflow_api=parse_workflow_api_field(payload.get("workflow_api")),
        files={},
        content_type="json",
        fields={k: v for k, v in payload.items() if k not in FORM_FIELDS and isinstance(v, str)},
    )


async def build_params(services: Services, body: InferRequest) -> dict[str, Any]:
    """``params`` without ``_`` context keys, plus each file part uploaded and set to its ComfyUI name."""
    params = {key: value for key, value in body.params.items() if not (isinstance(key, str) and key.startswith("_"))}
    for key, part in body.files.items():
        if split_viewcomfy_key(key) is None:
            raise InvalidRequest(f'file part {key!r} must be named by its parameter, like "52-inputs-image"', field=key)
        uploaded = await push_upload(services, part.filename, part.content)
        params[key] = f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded["subfolder"] else uploaded["name"]
    return params
