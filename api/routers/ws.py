"""ComfyGate's own WebSocket: every task update, queue and backend change, pushed to listeners.

``/ws`` gets everything; ``/ws?task_id=a,b`` only those tasks (plus queue and backend updates). A
listener can widen its filter by sending ``{"type": "subscribe", "task_id": "..."}``. A listener that
stops reading is dropped once its bounded queue is full (see ``event_hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.ws_protocol import FRAMES_EXTENSION, join_frames
from events.hub import Subscription
from gateway.services import Services

router = APIRouter()


@router.websocket("/ws")
async def websocket_updates(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    raw = websocket.query_params.get("task_id") or ""
    task_ids = {t.strip() for t in raw.split(",") if t.strip()} or None
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
        reader = asyncio.create_task(_read_commands(websocket, services, sub))
        try:
            # Everything queued goes out in one go: ASGI sends on uvicorn never suspend, so a batch costs
            # one wake-up. On ComfyGate's own protocol (ws_protocol) frames are built once per message
            # for every listener, a batch is one ASGI message, and the writes of a loop turn one write();
            # while the socket takes them, the hub writes them itself with no task wake-up (event_hub).
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
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if sub.dropped:
            with contextlib.suppress(Exception):
                await websocket.close(code=1013, reason="listener too slow; reconnect")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        services.hub.unsubscribe(sub)


async def _read_commands(websocket: WebSocket, services: Services, sub: Subscription) -> None:
    """Handle subscribe messages; end the subscription when the client goes away."""
    try:
        while True:
            text = await websocket.receive_text()
            try:
                msg = json.loads(text)
            except (ValueError, RecursionError):  # garbage or hostile nesting: ignored, like any unknown message
                continue
            if isinstance(msg, dict) and msg.get("type") == "subscribe" and isinstance(msg.get("task_id"), str):
                services.hub.add_task(sub, msg["task_id"])
            elif isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send_text('{"type":"pong"}')
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sub.close()
