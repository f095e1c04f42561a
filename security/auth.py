"""Optional API keys (``COMFYUI_API_KEYS``) as a pure ASGI middleware, so every route is covered.

Why a middleware and not a FastAPI dependency: routers added later (by anyone), mounted apps and the
WebSocket are all behind it without each route having to remember; only the allow-list below is open.

* Keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` on every request; ``?token=<key>`` is
  accepted only where a browser cannot set headers (the WebSocket and SSE streams).
* Comparison: SHA-256 of the given key against SHA-256 of *every* configured key with
  ``hmac.compare_digest``, no early exit, so neither which key matched nor a key's length leaks.
* Refusal: 401 JSON with ``WWW-Authenticate: Bearer``; on a WebSocket the handshake is denied with an
  HTTP 401 when the server supports the ASGI denial-response extension, else closed with 1008 before
  ``accept``.
* The ViewComfy-compatible endpoints (``/api/viewcomfy/...`` and the current API's ``/api/workflow/infer...``)
  also accept their own ``client_id`` / ``client_secret`` headers when those are configured: existing
  ViewComfy clients cannot send our key (:class:`ViewComfyAuth` holds that rule for every caller).
* ``/socket.io/`` is passed on to the socket.io server, whose namespace ``connect`` applies the same rule
  to the credentials in its ``auth`` object (ViewComfy's clients cannot set headers on it).
* Signed output links (``/api/viewcomfy/files/...``) carry their own permission: the route checks it.
* Keys are never logged: :class:`RedactTokens` scrubs ``token=`` from uvicorn's access and WebSocket logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from config import Settings

# Open without a key: the health probe (load balancers), the debugger page and its files (the page asks
# for a key itself). Everything else, including /metrics and routes nobody has written yet, needs one.
OPEN_PATHS = frozenset({"/", "/api/health", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/api/viewcomfy/files/")  # the files route checks each link's signature
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# HTTP paths where ``?token=`` is accepted: Server-Sent Events (EventSource cannot set headers).
TOKEN_QUERY_PATHS = (re.compile(r"^/api/task/[^/]+/events$"),)
VIEWCOMFY_PREFIX = "/api/viewcomfy/"
# ViewComfy's current API: exactly these routes (its paths share /api/workflow/ with the library's, which
# the ViewComfy pair must not open: DELETE /api/workflow/infer is a saved workflow's).
VIEWCOMFY_ROUTES = frozenset(
    {("POST", "/api/workflow/infer"), ("GET", "/api/workflow/infer/"), ("POST", "/api/workflow/infer/cancel")}
)
SOCKETIO_PREFIX = "/socket.io/"
AUTH_STATE_KEY = "comfygate_auth"  # scope["state"][...] = "api_key" | "viewcomfy" | "open" | "socketio"


def _digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).digest()


def key_matches(given: str | None, digests: Iterable[bytes]) -> bool:
    """Constant-time check of ``given`` against every configured key (all compared, always)."""
    if not given:
        return False
    candidate = _digest(given)
    ok = False
    for digest in digests:
        ok |= hmac.compare_digest(candidate, digest)
    return ok


def is_authenticated(request: Any) -> bool:
    """True when the middleware let this request in on an API key (for routes with their own checks)."""
    state = getattr(request, "scope", {}).get("state") or {}
    return state.get(AUTH_STATE_KEY) == "api_key"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def presented_keys(scope: Scope, *, allow_query: bool) -> list[str]:
    """Every key the caller offered: Bearer header, X-API-Key header, and ``?token=`` when allowed."""
    headers = _headers(scope)
    keys: list[str] = []
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        keys.append(value.strip())
    if headers.get("x-api-key", "").strip():
        keys.append(headers["x-api-key"].strip())
    if allow_query:
        query = scope.get("query_string", b"").decode("latin-1")
        keys.extend(v for k, v in parse_qsl(query, keep_blank_values=False) if k == "token")
    return keys


def viewcomfy_headers(headers: dict[str, str]) -> dict[str, str]:
    """The ViewComfy pair from lower-cased request headers (``client_id`` or ``client-id``)."""
    return {
        name: headers.get(name, "") or headers.get(name.replace("_", "-"), "")
        for name in ("client_id", "client_secret")
    }


class ViewComfyAuth:
    """Who may use the ViewComfy-compatible API (both generations, HTTP and socket.io): one rule, here.

    An API key, or the configured ``client_id`` / ``client_secret`` pair (each part checked when set).
    With API keys on and no pair configured, only a key will do; with neither, the API is open as the
    rest of ComfyGate is. Every comparison is constant time over SHA-256 digests.
    """

    def __init__(self, settings: Settings) -> None:
        self.key_digests = [_digest(k.get_secret_value()) for k in settings.api_keys if k.get_secret_value()]
        pair = {
            "client_id": getattr(settings, "viewcomfy_server_client_id", None),
            "client_secret": getattr(settings, "viewcomfy_server_client_secret", None),
        }
        self.expected = {name: _digest(v.get_secret_value()) for name, v in pair.items() if v is not None}

    @property
    def pair_configured(self) -> bool:
        return bool(self.expected)

    def pair_ok(self, given: dict[str, str]) -> bool:
        ok = True
        for name, digest in self.expected.items():
            ok &= hmac.compare_digest(_digest(given.get(name) or ""), digest)  # no early exit
        return ok

    def allowed(self, given: dict[str, str], *, key_ok: bool) -> bool:
        if key_ok:
            return True
        if self.key_digests and not self.pair_configured:
            return False
        return self.pair_ok(given)

    def socket_allowed(self, scope: Scope, auth: dict[str, Any]) -> bool:
        """A socket.io connect: the middleware's verdict on headers, else the ``auth`` object's contents."""
        state = scope.get("state") or {}
        if state.get(AUTH_STATE_KEY) == "api_key":
            return True
        keys = []
        for field in ("token", "api_key", "authorization"):
            value = auth.get(field)
            if isinstance(value, str) and value.strip():
                scheme, _, rest = value.strip().partition(" ")
                keys.append(rest.strip() if scheme.lower() == "bearer" and rest.strip() else value.strip())
        key_ok = any(key_matches(k, self.key_digests) for k in keys)
        given = {name: str(auth.get(name) or "") for name in ("client_id", "client_secret")}
        return self.allowed(given, key_ok=key_ok)


class APIKeyMiddleware:
    """Refuse every request outside the allow-list that carries no valid key (no-op when no keys are set)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.digests = [_digest(k.get_secret_value()) for k in settings.api_keys if k.get_secret_value()]
        self.open_paths = OPEN_PATHS | (DOCS_PATHS if settings.public_docs else frozenset())
        self.viewcomfy = ViewComfyAuth(settings)

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(OPEN_PREFIXES)

    def viewcomfy_credentials_ok(self, scope: Scope) -> bool:
        """client_id / client_secret headers against the endpoint's configured pair (never when unset)."""
        return self.viewcomfy.pair_configured and self.viewcomfy.pair_ok(viewcomfy_headers(_headers(scope)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.digests:
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        state = scope.setdefault("state", {})
        if scope["type"] == "http" and self.is_open(path):
            state[AUTH_STATE_KEY] = "open"
            await self.app(scope, receive, send)
            return
        allow_query = scope["type"] == "websocket" or any(p.match(path) for p in TOKEN_QUERY_PATHS)
        offered = presented_keys(scope, allow_query=allow_query)
        if any(key_matches(k, self.digests) for k in offered):
            state[AUTH_STATE_KEY] = "api_key"
            await self.app(scope, receive, send)
            return
        viewcomfy = path.startswith(VIEWCOMFY_PREFIX) or (scope.get("method"), path) in VIEWCOMFY_ROUTES
        if viewcomfy and self.viewcomfy_credentials_ok(scope):
            state[AUTH_STATE_KEY] = "viewcomfy"
            await self.app(scope, receive, send)
            return
        if path.startswith(SOCKETIO_PREFIX) and not offered:
            state[AUTH_STATE_KEY] = "socketio"  # the socket.io connect checks the auth object (ViewComfyAuth)
            await self.app(scope, receive, send)
            return
        await self.refuse(scope, receive, send, wrong=bool(offered))

    async def refuse(self, scope: Scope, receive: Receive, send: Send, *, wrong: bool) -> None:
        if wrong:
            message = "the API key is wrong"
        else:
            message = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            if scope["type"] == "websocket":
                message += " (or ?token=<key>)"
        challenge = 'Bearer realm="ComfyGate"' + (', error="invalid_token"' if wrong else "")
        body = json.dumps({"error": "unauthorized", "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: never accept. Deny with a real HTTP 401 where the server can, else close with 1008.
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})


# ------------------------------------------------------------------------------------------ logging
_TOKEN = re.compile(r"((?:^|[?&;])(?:token|api_key|key)=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Scrub ``?token=...`` from log records (uvicorn logs the full path with its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        return True


def install_log_redaction(names: Iterable[str] = ("uvicorn.access", "uvicorn.error", "uvicorn")) -> None:
    """Idempotent: add one :class:`RedactTokens` to each logger that prints request paths."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


# ------------------------------------------------------------------------------------------ OpenAPI
def install_openapi_security(app: Any, settings: Settings) -> None:
    """Describe the keys in /openapi.json (so /docs' Authorize button works); only when keys are on."""
    if not settings.api_keys:
        return
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {}).update(
            {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an entry of COMFYUI_API_KEYS"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        )
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        for path, item in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                for operation in item.values():
                    if isinstance(operation, dict):
                        operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
