"""What the v2 routes read off a request: a JSON object body, and whose Idempotency-Key scope it is."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from api.v2.errors import V2Error
from api.v2.idempotency import check_key, scope_of
from security.auth import presented_keys


async def read_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (the size and depth limits have already been applied by middleware)."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise V2Error(400, "invalid_request", f"the body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise V2Error(400, "invalid_request", "the body must be a JSON object")
    return body


def caller_scope(request: Request) -> str:
    """Idempotency keys are per caller: the API key presented (hashed), or one scope when keys are off."""
    offered = presented_keys(request.scope, allow_query=False)
    return scope_of(offered[0] if offered else None)


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, checked (400 when unusable), or None when not sent."""
    key = request.headers.get("idempotency-key")
    if key is not None and (problem := check_key(key)):
        raise V2Error(400, "invalid_request", problem)
    return key
