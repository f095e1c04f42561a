"""The socket.io server ViewComfy's current clients connect to, at ``/socket.io/`` inside ComfyGate's app.

python-socketio's ASGI app (Engine.IO 4, socket.io 5) is mounted inside the FastAPI app, so the same ASGI
middleware stack wraps it as every route (API keys, Origin check, limits). Its clients cannot send
headers, only the connect ``auth`` object, so the API-key middleware lets ``/socket.io/`` through and the
namespace ``connect`` below applies the very same rule (:class:`security.auth.ViewComfyAuth`):

* a ComfyGate API key (``auth.token``, ``auth.authorization``, or a header the middleware checked), or
* the ViewComfy ``client_id`` / ``client_secret`` pair, as on ``/api/viewcomfy/infer``.

A refused connect gets socket.io's CONNECT_ERROR, and its Engine.IO session is closed right after, so an
unauthorised peer holds nothing open. Browser Origins: the app's Origin middleware (``security.origin``)
refuses a foreign page's handshake before it gets here, as on every route; Engine.IO's own CORS handling
is off (``cors_allowed_origins=[]``) so there is one rule, not two that could disagree.

The server only emits (to the ``sid`` a client names when scheduling); client events are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio  # type: ignore[import-untyped]  # no py.typed in python-socketio

from config import Settings
from security.auth import ViewComfyAuth

log = logging.getLogger("comfygate.viewcomfy")

MAX_MESSAGE_BYTES = 64 * 1024  # clients send nothing but the connect packet
REFUSED_CLOSE_DELAY = 0.5  # lets the CONNECT_ERROR packet reach the client before its session closes
# Engine.IO queues what a client has not taken yet without a bound: a client this many packets behind is
# disconnected (as /ws drops a listener whose queue is full). Its runs go on; it can reconnect, or poll them.
MAX_BACKLOG = 1000


class ViewComfySocketIO:
    """Owns the AsyncServer; routes emit through :meth:`emit` to a ``sid`` while :meth:`connected` says so."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = ViewComfyAuth(settings)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=[],  # security.origin.OriginMiddleware checks Origin for the whole app
            max_http_buffer_size=MAX_MESSAGE_BYTES,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self._sids: set[str] = set()
        self._closers: set[asyncio.Task[Any]] = set()

    def asgi_app(self) -> Any:
        """Mount at ``/socket.io``: the mount has consumed the path, so Engine.IO serves every path under it."""
        return socketio.ASGIApp(self.sio, socketio_path="")

    def connected(self, sid: str | None) -> bool:
        return sid is not None and sid in self._sids

    async def emit(self, event: str, data: Any, sid: str) -> None:
        if sid not in self._sids:
            return
        if self.backlog(sid) >= MAX_BACKLOG:
            log.warning("socket.io client %s stopped reading (%d messages behind): disconnected", sid, MAX_BACKLOG)
            self._sids.discard(sid)
            self._close_later(sid, delay=0.0, drop_queued=True)
            return
        await self.sio.emit(event, data, to=sid)

    def backlog(self, sid: str) -> int:
        """Packets Engine.IO holds for ``sid`` that its transport has not sent yet."""
        queue = getattr(self._engine_socket(sid), "queue", None)
        return queue.qsize() if queue is not None else 0

    def _engine_socket(self, sid: str) -> Any:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        return self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        scope = environ.get("asgi.scope") or {}
        if not self.auth.socket_allowed(scope, auth if isinstance(auth, dict) else {}):
            self._close_later(sid)
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized: send client_id and client_secret (or token) in the socket.io auth object"
            )
        self._sids.add(sid)

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        self._sids.discard(sid)

    def _close_later(self, sid: str, delay: float = REFUSED_CLOSE_DELAY, drop_queued: bool = False) -> None:
        """``drop_queued``: the client stopped reading; what it has not taken is let go at once."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")

        async def close() -> None:
            await asyncio.sleep(delay)
            socket = self.sio.eio.sockets.get(eio_sid)
            backlog = getattr(socket, "queue", None)
            while drop_queued and backlog is not None and not backlog.empty():
                backlog.get_nowait()
            with contextlib.suppress(Exception):
                await self.sio.eio.disconnect(eio_sid)  # sends Engine.IO's CLOSE packet
            # Engine.IO's writer would hold the transport open until its ping timeout (45 s) unless its
            # queue is ended: that is how its own reader ends it. Without that queue, the timeout still does.
            queue = getattr(socket, "queue", None)
            if queue is not None:
                with contextlib.suppress(Exception):
                    queue.put_nowait(None)

        if eio_sid is not None:
            job = asyncio.get_running_loop().create_task(close())
            self._closers.add(job)
            job.add_done_callback(self._closers.discard)
