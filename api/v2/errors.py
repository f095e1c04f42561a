"""The Comfy API v2 error envelope, ``{"error": {"code", "message", "details"}}``, on ``/api/v2/`` only.

Why a translating middleware as well as an exception class: answers made before a v2 route runs (a
missing API key, a body over the size limit, FastAPI's request validation, Starlette's 404/405) use
ComfyGate's own flat ``{"error": "<code>", "message"}`` shape, and the SDK reads only the envelope. The
middleware rewrites exactly those answers under the v2 prefix, so every v2 error fits the contract while
ComfyGate's own routes keep their shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import (
    ComfyGateError,
    ComfyUIUnavailable,
    ParameterError,
    PayloadTooLarge,
    PromptRejected,
    ServiceBusy,
    Unauthorized,
    WorkflowFormatError,
)

PREFIX = "/api/v2/"

# ComfyGate's flat codes (middlewares, FastAPI, Starlette) → the contract's codes.
_FLAT_CODES = {
    "unauthorized": "unauthorized",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "payload_too_large": "payload_too_large",
    "invalid_json": "invalid_request",
    "json_too_deep": "invalid_request",
    "invalid_request": "invalid_request",
    "internal_error": "upstream_error",
}


class V2Error(Exception):
    """An error a v2 route answers with; ``retry_after`` adds the ``Retry-After`` header (429s)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(envelope(self.code, self.message, self.details), status_code=self.status, headers=headers)


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or None}}


def from_comfygate(exc: ComfyGateError) -> V2Error:
    """ComfyGate's own errors in the contract's terms (ComfyUI's node_errors kept intact)."""
    if isinstance(exc, PromptRejected):
        details: dict[str, Any] = {"node_errors": exc.node_errors}
        if isinstance(exc.error, dict):
            details["comfyui_error"] = exc.error
        return V2Error(422, "invalid_workflow", exc.message, details)
    if isinstance(exc, ParameterError | WorkflowFormatError):
        return V2Error(422, "invalid_workflow", exc.message, _plain(exc.detail))
    if isinstance(exc, ServiceBusy):
        if "pending" in exc.detail or "unfinished" in exc.detail:  # ComfyGate is full: back off and retry
            return V2Error(429, "queue_full", exc.message, _plain(exc.detail), retry_after=exc.retry_after)
        return V2Error(503, "upstream_unavailable", exc.message, _plain(exc.detail), retry_after=exc.retry_after)
    if isinstance(exc, ComfyUIUnavailable):
        retry = int(exc.detail.get("retry_after") or 5)
        return V2Error(503, "upstream_unavailable", exc.message, None, retry_after=retry)
    if isinstance(exc, PayloadTooLarge):
        return V2Error(413, "payload_too_large", exc.message, _plain(exc.detail))
    if isinstance(exc, Unauthorized):
        return V2Error(401, "unauthorized", exc.message)
    if exc.status_code == 404:
        return V2Error(404, "not_found", exc.message)
    if exc.status_code >= 500:
        # Generic and safe to display, as the contract asks of upstream_error; the detail is in the log.
        return V2Error(502, "upstream_error", "a backend failed while handling the request")
    return V2Error(exc.status_code, "invalid_request", exc.message, _plain(exc.detail))


def _plain(detail: dict[str, Any]) -> dict[str, Any] | None:
    kept = {k: v for k, v in detail.items() if v is not None and k != "retry_after"}
    return kept or None


async def v2_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, V2Error)
    return exc.response()


class EnvelopeMiddleware:
    """Rewrite ComfyGate-shaped JSON errors under ``/api/v2/`` into the envelope (other paths untouched).

    Only an error answer (status ≥ 400) whose body is JSON with a string ``error`` is rewritten; success
    answers and event streams pass through unbuffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                is_json = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] >= 400 and is_json:
                    start = message
                    return
                await send(message)
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_rewritten(send, start, b"".join(chunks))

        await self.app(scope, receive, capture)


async def _send_rewritten(send: Send, start: Message, body: bytes) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        flat = dict(data)
        code = _FLAT_CODES.get(flat.pop("error"), "invalid_request")
        message = str(flat.pop("message", code))
        body = json.dumps(envelope(code, message, flat or None)).encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
