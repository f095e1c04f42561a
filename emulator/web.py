"""The emulator's HTTP plumbing: aiohttp-shaped responses, the plain-text 500, and ComfyUI's front door (Origin
check, ``/api`` aliases, OPTIONS) as an ASGI wrapper."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("comfyui_emulator")

ERROR_500 = "500 Internal Server Error\n\nServer got itself in trouble"

Handler = Callable[[Request], Awaitable[Response]]


def json_response(data: Any, status: int = 200) -> Response:
    """aiohttp's json_response: default json.dumps spacing and a utf-8 charset, like the recordings."""
    return Response(json.dumps(data), status_code=status, media_type="application/json; charset=utf-8")


def empty_response(status: int = 200) -> Response:
    return Response(b"", status_code=status)


async def json_body(request: Request) -> Any:
    """The request's JSON body; an empty body is ``{}``."""
    body = await request.body()
    return json.loads(body) if body else {}


def guard(fn: Handler) -> Handler:
    """Any handler exception becomes ComfyUI's (aiohttp's) plain-text 500, e.g. malformed JSON."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception:  # noqa: BLE001
            log.debug("handler error", exc_info=True)
            return Response(ERROR_500, status_code=500, media_type="text/plain")

    return wrapper


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_mismatch(headers: dict[bytes, bytes]) -> bool:
    """ComfyUI's origin_only_middleware: loopback Host + foreign Origin = a browser CSRF attempt."""
    host_raw, origin = headers.get(b"host"), headers.get(b"origin")
    if host_raw is None or origin is None:
        return False
    host_domain = host_raw.decode("latin-1").lower()
    parsed = urlparse(origin.decode("latin-1"))
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urlsplit("//" + host_domain)
    loopback = _is_loopback(host_parsed.hostname)
    host_cmp: str | None = host_domain
    if parsed.port is None:
        host_cmp = host_parsed.hostname
    if host_parsed.port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_cmp and origin_domain and host_cmp != origin_domain)


class Frontdoor:
    """ASGI wrapper: the Origin check, ``/api`` aliases and OPTIONS, before Starlette routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if _origin_mismatch(dict(scope["headers"])):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        path: str = scope["path"]
        if path.startswith("/api/"):
            scope = dict(scope, path=path[4:], raw_path=path[4:].encode())
        await self.app(scope, receive, send)
