"""Routes of the integration features: SSE per task, /metrics, and the multipart variant of submit.

Multipart submit lives at the same path as the JSON one (``POST /api/workflow/submit``): its route only
matches ``multipart/form-data`` requests, so JSON requests fall through to the documented JSON route.
The form holds a ``request`` field (the JSON body) and one file part per image parameter, named by
its key (``1.image`` or ``1-inputs-image``). It then runs exactly the JSON route's code.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.routing import Match
from starlette.types import Scope

from api.dependencies import get_services
from api.models import SubmitRequest
from api.routers import metrics, task_events
from api.routers import tasks as routes_tasks
from core.errors import InvalidRequest
from gateway.remote_inputs import InlineFile
from gateway.services import Services
from gateway.uploads import read_limited
from gateway.wait import SyncOptions, sync_options
from security.json_safety import check_body

MAX_FILES = 32


class MultipartOnlyRoute(APIRoute):
    """Matches only multipart/form-data, leaving every other content type to the next route."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL:
            content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
            if not content_type.lower().startswith(b"multipart/form-data"):
                return Match.NONE, {}
        return match, child


router = APIRouter()
router.include_router(task_events.router)
router.include_router(metrics.router)


async def submit_multipart(
    request: Request, services: Services = Depends(get_services), sync: SyncOptions = Depends(sync_options)
) -> Any:
    limit = services.settings.max_upload_bytes
    async with request.form(max_files=MAX_FILES, max_fields=MAX_FILES + 1, max_part_size=limit) as form:
        raw = form.get("request")
        if raw is None:
            raise InvalidRequest('a multipart submit needs a "request" field holding the JSON body')
        text = (await raw.read()).decode("utf-8", "replace") if isinstance(raw, UploadFile) else raw
        unsafe = check_body(text.encode("utf-8", "surrogatepass"))  # as the JSON route's middleware does
        if unsafe is not None:
            raise unsafe.as_error()
        try:
            body = SubmitRequest.model_validate_json(text)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        for key, value in form.multi_items():
            if key == "request":
                continue
            if not isinstance(value, UploadFile):
                raise InvalidRequest(f"form field {key!r}: put parameter values in the request JSON; parts are files")
            if key in body.params:
                raise InvalidRequest(f"parameter {key!r} is given both in the request JSON and as a file part")
            body.params[key] = InlineFile(await read_limited(value, limit), value.filename or "")
    return await routes_tasks.submit(body, request, services, sync)


router.add_api_route(
    "/api/workflow/submit",
    submit_multipart,
    methods=["POST"],
    route_class_override=MultipartOnlyRoute,
    include_in_schema=False,  # documented on the JSON route, which OpenAPI cannot show twice
)
