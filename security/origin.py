"""Refuse requests that web pages of other sites make with the user's browser (HTTP and WebSocket).

Why: ComfyGate listens on 127.0.0.1, and without API keys (the default) anything that reaches the port
is trusted. A browser lets any web page send a form or ``text/plain`` POST to 127.0.0.1, and open a
WebSocket there, without asking (no CORS preflight for those). Browsers always say who is asking, in
``Origin``; so, as ComfyUI does, a request whose Origin is another site is refused with a 403, keys or
no keys. Allowed: no Origin (curl, SDKs, server-to-server), the same origin as the request's Host
(the debugger), loopback origins (a dev server on localhost), and ``COMFYUI_CORS_ORIGINS``.

A pure ASGI middleware, so routers added later and the WebSocket are covered without each route
remembering.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from security.refusal import refuse

log = logging.getLogger("comfygate.origin")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower().rstrip("."), port if port is not None else _DEFAULT_PORTS.get(scheme)


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """Which ``Origin`` values may call: same origin, loopback, configured ones."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(normalise_origin(o) for o in allowed if o)
        self.any = "*" in self.allowed

    def allows(self, origin: str, host_header: str | None, scheme: str) -> bool:
        origin = normalise_origin(origin)
        if self.any or origin in self.allowed:
            return True
        if origin == "null":  # sandboxed frames, file:// pages: never the same origin as anything
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        origin_hp = _host_port(parts.netloc, parts.scheme)
        if origin_hp is None:
            return False
        if is_loopback_host(origin_hp[0]):
            return True
        if host_header:
            web_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
            return origin_hp == _host_port(host_header, web_scheme) or origin_hp == _host_port(
                host_header,
                parts.scheme,  # behind a TLS-terminating proxy the scheme differs
            )
        return False


class OriginMiddleware:
    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.policy = OriginPolicy(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origin = host = None
        for key, value in scope.get("headers", ()):
            if key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"host":
                host = value.decode("latin-1")
        if origin is None or self.policy.allows(origin, host, scope.get("scheme", "http")):
            await self.app(scope, receive, send)
            return
        log.warning("refused a %s request from origin %r", scope["type"], origin[:200])
        body = {
            "error": "forbidden_origin",
            "message": f"requests from web pages at {origin[:200]!r} are refused; "
            "add that origin to COMFYUI_CORS_ORIGINS to allow it",
        }
        await refuse(scope, send, 403, body)
