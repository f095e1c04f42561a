"""ComfyGate's own WebSocket: every task update, queue and backend change, pushed to listeners.

``/ws`` gets everything; ``/ws?task_id=a,b`` only those tasks (plus queue and backend updates). A
listener can widen its filter by sending ``{"type": "subscribe", "task_id": "..."}``. A listener that
stops reading is dropped once its bounded queue is full (see ``event_hub``).

Bounds, so one connection cannot grow the server's memory: at most ``MAX_TASK_IDS`` task ids per
listener, each at most ``MAX_TASK_ID_LENGTH`` characters (a handshake asking for more is refused with
a 400; a ``subscribe`` beyond them gets an ``error`` message and changes nothing). Only JSON text
messages are taken: a binary frame closes the socket with 1003 and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from api.ws_protocol import FRAMES_EXTENSION, join_frames
from events.hub import Subscription
from gateway.services import Services

router = APIRouter()

MAX_TASK_IDS = 1000  # per listener: far more than a page follows, far less than memory notices
MAX_TASK_ID_LENGTH = 128  # ComfyGate's task ids and ComfyUI's prompt ids are 32-36 characters


def task_id_problem(task_id: object, count: int) -> str | None:
    """Why ``task_id`` cannot be added to a listener that follows ``count`` ids already, or None."""
    if not isinstance(task_id, str) or not task_id.strip():
        return "task_id must be a non-empty string"
    if len(task_id) > MAX_TASK_ID_LENGTH or not task_id.isprintable():
        return f"task_id must be at most {MAX_TASK_ID_LENGTH} printable characters"
    if count >= MAX_TASK_IDS:
        return f"a connection follows at most {MAX_TASK_IDS} tasks; open another one, or follow all (/ws)"
    return None


@router.websocket("/ws")
async def websocket_updates(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    raw = websocket.query_params.get("task_id") or ""
    task_ids = {t.strip() for t in raw.split(",") if t.strip()} or None
    for index, task_id in enumerate(sorted(task_ids or ())):
        problem = task_id_problem(task_id, index)
        if problem is not None:
            body = {"error": "invalid_request", "message": f"?task_id=: {problem}", "field": "task_id"}
            await websocket.send_denial_response(JSONResponse(body, status_code=400))
            return
    await websocket.accept()
    sub = services.hub.subscribe(task_ids)
    try:
        hello = {
            "type": "hello",
            "subscribed": sorted(task_ids) if task_ids else "all",
            "backends": [b.describe() for b in services.manager.backends.values()],
        }
        await websocket.send_text(json.dumps(hello))
        if task_ids:  # a late subscriber learns where its tasks stand now
            for task_id in task_ids:
                task = services.store.get(task_id)
                if task is not None:
                    await websocket.send_text(json.dumps({"type": "task_update", **task.summary()}, default=str))
        ending: list[tuple[int, str]] = []  # the reader's reason to close, if it has one
        reader = asyncio.create_task(_read_commands(websocket, services, sub, ending))
        try:
            # Everything queued goes out in one go: ASGI sends on uvicorn never suspend, so a batch costs
            # one wake-up. On ComfyGate's own protocol (ws_protocol) frames are built once per message
            # for every listener, a batch is one ASGI message, and the writes of a loop turn one write();
            # while the socket takes them, the hub writes them itself with no task wake-up (event_hub).
            await _send_updates(websocket, sub)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if ending or sub.dropped:
            code, reason = ending[0] if ending else (1013, "listener too slow; reconnect")
            with contextlib.suppress(Exception):
                await websocket.close(code=code, reason=reason)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        services.hub.unsubscribe(sub)


async def _send_updates(websocket: WebSocket, sub: Subscription) -> None:
    send = websocket.send
    frames_ext = (websocket.scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    if frames_ext is not None:
        if "write" in frames_ext:  # the hub writes straight to the socket while it can take it
            write = frames_ext["write"]
            sub.attach_sink(lambda batch: write(join_frames(batch)), frames_ext["writable"])
        async for batch in sub.batches():
            await send({"type": "websocket.send", "comfygate.frames": join_frames(batch)})
    else:
        async for batch in sub.batches():
            for text in batch:
                await send({"type": "websocket.send", "text": text})


async def _read_commands(
    websocket: WebSocket, services: Services, sub: Subscription, ending: list[tuple[int, str]]
) -> None:
    """Handle subscribe messages; end the subscription when the client goes away (or sends binary)."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:  # a binary frame: not a protocol this socket speaks
                ending.append((1003, "binary frames are not accepted; send JSON text messages"))
                return
            try:
                msg = json.loads(text)
            except (ValueError, RecursionError):  # garbage or hostile nesting: ignored, like any unknown message
                continue
            if isinstance(msg, dict) and msg.get("type") == "subscribe":
                task_id = msg.get("task_id")
                if sub.task_ids is None or (isinstance(task_id, str) and task_id in sub.task_ids):
                    continue  # following everything already, or this task already
                problem = task_id_problem(task_id, len(sub.task_ids))
                if problem is None:
                    services.hub.add_task(sub, task_id)  # type: ignore[arg-type]
                else:
                    error = {"type": "error", "error": "invalid_request", "message": problem}
                    await websocket.send_text(json.dumps(error))
            elif isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send_text('{"type":"pong"}')
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sub.close()
