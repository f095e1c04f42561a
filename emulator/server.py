"""A faithful, model-free ComfyUI (0.3.64) emulator: real HTTP + WebSocket on a loopback port.

ComfyGate's tests, benchmarks and ``--demo`` mode talk to this instead of a GPU box. The wire protocol
(routes, message order, error bodies, binary frames, history timing) follows the recordings in
``shared/comfyui-protocol``; image nodes really run with Pillow, model nodes are stand-ins. Fault
switches (delays, dropped sockets, restart) exist as Python API and as ``/emulator/...`` routes.

This module is the server (lifecycle, WebSocket clients), its thread wrapper and the CLI; the rest lives
beside it: ``emulator_queue`` (queue, history), ``emulator_executor`` (running a prompt), ``emulator_files``
(/view, uploads), ``emulator_info`` (/object_info and the other self-descriptions), ``emulator_control``
(the ``/emulator/...`` fault switches), ``emulator_http`` (front door, responses), ``emulator_nodes`` (the
node classes) and ``emulator_validation`` (prompt validation).

Run it: ``python -m emulator --port 8188 --step-delay 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import shutil
import socket
import string
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from emulator import nodes as en
from emulator.control import EmulatorControl
from emulator.costs import Costs
from emulator.executor import PromptExecutor
from emulator.files import EmulatorFiles
from emulator.info import SERVER_FEATURES, EmulatorInfo, base_object_info, custom_validators
from emulator.jobs import JobsAPI
from emulator.prompt_queue import HISTORY_MAX, EmulatorState, PromptQueue
from emulator.web import Frontdoor, guard

log = logging.getLogger("comfyui_emulator")


class _Client:
    """One WS connection with its own writer task, so a slow client never stalls execution."""

    def __init__(self, sid: str, ws: WebSocket) -> None:
        self.sid = sid
        self.ws = ws
        self.feature_flags: dict[str, Any] = {}
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._writer())

    async def _writer(self) -> None:
        try:
            while (msg := await self.queue.get()) is not None:
                if isinstance(msg, str):
                    await self.ws.send_text(msg)
                else:
                    await self.ws.send_bytes(msg)
        except Exception:  # noqa: BLE001 - a dead socket just stops receiving, like ComfyUI
            return

    def push(self, msg: str | bytes) -> None:
        self.queue.put_nowait(msg)

    def close(self) -> None:
        self.queue.put_nowait(None)


class ComfyUIEmulator:
    """The emulated ComfyUI server; all state lives on the event loop that called ``start()``."""

    history_delay: float = 0.001  # execution_success → history write: lets clients hit the recorded race
    # A hostile backend, for tests: maps every reported output file name (``executed`` and history);
    # /view then serves the reported name from the real file. None: ComfyUI's own names.
    output_name_hook: Callable[[str], str] | None = None

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        step_delay: float = 0.0,
        node_delay: float = 0.0,
        base_dir: Path | None = None,
        exclude_classes: Iterable[str] = (),
        costs: Costs | str = "realistic",
        newer: bool = False,
        history_max: int = HISTORY_MAX,
    ) -> None:
        self.host = host
        # What answers cost in time (emulator/costs.py): "realistic" follows the recorded real server.
        self.costs = Costs.named(costs) if isinstance(costs, str) else costs
        # A newer server (v0.36, NEWER-SERVERS.md): jobs API, atomic cancel, UUID prompt ids, subgraph ids.
        self.newer = newer
        self.history_max = history_max
        # Node classes this server pretends not to have installed (to test capability routing).
        self.exclude_classes = frozenset(exclude_classes)
        self.port = port
        self.step_delay = step_delay
        self.node_delay = node_delay
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="comfyemu-"))
        self.dirs = en.Dirs(self.base_dir / "input", self.base_dir / "output", self.base_dir / "temp")
        self.state = EmulatorState()
        self._clients: dict[str, _Client] = {}
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._worker: asyncio.Task[None] | None = None
        self.validators = custom_validators(self.dirs)
        # Benchmarks: a file in output/ that every executed output node also reports (off by default).
        self.extra_output: dict[str, Any] | None = None
        self.files = EmulatorFiles(self.dirs, lambda: self.costs)
        self.info = EmulatorInfo(self)
        self.queue = PromptQueue(self, PromptExecutor(self))
        self.app = Frontdoor(Starlette(routes=self._routes()))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # -------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Bind (port 0 = pick a free one, remembered for restarts) and start serving with fresh state."""
        if self._server is not None:
            return
        for d in (self.dirs.input, self.dirs.output):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.dirs.temp, ignore_errors=True)  # ComfyUI wipes temp/ on startup
        self.dirs.temp.mkdir(parents=True, exist_ok=True)
        base_object_info()  # parse the 500 kB once up front, not inside the first prompt's latency
        self.queue.wakeup = asyncio.Event()
        temp_prefix = "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        self.state = EmulatorState(temp_prefix=temp_prefix)
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets that say so,
        # and without it every split response waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            http="h11",
            ws="websockets-sansio",
            ws_ping_interval=None,
            timeout_keep_alive=30,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._socket = server, sock
        self._worker = asyncio.create_task(self.queue.worker(), name="comfyui-emulator-worker")

    async def stop(self) -> None:
        """Die like a killed ComfyUI: connections reset (WS close 1006), running prompt lost."""
        server, self._server = self._server, None
        if server is None:
            return
        for srv in getattr(server, "servers", []):
            srv.close()
        for conn in list(server.server_state.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for client in list(self._clients.values()):
            client.task.cancel()
        self._clients.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        for t in list(server.server_state.tasks):
            t.cancel()
        await asyncio.sleep(0)

    async def restart(self) -> None:
        """Come back on the same port with empty history, queue and cache; files on disk stay."""
        await self.stop()
        await self.start()

    async def drop_websockets(self) -> None:
        """Abort every WS connection at the TCP level (clients see 1006); HTTP keeps working."""
        if self._server is None:
            return
        for conn in list(self._server.server_state.connections):
            name = type(conn).__name__
            if "WebSocket" in name or name == "WSProtocol":
                conn.transport.abort()
        for client in list(self._clients.values()):
            client.task.cancel()
        self._clients.clear()
        await asyncio.sleep(0)

    def set_delays(self, step_delay: float | None = None, node_delay: float | None = None) -> None:
        """Change fault delays live; the running prompt picks them up at its next step/node."""
        if step_delay is not None:
            self.step_delay = float(step_delay)
        if node_delay is not None:
            self.node_delay = float(node_delay)

    def cleanup(self) -> None:
        """Remove the base dir if the emulator created it itself."""
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -------------------------------------------------------------------------------------- messaging
    def deliver(self, payload: str | bytes, sid: str | None) -> None:
        if sid is None:
            for client in list(self._clients.values()):
                client.push(payload)
        elif (client := self._clients.get(sid)) is not None:
            client.push(payload)

    def send(self, event: str, data: Any, sid: str | None) -> None:
        """ComfyUI's send_sync: sid None broadcasts, otherwise only that client (if connected)."""
        self.deliver(json.dumps({"type": event, "data": data}), sid)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def supports_metadata(self, sid: str | None) -> bool:
        client = self._clients.get(sid) if sid else None
        return bool(client and client.feature_flags.get("supports_preview_metadata"))

    # -------------------------------------------------------------------------------------- routes
    def _routes(self) -> list[Route | WebSocketRoute]:
        return [
            *self.queue.routes(),
            Route("/view", guard(self.files.get_view), methods=["GET"]),
            Route("/upload/image", guard(self.post_upload_image), methods=["POST"]),
            *self.info.routes(),
            *(JobsAPI(self).routes() if self.newer else []),
            *EmulatorControl(self).routes(),
            WebSocketRoute("/ws", self.websocket),
        ]

    async def post_upload_image(self, request: Request) -> Response:
        response = await self.files.post_upload_image(request)
        if response.status_code == 200:
            self.info.forget_served_object_info()
        return response

    # -------------------------------------------------------------------------------------- websocket
    async def websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId", "") or uuid.uuid4().hex
        client = _Client(sid, ws)
        self._clients[sid] = client  # a reconnect with the same clientId takes over the stream
        st = self.state
        client.push(json.dumps({"type": "status", "data": {"status": self.queue.info(), "sid": sid}}))
        if st.client_id == sid and st.last_node_id is not None:
            client.push(json.dumps({"type": "executing", "data": {"node": st.last_node_id}}))
        first = True
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("text") is None:
                    continue
                try:
                    data = json.loads(msg["text"])
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        client.feature_flags = data.get("data") or {}
                        client.push(json.dumps({"type": "feature_flags", "data": SERVER_FEATURES}))
                except json.JSONDecodeError:
                    pass
                first = False
        except Exception:  # noqa: BLE001 - an aborted socket ends the session quietly
            pass
        finally:
            if self._clients.get(sid) is client:
                del self._clients[sid]
            client.close()


# ------------------------------------------------------------------------------------------ threads
class EmulatorThread:
    """The same emulator on its own event loop in a daemon thread, for sync code and ComfyGate tests."""

    def __init__(self, **kwargs: Any) -> None:
        self.emulator = ComfyUIEmulator(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def port(self) -> int:
        return self.emulator.port

    def _call(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        assert self._loop is not None, "EmulatorThread not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> EmulatorThread:
        if self._thread is None or not self._thread.is_alive():
            ready = threading.Event()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()
                loop.close()

            self._loop = loop
            self._thread = threading.Thread(target=run, name="comfyui-emulator", daemon=True)
            self._thread.start()
            ready.wait()
        self._call(self.emulator.start())
        return self

    def stop(self) -> None:
        """Stop the server and its loop thread; ``start()`` again comes back on the same port."""
        if self._loop is None or self._thread is None:
            return
        self._call(self.emulator.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None
        self._loop = None

    def restart(self) -> None:
        if self._thread is None:
            self.start()
        else:
            self._call(self.emulator.restart())

    def drop_websockets(self) -> None:
        self._call(self.emulator.drop_websockets())

    def set_delays(self, step_delay: float | None = None, node_delay: float | None = None) -> None:
        self.emulator.set_delays(step_delay=step_delay, node_delay=node_delay)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C: ``python -m emulator --port 8188 --step-delay 0.05``."""
    p = argparse.ArgumentParser(description="Model-free ComfyUI emulator (0.3.64, or --newer: v0.36)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--node-delay", type=float, default=0.0)
    p.add_argument("--base-dir", type=Path, default=None)
    p.add_argument(
        "--costs", choices=("realistic", "none"), default="realistic", help="answer times: a real server's, or instant"
    )
    p.add_argument("--gc-pauses", action="store_true", help="block 300-650 ms every ~10 s like ComfyUI's gc.collect()")
    p.add_argument("--cost-seed", type=int, default=0, help="seed of the cost model's random draws")
    p.add_argument("--newer", action="store_true", help="behave as ComfyUI v0.36 (jobs API, atomic cancel, ...)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        emu = ComfyUIEmulator(
            args.host,
            args.port,
            step_delay=args.step_delay,
            node_delay=args.node_delay,
            base_dir=args.base_dir,
            costs=Costs.named(args.costs, gc_pauses=args.gc_pauses, seed=args.cost_seed),
            newer=args.newer,
        )
        await emu.start()
        log.info("ComfyUI emulator on %s (files in %s)", emu.url, emu.base_dir)
        try:
            await asyncio.Event().wait()
        finally:
            await emu.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
