"""The body of ``POST /api/workflow/submit``, read as JSON or as multipart/form-data by its content type.

One route serves both: a JSON ``SubmitRequest``, or a form with a ``request`` field (that same JSON) and
one file part per image parameter, named by its key (``1.image`` or ``1-inputs-image``). The route's
OpenAPI entry documents both bodies (``SUBMIT_OPENAPI``), the JSON one first.
"""

from __future__ import annotations

import asyncio
from email.message import Message
from typing import Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.dependencies import get_services
from api.models import SubmitRequest
from core.errors import InvalidRequest
from gateway.remote_inputs import InlineFile
from gateway.services import Services
from gateway.uploads import read_limited
from gateway.wait import request_error
from security.json_safety import check_body
from security.limits import OFF_LOOP_BYTES

MAX_FILES = 32

_JSON_SCHEMA = SubmitRequest.model_json_schema(ref_template="#/components/schemas/{model}")
SUBMIT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _JSON_SCHEMA},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["request"],
                    "properties": {
                        "request": {
                            "type": "string",
                            "description": "the JSON body (a SubmitRequest) as one text field",
                        }
                    },
                    "additionalProperties": {
                        "type": "string",
                        "format": "binary",
                        "description": 'an image for the parameter named by the part ("1.image" or "1-inputs-image")',
                    },
                }
            },
        },
    }
}


def _media_type(request: Request) -> tuple[str, str] | None:
    """(main type, subtype) of the body, None when the request names none."""
    raw = request.headers.get("content-type")
    if not raw:
        return None
    message = Message()
    message["content-type"] = raw
    return message.get_content_maintype(), message.get_content_subtype()


async def submit_body(request: Request, services: Services = Depends(get_services)) -> SubmitRequest:
    """JSON (also with no content type, as FastAPI reads bodies) or multipart; anything else is a 422."""
    media = _media_type(request)
    if media == ("multipart", "form-data"):
        return await _from_form(request, services.settings.max_upload_bytes)
    raw = await request.body()  # read whatever the type: the size limit applies to every body
    if media is not None and not (media[0] == "application" and (media[1] == "json" or media[1].endswith("+json"))):
        raise RequestValidationError(
            [
                {
                    "type": "content_type",
                    "loc": ("body",),
                    "msg": f"send the body as application/json (or multipart/form-data with a 'request' field), "
                    f"not {media[0]}/{media[1]}",
                    "input": None,
                }
            ]
        )
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        if len(raw) > OFF_LOOP_BYTES:  # a big workflow: parsed beside the loop, not on it
            return await asyncio.to_thread(SubmitRequest.model_validate_json, raw)
        return SubmitRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise request_error(exc, ("body",)) from None


async def _from_form(request: Request, limit: int) -> SubmitRequest:
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 1, max_part_size=limit) as form:
        raw = form.get("request")
        if raw is None:
            raise InvalidRequest('a multipart submit needs a "request" field holding the JSON body')
        text = (await raw.read()).decode("utf-8", "replace") if isinstance(raw, UploadFile) else raw
        unsafe = check_body(text.encode("utf-8", "surrogatepass"))  # as the request limits do for a JSON body
        if unsafe is not None:
            raise unsafe.as_error()
        try:
            body = SubmitRequest.model_validate_json(text)
        except ValidationError as exc:
            raise request_error(exc, ("body", "request")) from None
        for key, value in form.multi_items():
            if key == "request":
                continue
            if not isinstance(value, UploadFile):
                raise InvalidRequest(f"form field {key!r}: put parameter values in the request JSON; parts are files")
            if key in body.params:
                raise InvalidRequest(f"parameter {key!r} is given both in the request JSON and as a file part")
            body.params[key] = InlineFile(await read_limited(value, limit), value.filename or "")
    return body
