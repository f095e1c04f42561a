"""What cluster mode adds in front of the routes (plain ASGI, so SSE and WebSockets pass untouched).

- While Redis or the object store is unreachable, every write (a POST, PUT, PATCH or DELETE under
  ``/api``) answers 503 with a clear message and ``Retry-After``: nothing is accepted that is not stored.
- A request about one task (``/api/task/{id}...``, ``/api/interrupt/{id}``) on a replica that has not
  heard of that task yet (its record is a few milliseconds ahead of the event stream) first loads it from
  Redis; an SSE request first loads the task's past events, so ``Last-Event-ID`` resumes on any replica.
- A read of task state (one task, the lists, v2 jobs) first lets this replica's event reader catch up with
  the stream (one Redis read): a client whose requests land on different replicas never sees a task go
  back (a listener on B heard it end; a GET on A says so too).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from cluster.coordinator import Cluster

_TASK_PATH = re.compile(r"^/api/(?:task|interrupt)/([^/]+)(/events)?$")
_STATE_READS = re.compile(r"^/api/(?:tasks|history|v2/jobs(?:/[^/]+)?)$")
READ_WAIT = 1.0  # seconds a read waits at most for this replica's event reader to catch up
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_SUBMIT_PATHS = {"/api/workflow/submit"}
IDEMPOTENCY_TTL = 24 * 3600
# A claim lives this long unanswered: a replica killed in the middle of a submission must not leave its key
# "in progress" for a day (a submission is answered within FORWARD_WAIT and a few round trips).
CLAIM_TTL = 120


class ClusterMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)  # None until the lifespan has run
        extras: dict[str, Any] = services.extras if services is not None else {}
        cluster: Cluster | None = extras.get("cluster")
        path: str = scope["path"]
        if cluster is not None and path.startswith("/api/"):
            if scope["method"] in _WRITES and not cluster.healthy:
                await _unavailable(cluster, send)
                return
            if scope["method"] == "POST" and path in _SUBMIT_PATHS:
                key = _header(scope, b"idempotency-key")
                if key is not None:
                    await _idempotent(self.app, cluster, key, scope, receive, send)
                    return
            match = _TASK_PATH.match(path)
            if match is not None or (scope["method"] == "GET" and _STATE_READS.match(path)):
                try:
                    await cluster.caught_up(READ_WAIT)
                except (RedisError, OSError):
                    pass  # answered from what this replica has: writes are refused meanwhile anyway
            if match is not None:
                await cluster.ensure_task(match.group(1))
                if match.group(2):
                    events = extras.get("event_log")
                    task = cluster.store.get(match.group(1))
                    if events is not None and task is not None:
                        await cluster.preload_events(events, task.task_id)
        await self.app(scope, receive, send)


async def _unavailable(cluster: Cluster, send: Send) -> None:
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _idempotent(app: ASGIApp, cluster: Cluster, key: str, scope: Scope, receive: Receive, send: Send) -> None:
    """A submission with an ``Idempotency-Key``: the first one runs; any later one with the same key (a retry
    on another replica after a lost answer) gets the first one's answer again, and no second task."""
    if not 1 <= len(key) <= 255:
        await _send_json(
            send, 422, {"error": "invalid_request", "message": "Idempotency-Key must be 1 to 255 characters"}, []
        )
        return
    redis_key = cluster.key("idem", hashlib.sha256(key.encode()).hexdigest())
    try:
        claimed = await cluster.redis.set(redis_key, "claim", nx=True, ex=CLAIM_TTL)
        stored = None if claimed else await cluster.redis.get(redis_key)
    except (RedisError, OSError):
        await _unavailable(cluster, send)
        return
    if not claimed:
        if stored is None or stored == b"claim":
            message = "a request with this Idempotency-Key is still being handled; retry shortly"
            await _send_json(
                send, 409, {"error": "idempotency_in_progress", "message": message}, [(b"retry-after", b"1")]
            )
            return
        first = json.loads(stored)
        await _send_json(send, first["status"], first["body"], [(b"idempotent-replayed", b"true")])
        return
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def capture(message: Any) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, capture)
    finally:
        status = int(started.get("status") or 500)
        body = b"".join(chunks)
        try:
            if status < 300:
                answer = {"status": status, "body": json.loads(body or b"null")}
                await cluster.redis.set(redis_key, json.dumps(answer), ex=IDEMPOTENCY_TTL)
            else:  # refused or failed: nothing was accepted, the same key may try again
                await cluster.redis.delete(redis_key)
        except (RedisError, OSError, ValueError):
            pass
    await send({"type": "http.response.start", "status": status, "headers": started.get("headers", [])})
    await send({"type": "http.response.body", "body": body})
