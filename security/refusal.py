"""One way to refuse a request before any route runs: an HTTP answer, or a WebSocket handshake denied.

Used by every pure ASGI guard (API keys, Origin, WebSocket limits), so a refused WebSocket gets the
same JSON body as a refused HTTP request wherever the server lets us say so.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Scope, Send


async def refuse(
    scope: Scope, send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``status`` with a JSON ``body``. A WebSocket is never accepted: it is denied with that HTTP
    answer where the server supports the ASGI denial-response extension, else closed with 1008."""
    data = json.dumps(body).encode()
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    all_headers += headers or []
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": data})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": all_headers})
        await send({"type": "websocket.http.response.body", "body": data})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": str(body.get("error", "refused"))[:120]})
