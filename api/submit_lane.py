"""``POST /api/workflow/submit`` handed straight to its route's function, before FastAPI's routing.

The submit route takes only the request (it reads its body and query itself), so what FastAPI adds on the
way is its routing: the lazily included routers are matched one by one, each behind scope bookkeeping
(~570 Python calls; ~0.06 ms on a warm machine, 0.31 ms in the latency benchmark's trace, issue 18). This
lane sits inside every security middleware (Origin, API keys, limits), as ``CachedOutputLane`` does, so it
sees only what they let through, and answers errors with the app's own exception handlers: the same
answers as through the router. Anything else (another method or path, a trailing slash) goes on to the
router, where the route stays the one documented in OpenAPI.
"""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.routers.tasks import submit

PATH = "/api/workflow/submit"


class SubmitLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or "app" not in scope:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await submit(request)
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise  # to the outermost handler, as from a route (a 500 with the unexpected_error body)
            response = await handler(request, exc)
        if not isinstance(response, Response):  # the route answers with responses; a body would be JSON
            response = JSONResponse(jsonable_encoder(response))
        await response(scope, receive, send)


def _handler(app: Any, exc: Exception) -> Any:
    """The app's handler for ``exc`` (the nearest class in its MRO), as Starlette's ExceptionMiddleware looks
    it up; ``Exception``'s own stays with the outermost middleware, as it does for a route."""
    handlers: dict[Any, Any] = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
