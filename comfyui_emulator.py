"""A faithful, model-free ComfyUI (0.3.64) emulator: real HTTP + WebSocket on a loopback port.

ComfyGate's tests, benchmarks and ``--demo`` mode talk to this instead of a GPU box. The wire protocol
(routes, message order, error bodies, binary frames, history timing) follows the recordings in
``shared/comfyui-protocol``; image nodes really run with Pillow, model nodes are stand-ins. Fault
switches (delays, dropped sockets, restart) exist as Python API and as ``/emulator/...`` routes.

Run it: ``python comfyui_emulator.py --port 8188 --step-delay 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import hashlib
import heapq
import io
import json
import logging
import mimetypes
import os
import random
import shutil
import socket
import string
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

import emulator_nodes as en
from emulator_validation import is_link, validate_prompt

log = logging.getLogger("comfyui_emulator")

HERE = Path(__file__).resolve().parent
OBJECT_INFO_PATH = HERE / "emulator_data" / "object_info.json"
PROTOCOL_DIR = Path(os.environ.get("COMFYGATE_PROTOCOL_DIR") or HERE.parent / "shared" / "comfyui-protocol")
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
ERROR_500 = "500 Internal Server Error\n\nServer got itself in trouble"
BIN_PREVIEW, BIN_TEXT, BIN_PREVIEW_META = 1, 3, 4


# ------------------------------------------------------------------------------------------ object_info
@functools.lru_cache(maxsize=1)
def base_object_info() -> dict[str, Any]:
    """The recorded object_info with fake model names filled in, so SD workflows validate."""
    info = json.loads(OBJECT_INFO_PATH.read_text(encoding="utf-8"))
    for cls in info.values():
        cls.setdefault("description", "")  # stripped from the recording; ComfyUI always sends the key
        for category in ("required", "optional"):
            for name, spec in cls.get("input", {}).get(category, {}).items():
                fakes = en.FAKE_MODELS.get(name)
                if fakes and spec and isinstance(spec[0], list):
                    spec[0] = list(dict.fromkeys(fakes + [v for v in spec[0] if v not in fakes]))
    return info


def _custom_validators(dirs: en.Dirs) -> dict[str, dict[str, Callable[[Any], bool | str]]]:
    """LoadImage's VALIDATE_INPUTS: the file must exist (annotated names allowed)."""

    def image_exists(name: Any) -> bool | str:
        if isinstance(name, str) and en.annotated_path(name, dirs.input, dirs).is_file():
            return True
        return f"Invalid image file: {name}"

    return {"LoadImage": {"image": image_exists}, "LoadImageMask": {"image": image_exists}}


# ------------------------------------------------------------------------------------------ http helpers
def _json(data: Any, status: int = 200) -> Response:
    """aiohttp's json_response: default json.dumps spacing and a utf-8 charset, like the recordings."""
    return Response(json.dumps(data), status_code=status, media_type="application/json; charset=utf-8")


def _empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def _guard(fn: Handler) -> Handler:
    """Any handler exception becomes ComfyUI's (aiohttp's) plain-text 500, e.g. malformed JSON."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception:  # noqa: BLE001
            log.debug("handler error", exc_info=True)
            return Response(ERROR_500, status_code=500, media_type="text/plain")

    return wrapper


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_mismatch(headers: dict[bytes, bytes]) -> bool:
    """ComfyUI's origin_only_middleware: loopback Host + foreign Origin = a browser CSRF attempt."""
    host_raw, origin = headers.get(b"host"), headers.get(b"origin")
    if host_raw is None or origin is None:
        return False
    host_domain = host_raw.decode("latin-1").lower()
    parsed = urlparse(origin.decode("latin-1"))
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urlsplit("//" + host_domain)
    loopback = _is_loopback(host_parsed.hostname)
    host_cmp: str | None = host_domain
    if parsed.port is None:
        host_cmp = host_parsed.hostname
    if host_parsed.port is None:
        origin_domain = parsed.hostname
    return bool(loopback and host_cmp and origin_domain and host_cmp != origin_domain)


