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
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from config import Settings
from security.refusal import refuse

# Open without a key: the health probe (load balancers), the debugger page and its files (the page asks
# for a key itself). Everything else, including /metrics and routes nobody has written yet, needs one.
OPEN_PATHS = frozenset({"/", "/api/health", "/api/v2/health", "/favicon.ico"})
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


VIEWCOMFY_HEADERS = (("client_id", "client-id"), ("client_secret", "client-secret"))


def viewcomfy_pair(settings: Settings) -> tuple[str, str] | None:
    """The endpoint's configured (client_id, client_secret), or None when neither is set.

    Half a pair (one unset, or empty) is a misconfiguration: it must not open the endpoint to any
    secret, so it yields a pair nothing can match (an empty value never matches, see below).
    """
    client_id = getattr(settings, "viewcomfy_server_client_id", None)
    secret = getattr(settings, "viewcomfy_server_client_secret", None)
    if client_id is None and secret is None:
        return None
    return (
        client_id.get_secret_value() if client_id is not None else "",
        secret.get_secret_value() if secret is not None else "",
    )


def viewcomfy_pair_problem(settings: Settings) -> str | None:
    """Why the configured pair can never match (to log at startup and to say in a 401), or None."""
    pair = viewcomfy_pair(settings)
    if pair is None or all(pair):
        return None
    missing = [name for name, value in zip(("CLIENT_ID", "CLIENT_SECRET"), pair, strict=True) if not value]
    return (
        "the ViewComfy endpoint's credentials are half configured (set COMFYUI_VIEWCOMFY_SERVER_"
        + " and COMFYUI_VIEWCOMFY_SERVER_".join(missing)
        + "); every client_id/client_secret is refused until both are set"
    )


def viewcomfy_credentials_ok(headers: dict[str, str], settings: Settings) -> bool:
    """``client_id``/``client_secret`` (or ``client-id``/``client-secret``: proxies drop underscores)
    against the configured pair: both must be configured, non-empty, and match. SHA-256 of each side
    with ``compare_digest``, both compared always: neither which one failed nor a length leaks."""
    pair = viewcomfy_pair(settings)
    if pair is None:
        return False
    ok = all(pair)
    for names, expected in zip(VIEWCOMFY_HEADERS, pair, strict=True):
        given = next((headers[n] for n in names if headers.get(n)), "")
        ok &= hmac.compare_digest(_digest(given), _digest(expected)) and bool(given)
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


class ViewComfyAuth:
    """Who may use the ViewComfy-compatible API (both generations, HTTP and socket.io): one rule, here.

    An API key, or the configured ``client_id`` / ``client_secret`` pair (:func:`viewcomfy_credentials_ok`:
    both parts configured and matching; half a pair fails closed). With neither keys nor a pair the API
    is open as the rest of ComfyGate is; otherwise a key or the pair is needed. Every comparison is
    constant time over SHA-256 digests.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.key_digests = [_digest(k.get_secret_value()) for k in settings.api_keys if k.get_secret_value()]
        self.pair = viewcomfy_pair(settings)

    @property
    def pair_configured(self) -> bool:
        return self.pair is not None

    def pair_ok(self, given: dict[str, str]) -> bool:
        """``given``: lower-cased headers or an ``auth`` object (``client_id`` or ``client-id`` names)."""
        return viewcomfy_credentials_ok(given, self.settings)

    def allowed(self, given: dict[str, str], *, key_ok: bool) -> bool:
        if key_ok or (not self.key_digests and self.pair is None):
            return True
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

    @staticmethod
    def is_viewcomfy(scope: Scope) -> bool:
        """The older ViewComfy endpoint's prefix, or exactly one of the current API's routes."""
        path = scope.get("path", "")
        return path.startswith(VIEWCOMFY_PREFIX) or (scope.get("method"), path) in VIEWCOMFY_ROUTES

    def viewcomfy_credentials_ok(self, scope: Scope) -> bool:
        """client_id / client_secret headers against the endpoint's configured pair (never when unset)."""
        return self.viewcomfy.pair_ok(_headers(scope))

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
        if self.is_viewcomfy(scope) and self.viewcomfy_credentials_ok(scope):
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
        if self.is_viewcomfy(scope):
            message += "; or, on this ViewComfy endpoint, client_id and client_secret: " + (
                viewcomfy_pair_problem(self.settings) or "missing or wrong"
            )
        challenge = 'Bearer realm="ComfyGate"' + (', error="invalid_token"' if wrong else "")
        body = {"error": "unauthorized", "message": message}
        await refuse(scope, send, 401, body, [(b"www-authenticate", challenge.encode())])


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
