"""``GET /api/image/{name}`` of a just-finished output, answered from memory before FastAPI's routing.

The usual next request after a task completes is its output. The route answers it from the output
cache already; its cost is then FastAPI itself (routing, solving the route's dependencies and its query
and header parameters: ~0.13 ms of CPU on a warm machine, ~0.4 ms in the latency benchmark, BENCHMARKS.md
issue 18). This lane sits inside every security middleware (Origin, API keys, limits), so it answers
only requests they let through, with exactly the route's headers (``cached_headers``). Anything it does
not recognise (a Range, a query other than ``type=output``, a name not in memory, HEAD) goes on to the
route, which stays the one documented in OpenAPI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from core.media_types import content_type
from security.safe_paths import is_active_type, output_headers
from tasks.output_cache import CachedOutput

PREFIX = "/api/image/"
PLAIN_QUERIES = (b"", b"type=output")


def cached_headers(filename: str, cached: CachedOutput) -> dict[str, str]:
    """The headers of a cached output's 200 (``/api/image`` answers the same from the route and the lane)."""
    media = content_type(filename)
    headers = {"etag": cached.etag, "last-modified": cached.last_modified, "accept-ranges": "bytes"}
    headers.update(output_headers(media))
    disposition = "attachment" if is_active_type(media) else "inline"
    headers["content-disposition"] = f"{disposition}; filename*=utf-8''{quote(filename)}"
    headers["content-type"] = media
    return headers


class CachedOutputLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _hit(self, scope: Scope) -> tuple[str, CachedOutput] | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string", b"") not in PLAIN_QUERIES:
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        name = unquote(path[len(PREFIX) :])
        if not name or "/" in name:
            return None
        services: Any = getattr(scope["app"].state, "services", None) if "app" in scope else None
        if services is None:
            return None
        if any(key in (b"range", b"if-none-match") for key, _ in scope["headers"]):
            return None  # ranges and conditional requests (304) stay with the route
        cached = services.manager.outputs.cache.get(name)
        return None if cached is None else (name, cached)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hit = self._hit(scope)
        if hit is None:
            await self.app(scope, receive, send)
            return
        name, cached = hit
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in cached_headers(name, cached).items()]
        headers.append((b"content-length", str(len(cached.data)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": cached.data})