class _Frontdoor:
    """ASGI wrapper: the Origin check, ``/api`` aliases and OPTIONS, before Starlette routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if _origin_mismatch(dict(scope["headers"])):
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        path: str = scope["path"]
        if path.startswith("/api/"):
            scope = dict(scope, path=path[4:], raw_path=path[4:].encode())
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ state
@dataclass
class _Item:
    """A queue entry; heap order is (number, prompt_id) like ComfyUI's tuple heap."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]

    def __lt__(self, other: _Item) -> bool:
        return (self.number, self.prompt_id) < (other.number, other.prompt_id)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class _State:
    """Everything a ComfyUI restart loses."""

    queue: list[_Item] = field(default_factory=list)
    running: _Item | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    number: int = 0
    cache: dict[str, _CacheEntry] = field(default_factory=dict)
    interrupt: bool = False
    client_id: str | None = None
    last_node_id: str | None = None


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _full_type_name(klass: type) -> str:
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


class _Progress:
    """ComfyUI's progress registry: one progress_state message per change, with every touched node."""

    def __init__(self, emu: ComfyUIEmulator, prompt_id: str, sid: str | None) -> None:
        self.emu, self.prompt_id, self.sid = emu, prompt_id, sid
        self.nodes: dict[str, dict[str, Any]] = {}

    def _set(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self.emu._send("progress_state", {"prompt_id": self.prompt_id, "nodes": self.nodes}, self.sid)

    def start(self, node_id: str) -> None:
        self._set(node_id, 0.0, 1.0, "running")

    def update(self, node_id: str, value: int, maximum: int) -> None:
        self._set(node_id, value, maximum, "running")

    def finish(self, node_id: str) -> None:
        entry = self.nodes.get(node_id)
        maximum = entry["max"] if entry else 1
        self._set(node_id, maximum, maximum, "finished")


# ------------------------------------------------------------------------------------------ emulator
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
    ) -> None:
        self.host = host
        # Node classes this server pretends not to have installed (to test capability routing).
        self.exclude_classes = frozenset(exclude_classes)
        self.port = port
        self.step_delay = step_delay
        self.node_delay = node_delay
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="comfyemu-"))
        self.dirs = en.Dirs(self.base_dir / "input", self.base_dir / "output", self.base_dir / "temp")
        self._state = _State()
        self._clients: dict[str, _Client] = {}
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._temp_prefix = ""
        self._object_info_bytes: tuple[tuple[str, ...], bytes] | None = None
        self._validators = _custom_validators(self.dirs)
        # Benchmarks: a file in output/ that every executed output node also reports (off by default).
        self.extra_output: dict[str, Any] | None = None
        self._output_aliases: dict[str, Path] = {}
        self.app = _Frontdoor(Starlette(routes=self._routes()))

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
        self._state = _State()
        self._wakeup = asyncio.Event()
        self._temp_prefix = "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
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
        self._worker = asyncio.create_task(self._prompt_worker(), name="comfyui-emulator-worker")

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
    def _deliver(self, payload: str | bytes, sid: str | None) -> None:
        if sid is None:
            for client in list(self._clients.values()):
                client.push(payload)
        elif (client := self._clients.get(sid)) is not None:
            client.push(payload)

    def _send(self, event: str, data: Any, sid: str | None) -> None:
        """ComfyUI's send_sync: sid None broadcasts, otherwise only that client (if connected)."""
        self._deliver(json.dumps({"type": event, "data": data}), sid)

    def _queue_info(self) -> dict[str, Any]:
        st = self._state
        return {"exec_info": {"queue_remaining": len(st.queue) + (1 if st.running else 0)}}

    def _queue_updated(self) -> None:
        self._send("status", {"status": self._queue_info()}, None)

    def _supports_metadata(self, sid: str | None) -> bool:
        client = self._clients.get(sid) if sid else None
        return bool(client and client.feature_flags.get("supports_preview_metadata"))

    # -------------------------------------------------------------------------------------- worker
    async def _prompt_worker(self) -> None:
        st = self._state
        while True:
            while not st.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = heapq.heappop(st.queue)
            st.running = item
            self._queue_updated()
            status_str, completed, messages, outputs, meta = await self._execute(item)
            await asyncio.sleep(self.history_delay)  # history lands just after execution_success
            history = st.history
            if len(history) > 10000:
                history.pop(next(iter(history)))
            history[item.prompt_id] = {
                "prompt": item.as_list(),
                "outputs": outputs,
                "status": {"status_str": status_str, "completed": completed, "messages": messages},
                "meta": meta,
            }
            st.running = None
            self._queue_updated()
            if st.client_id is not None:
                self._send("executing", {"node": None, "prompt_id": item.prompt_id}, st.client_id)

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """Cache keys: class, IS_CHANGED and inputs, with links replaced by the source's key."""
        memo: dict[str, str] = {}

        def sig(nid: str, visiting: frozenset[str]) -> str:
            if nid in memo:
                return memo[nid]
            node = prompt[nid]
            parts: list[Any] = [
                node["class_type"],
                repr(en.is_changed(node["class_type"], node["inputs"], self.dirs)),
            ]
            for k in sorted(node["inputs"]):
                v = node["inputs"][k]
                if is_link(v) and v[0] in prompt and v[0] not in visiting:
                    parts.append([k, "link", sig(v[0], visiting | {nid}), v[1]])
                else:
                    parts.append([k, v])
            memo[nid] = hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()
            return memo[nid]

        return {nid: sig(nid, frozenset()) for nid in prompt}

    async def _execute(self, item: _Item) -> tuple[str, bool, list[Any], dict[str, Any], dict[str, Any]]:
        """Run one prompt with ComfyUI's message order; returns what task_done puts into history."""
        st = self._state
        st.interrupt = False
        prompt, prompt_id = item.prompt, item.prompt_id
        sid = item.extra.get("client_id") if "client_id" in item.extra else None
        st.client_id = sid
        messages: list[Any] = []

        def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if sid is not None or broadcast:
                self._send(event, data, sid)

        add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = self._signatures(prompt)
        keep = set(sigs.values())
        st.cache = {k: v for k, v in st.cache.items() if k in keep}
        cache = st.cache
        cached_nodes = [n for n in prompt if sigs[n] in cache]
        add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, False)

        info = self._object_info()
        progress = _Progress(self, prompt_id, sid)
        values: dict[str, tuple[Any, ...]] = {n: cache[sigs[n]].outputs for n in cached_nodes}
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        initially_cached = set(cached_nodes)
        order = en.ExecutionList(
            prompt,
            lambda n: n in initially_cached,
            lambda n: bool(info[prompt[n]["class_type"]].get("output_node")),
        )
        for out in item.outputs:
            order.add_node(out)

        failure: dict[str, Any] | None = None
        while not order.is_empty():
            try:
                nid = order.next_node()
            except IndexError:
                failure = {
                    "node_id": next(iter(order.pending)),
                    "ex": RuntimeError("Dependency cycle detected"),
                    "inputs": {},
                }
                break
            node = prompt[nid]
            class_type = node["class_type"]
            entry = cache.get(sigs[nid])
            if entry is not None:
                if sid is not None:
                    self._send(
                        "executed",
                        {"node": nid, "display_node": nid, "output": entry.ui, "prompt_id": prompt_id},
                        sid,
                    )
                if entry.ui is not None:
                    ui_outputs[nid] = entry.ui
                progress.nodes.pop(nid, None)
                progress._set(nid, 1, 1, "finished")
                values[nid] = entry.outputs
                order.complete(nid)
                continue

            progress.start(nid)
            if sid is not None:
                st.last_node_id = nid
                self._send("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id}, sid)
            class_info = info[class_type]
            inputs = self._resolve_inputs(node, class_info, values)
            ctx = self._node_context(nid, prompt_id, prompt, sid, progress, class_info)
            try:
                ctx.check_interrupt()
                if self.node_delay > 0:
                    await asyncio.sleep(self.node_delay)
                outs, ui = await en.run_node(class_type, inputs, ctx)
                if ui and self.output_name_hook is not None:
                    ui = self._rename_outputs(ui)
            except en.InterruptProcessing:
                failure = {"node_id": nid, "interrupted": True}
                break
            except Exception as ex:  # noqa: BLE001 - any node failure becomes execution_error
                failure = {
                    "node_id": nid,
                    "ex": ex,
                    "inputs": self._hidden_inputs(inputs, class_info, node, prompt, item.extra),
                }
                break
            if self.extra_output is not None and class_info.get("output_node"):
                ui = {**(ui or {}), "images": [*(ui or {}).get("images", []), dict(self.extra_output)]}
            if ui:
                ui_outputs[nid] = ui
                if sid is not None:
                    self._send(
                        "executed",
                        {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id},
                        sid,
                    )
            cache[sigs[nid]] = _CacheEntry(outs, ui or None)
            values[nid] = outs
            progress.finish(nid)
            executed.append(nid)
            order.complete(nid)

        if failure is None:
            add_message("execution_success", {"prompt_id": prompt_id}, False)
        else:
            fid = failure["node_id"]
            base = {
                "prompt_id": prompt_id,
                "node_id": fid,
                "node_type": prompt[fid]["class_type"],
                "executed": list(executed),
            }
            if failure.get("interrupted"):
                add_message("execution_interrupted", base, True)
            else:
                ex = failure["ex"]
                add_message(
                    "execution_error",
                    {
                        **base,
                        "exception_message": f"{ex}\n",
                        "exception_type": _full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                        "current_inputs": {k: [_format_input(v)] for k, v in failure["inputs"].items()},
                        "current_outputs": list(prompt),
                    },
                    False,
                )
        st.last_node_id = None
        meta = {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in ui_outputs}
        ok = failure is None
        return ("success" if ok else "error"), ok, messages, ui_outputs, meta

    @staticmethod
    def _resolve_inputs(
        node: dict[str, Any], class_info: dict[str, Any], values: dict[str, tuple[Any, ...]]
    ) -> dict[str, Any]:
        """Declared inputs only (ComfyUI ignores extras such as LoadImage's ``upload``), links resolved."""
        declared = class_info.get("input", {})
        out: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name not in declared.get("required", {}) and name not in declared.get("optional", {}):
                continue
            out[name] = values[value[0]][value[1]] if is_link(value) and value[0] in values else value
        return out

    @staticmethod
    def _hidden_inputs(
        inputs: dict[str, Any],
        class_info: dict[str, Any],
        node: dict[str, Any],
        prompt: dict[str, Any],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Inputs as execution_error.current_inputs shows them, hidden PROMPT/EXTRA_PNGINFO included."""
        out = dict(inputs)
        for name, kind in class_info.get("input", {}).get("hidden", {}).items():
            if kind == "PROMPT":
                out[name] = prompt
            elif kind == "EXTRA_PNGINFO":
                out[name] = extra.get("extra_pnginfo")
        return out

    def _node_context(
        self,
        nid: str,
        prompt_id: str,
        prompt: dict[str, Any],
        sid: str | None,
        progress: _Progress,
        class_info: dict[str, Any],
    ) -> en.NodeContext:
        st = self._state

        def check_interrupt() -> None:
            if st.interrupt:
                st.interrupt = False
                raise en.InterruptProcessing()

        async def on_progress(value: int, total: int, preview: tuple[str, Image.Image] | None) -> None:
            progress.update(nid, value, total)
            data = en.encode_image(*preview) if preview else None
            kind = preview[0] if preview else ""
            if data is not None and self._supports_metadata(sid):
                meta = json.dumps(
                    {
                        "node_id": nid,
                        "prompt_id": prompt_id,
                        "display_node_id": nid,
                        "parent_node_id": None,
                        "real_node_id": nid,
                        "image_type": "image/jpeg" if kind == "JPEG" else "image/png",
                    }
                ).encode()
                self._deliver(struct.pack(">II", BIN_PREVIEW_META, len(meta)) + meta + data, sid)
            self._send("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": nid}, sid)
            if data is not None and not self._supports_metadata(sid):
                self._deliver(struct.pack(">II", BIN_PREVIEW, 1 if kind == "JPEG" else 2) + data, sid)
            await asyncio.sleep(0)

        async def on_text(text: str) -> None:
            node_bytes = nid.encode()
            self._deliver(struct.pack(">II", BIN_TEXT, len(node_bytes)) + node_bytes + text.encode(), None)

        return en.NodeContext(
            node_id=nid,
            prompt_id=prompt_id,
            prompt=prompt,
            dirs=self.dirs,
            temp_prefix=self._temp_prefix,
            step_delay=lambda: self.step_delay,
            progress=on_progress,
            text=on_text,
            check_interrupt=check_interrupt,
            class_info=class_info,
        )

    # -------------------------------------------------------------------------------------- routes
    def _routes(self) -> list[Route | WebSocketRoute]:
        r = [
            Route("/prompt", _guard(self.get_prompt), methods=["GET"]),
            Route("/prompt", _guard(self.post_prompt), methods=["POST"]),
            Route("/queue", _guard(self.get_queue), methods=["GET"]),
            Route("/queue", _guard(self.post_queue), methods=["POST"]),
            Route("/history", _guard(self.get_history), methods=["GET"]),
            Route("/history", _guard(self.post_history), methods=["POST"]),
            Route("/history/{prompt_id}", _guard(self.get_history_item), methods=["GET"]),
            Route("/interrupt", _guard(self.post_interrupt), methods=["POST"]),
            Route("/view", _guard(self.get_view), methods=["GET"]),
            Route("/upload/image", _guard(self.post_upload_image), methods=["POST"]),
            Route("/object_info", _guard(self.get_object_info), methods=["GET"]),
            Route("/object_info/{node_class}", _guard(self.get_object_info_class), methods=["GET"]),
            Route("/system_stats", _guard(self.get_system_stats), methods=["GET"]),
            Route("/free", _guard(self.post_free), methods=["POST"]),
            Route("/features", _guard(self.get_features), methods=["GET"]),
            Route("/embeddings", _guard(self.get_embeddings), methods=["GET"]),
            Route("/extensions", _guard(self.get_embeddings), methods=["GET"]),
            Route("/models", _guard(self.get_models), methods=["GET"]),
            Route("/models/{folder}", _guard(self.get_models_folder), methods=["GET"]),
            Route("/emulator/config", _guard(self.get_emulator_config), methods=["GET"]),
            Route("/emulator/delays", _guard(self.post_emulator_delays), methods=["POST"]),
            Route("/emulator/extra_output", _guard(self.post_emulator_extra_output), methods=["POST"]),
            Route("/emulator/drop_websockets", _guard(self.post_emulator_drop), methods=["POST"]),
            Route("/emulator/restart", _guard(self.post_emulator_restart), methods=["POST"]),
            Route("/emulator/stop", _guard(self.post_emulator_stop), methods=["POST"]),
            WebSocketRoute("/ws", self.websocket),
        ]
        return r

    async def get_prompt(self, request: Request) -> Response:
        return _json(self._queue_info())

    async def post_prompt(self, request: Request) -> Response:
        data = json.loads(await request.body())
        st = self._state
        if "number" in data:
            number: float = float(data["number"])
        else:
            number = st.number
            if data.get("front"):
                number = -number
            st.number += 1
        if "prompt" not in data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return _json({"error": error, "node_errors": {}}, 400)
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        ok, error, outputs, node_errors = validate_prompt(
            prompt, self._object_info(), self._validators, data.get("partial_execution_targets")
        )
        extra = dict(data.get("extra_data", {}))
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        if not ok:
            return _json({"error": error, "node_errors": node_errors}, 400)
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra.pop(key, None)
        heapq.heappush(st.queue, _Item(number, prompt_id, prompt, extra, outputs))
        self._wakeup.set()
        self._queue_updated()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request: Request) -> Response:
        st = self._state
        running = [st.running.as_list()] if st.running else []
        return _json({"queue_running": running, "queue_pending": [i.as_list() for i in st.queue]})

    async def post_queue(self, request: Request) -> Response:
        data = json.loads(await request.body())
        st = self._state
        if data.get("clear"):
            st.queue.clear()
            self._queue_updated()
        for pid in data.get("delete", []):
            for i, it in enumerate(st.queue):
                if it.prompt_id == pid:
                    st.queue.pop(i)
                    heapq.heapify(st.queue)
                    self._queue_updated()
                    break
        return _empty()

    async def get_history(self, request: Request) -> Response:
        history = self._state.history
        max_items = request.query_params.get("max_items")
        if max_items is None:
            return _json(history)
        n = int(max_items)
        offset = int(request.query_params.get("offset", -1))
        if offset < 0:
            offset = max(0, len(history) - n)
        keys = list(history)[offset : offset + n]
        return _json({k: history[k] for k in keys})

    async def get_history_item(self, request: Request) -> Response:
        pid = request.path_params["prompt_id"]
        item = self._state.history.get(pid)
        return _json({pid: item} if item is not None else {})

    async def post_history(self, request: Request) -> Response:
        data = json.loads(await request.body())
        history = self._state.history
        if data.get("clear"):
            history.clear()
        for pid in data.get("delete", []):
            history.pop(pid, None)
        return _empty()

    async def post_interrupt(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            data = {}
        st = self._state
        target = data.get("prompt_id") if isinstance(data, dict) else None
        if not target or (st.running is not None and st.running.prompt_id == target):
            st.interrupt = True
        return _empty()

    def _dir_for(self, kind: str | None) -> Path | None:
        return {"output": self.dirs.output, "input": self.dirs.input, "temp": self.dirs.temp}.get(kind or "")

    def _rename_outputs(self, ui: dict[str, Any]) -> dict[str, Any]:
        """Apply ``output_name_hook`` to every file a node reports, remembering where each really is."""
        assert self.output_name_hook is not None
        renamed: dict[str, Any] = {}
        for key, items in ui.items():
            if not isinstance(items, list):
                renamed[key] = items
                continue
            renamed[key] = []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    folder = self._dir_for(item.get("type")) or self.dirs.output
                    real = folder / (item.get("subfolder") or "") / item["filename"]
                    item = {**item, "filename": self.output_name_hook(item["filename"])}
                    self._output_aliases[item["filename"]] = real
                renamed[key].append(item)
        return renamed

    def _view_path(self, q: Any) -> tuple[int, str, str]:
        """Resolve /view's filename/subfolder/type like ComfyUI: (status, path, filename)."""
        filename, folder = q["filename"], None
        for tag, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
            if filename.endswith(tag):
                filename, folder = filename[: -len(tag)], self._dir_for(kind)
        if not filename or filename[0] == "/" or ".." in filename:
            return 400, "", ""
        if folder is None:
            folder = self._dir_for(q.get("type", "output"))
        if folder is None:
            return 400, "", ""
        root = os.path.abspath(folder)
        if "subfolder" in q:
            full = os.path.abspath(os.path.join(root, q["subfolder"]))
            if os.path.commonpath((full, root)) != root:
                return 403, "", ""
            root = full
        filename = os.path.basename(filename)
        path = os.path.join(root, filename)
        return (200 if os.path.isfile(path) else 404), path, filename

    async def get_view(self, request: Request) -> Response:
        q = request.query_params
        if "filename" not in q:
            return _empty(404)
        if q["filename"] in self._output_aliases:  # a name output_name_hook made up: serve it as is
            return FileResponse(self._output_aliases[q["filename"]], media_type="image/png")
        status, path, filename = self._view_path(q)
        if status != 200:
            return _empty(status)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        preview = q.get("preview")
        channel = q.get("channel", "rgba")
        if preview or channel in ("rgb", "a"):
            loop = asyncio.get_running_loop()
            body, media = await loop.run_in_executor(None, _convert_view, path, preview, channel)
            return Response(body, media_type=media, headers=headers)
        media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if media in _DOWNLOAD_ONLY:
            media = "application/octet-stream"
        return _FileResponse(path, media_type=media, headers=headers)

    async def post_upload_image(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            return _empty(400)
        kind = str(form.get("type") or "input")
        folder = self._dir_for(kind)
        if folder is None:
            return _empty(400)
        subfolder = str(form.get("subfolder", ""))
        overwrite = form.get("overwrite") in ("true", "1")
        name = _store_upload(folder, subfolder, image.filename, await image.read(), overwrite)
        if name is None:
            return _empty(400)
        self._object_info_bytes = None
        return _json({"name": name, "subfolder": subfolder, "type": kind})

    def _object_info(self) -> dict[str, Any]:
        """The installed node classes: the recording minus ``exclude_classes``."""
        info = base_object_info()
        if not self.exclude_classes:
            return info
        return {k: v for k, v in info.items() if k not in self.exclude_classes}

    def _served_object_info(self) -> dict[str, Any]:
        info = dict(self._object_info())
        files = en.input_files(self.dirs.input)
        for cls in ("LoadImage", "LoadImageMask"):
            if cls in info:
                c = copy.deepcopy(info[cls])
                c["input"]["required"]["image"][0] = files
                info[cls] = c
        return info

    async def get_object_info(self, request: Request) -> Response:
        files = tuple(en.input_files(self.dirs.input))
        if self._object_info_bytes is None or self._object_info_bytes[0] != files:
            body = json.dumps(self._served_object_info()).encode()
            self._object_info_bytes = (files, body)
        return Response(self._object_info_bytes[1], media_type="application/json; charset=utf-8")

    async def get_object_info_class(self, request: Request) -> Response:
        name = request.path_params["node_class"]
        if name not in self._object_info():
            return _json({})
        return _json({name: self._served_object_info()[name]})

    async def get_system_stats(self, request: Request) -> Response:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = free = 0
        return _json(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.13.0+cpu",
                    "embedded_python": False,
                    "argv": [
                        "main.py",
                        "--cpu",
                        "--listen",
                        self.host,
                        "--port",
                        str(self.port),
                        "--disable-auto-launch",
                    ],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def post_free(self, request: Request) -> Response:
        body = await request.body()
        data = json.loads(body) if body else {}
        if data.get("free_memory"):
            self._state.cache.clear()
        return _empty()

    async def get_features(self, request: Request) -> Response:
        return _json(SERVER_FEATURES)

    async def get_embeddings(self, request: Request) -> Response:
        return _json([])

    _MODEL_FOLDERS = {
        "checkpoints": "ckpt_name",
        "loras": "lora_name",
        "vae": "vae_name",
        "diffusion_models": "unet_name",
        "text_encoders": "clip_name",
        "controlnet": "control_net_name",
        "upscale_models": "model_name",
        "embeddings": "",
        "hypernetworks": "hypernetwork_name",
    }

    async def get_models(self, request: Request) -> Response:
        return _json(list(self._MODEL_FOLDERS))

    async def get_models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in self._MODEL_FOLDERS:
            return _empty(404)
        return _json(en.FAKE_MODELS.get(self._MODEL_FOLDERS[folder], []))

    # -------------------------------------------------------------------------------------- control
    def _config(self) -> dict[str, Any]:
        return {
            "step_delay": self.step_delay,
            "node_delay": self.node_delay,
            "port": self.port,
            "base_dir": str(self.base_dir),
            "history_delay": self.history_delay,
            "extra_output": self.extra_output,
        }

    async def get_emulator_config(self, request: Request) -> Response:
        return _json(self._config())

    async def post_emulator_delays(self, request: Request) -> Response:
        body = await request.body()
        data = json.loads(body) if body else {}
        self.set_delays(data.get("step_delay"), data.get("node_delay"))
        if "history_delay" in data:
            self.history_delay = float(data["history_delay"])
        return _json(self._config())

    async def post_emulator_extra_output(self, request: Request) -> Response:
        """``{"filename", "size"}``: write ``size`` bytes to output/filename (kept if already that size) and
        list it among the outputs of every output node executed from now on; ``{}`` turns it off.

        For benchmarks of big outputs without spending minutes in Pillow on a huge image.
        """
        body = await request.body()
        data = json.loads(body) if body else {}
        filename = data.get("filename")
        if not filename:
            self.extra_output = None
            return _json(self._config())
        filename = os.path.basename(str(filename))
        size = int(data.get("size", 0))
        path = self.dirs.output / filename
        if not path.is_file() or path.stat().st_size != size:
            await asyncio.get_running_loop().run_in_executor(None, _write_random_file, path, size)
        self.extra_output = {"filename": filename, "subfolder": "", "type": "output"}
        return _json(self._config())

    async def post_emulator_drop(self, request: Request) -> Response:
        """Answer first, then drop: the caller's own HTTP connection is not a WebSocket anyway."""
        return Response(
            json.dumps({"dropped": len(self._clients)}),
            media_type="application/json; charset=utf-8",
            background=BackgroundTask(self.drop_websockets),
        )

    def _later(self, coro_fn: Callable[[], Awaitable[None]], delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(coro_fn()))

    async def post_emulator_restart(self, request: Request) -> Response:
        """Restart after the response is out, so the caller gets its 200 first."""
        self._later(self.restart, 0.02)
        return _json({"restarting": True})

    async def post_emulator_stop(self, request: Request) -> Response:
        """Go down; with ``restart_after`` seconds come back by itself (an outage for benchmarks)."""
        body = await request.body()
        data = json.loads(body) if body else {}
        restart_after = data.get("restart_after")
        self._later(self.stop, 0.02)
        if restart_after is not None:
            self._later(self.start, 0.02 + float(restart_after))
        return _json({"stopping": True, "restart_after": restart_after})

    # -------------------------------------------------------------------------------------- websocket
    async def websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId", "") or uuid.uuid4().hex
        client = _Client(sid, ws)
        self._clients[sid] = client  # a reconnect with the same clientId takes over the stream
        st = self._state
        client.push(json.dumps({"type": "status", "data": {"status": self._queue_info(), "sid": sid}}))
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


def _format_input(value: Any) -> Any:
    """ComfyUI's format_value: scalars and None stay as they are, everything else becomes ``str()``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return en.format_value(value)


class _FileResponse(FileResponse):
    """1 MB reads (Starlette's 64 kB cost a thread hop each); ComfyUI's aiohttp uses sendfile, faster still."""

    chunk_size = 1024 * 1024


_DOWNLOAD_ONLY = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


def _store_upload(folder: Path, subfolder: str, filename: str, content: bytes, overwrite: bool) -> str | None:
    """ComfyUI's image_upload: same content keeps its name, a clash becomes ``name (1).ext``."""
    root = os.path.abspath(folder)
    full_folder = os.path.join(root, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(full_folder, filename))
    if os.path.commonpath((root, filepath)) != root:
        return None
    os.makedirs(full_folder, exist_ok=True)
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        digest = hashlib.sha256(content).hexdigest()
        i = 1
        while os.path.exists(filepath):
            if _sha256_file(filepath) == digest:
                return filename
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(full_folder, filename)
            i += 1
    Path(filepath).write_bytes(content)
    return filename


def _write_random_file(path: Path, size: int) -> None:
    """``size`` incompressible bytes, written in 4 MB blocks."""
    block = 4 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(block, left)))
            left -= block


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert_view(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view's ``preview=webp;90`` and ``channel=rgb|a`` conversions."""
    with Image.open(path) as im:
        buf = io.BytesIO()
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = fmt if fmt in ("webp", "jpeg") else "webp"
            img = im.convert("RGB")
            img.save(buf, format=fmt.upper(), quality=int(quality or 90))
            return buf.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            im.convert("RGB").save(buf, format="PNG")
        else:
            alpha = im.getchannel("A") if "A" in im.getbands() else Image.new("L", im.size, 255)
            Image.merge("RGBA", (Image.new("L", im.size, 0),) * 3 + (alpha,)).save(buf, format="PNG")
        return buf.getvalue(), "image/png"


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
    """Serve until Ctrl-C: ``python comfyui_emulator.py --port 8188 --step-delay 0.05``."""
    p = argparse.ArgumentParser(description="Model-free ComfyUI 0.3.64 emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--node-delay", type=float, default=0.0)
    p.add_argument("--base-dir", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        emu = ComfyUIEmulator(
            args.host,
            args.port,
            step_delay=args.step_delay,
            node_delay=args.node_delay,
            base_dir=args.base_dir,
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
