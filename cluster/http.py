"""What cluster mode adds in front of the routes (plain ASGI, so SSE and WebSockets pass untouched).

- While Redis or the object store is unreachable, every write (a POST, PUT, PATCH or DELETE under
  ``/api``) answers 503 with a clear message and ``Retry-After``: nothing is accepted that is not stored.
- A request about one task (``/api/task/{id}...``, ``/api/interrupt/{id}``) on a replica that has not
  heard of that task yet (its record is a few milliseconds ahead of the event stream) first loads it from
  Redis; an SSE request first loads the task's past events, so ``Last-Event-ID`` resumes on any replica.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

_TASK_PATH = re.compile(r"^/api/(?:task|interrupt)/([^/]+)(/events)?$")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class ClusterMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        cluster: Any = services.extras.get("cluster") if services is not None else None
        path: str = scope["path"]
        if cluster is not None and path.startswith("/api/"):
            if scope["method"] in _WRITES and not cluster.healthy:
                await _unavailable(cluster, send)
                return
            match = _TASK_PATH.match(path)
            if match is not None:
                await cluster.ensure_task(match.group(1))
                if match.group(2):
                    events = services.extras.get("event_log")
                    task = services.store.get(match.group(1))
                    if events is not None and task is not None:
                        await cluster.preload_events(events, task.task_id)
        await self.app(scope, receive, send)


async def _unavailable(cluster: Any, send: Send) -> None:
    state = cluster.describe()
    if not state["redis"]:
        message = "Redis is unreachable: this replica cannot store anything now; retry shortly"
    else:
        message = "the object store is unreachable: outputs cannot be stored now; retry shortly"
    body = json.dumps({"error": "cluster_unavailable", "message": message, "cluster": state}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", b"2"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
