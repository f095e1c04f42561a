"""An emulated ViewComfy central API (the current one) on loopback, for the ViewComfy backend's tests.

It follows ``/work/shared/viewcomfy-protocol.md`` (second half) and nothing more: a real python-socketio
server at ``/socket.io/`` (websocket transport, namespace ``/``, credentials in the connect ``auth``), and
the HTTP routes the published client calls, with the exact answer shapes it depends on:

* ``POST /api/workflow/infer`` form -> 201 ``{"data": {prompt_id, message, workflow}}``; events to ``sid``
* ``GET /api/workflow/infer/?prompt_ids=..`` -> 200 list of camelCase records (trailing slash only)
* ``POST /api/workflow/infer/cancel`` JSON -> 201
* ``GET /files/<prompt_id>/<name>`` -> the output bytes (what ``filepath`` links point to)

What a run does is chosen by the deployment named in ``view_comfy_api_url`` (its last path segment):
``ok`` (logs with steps, executed, result), ``fail`` (logs, then an error event; polling says "error"),
``slow`` (steps until canceled), ``drop`` (the server disconnects the socket after the first log line and
the run still finishes: only polling sees the end), anything else is ``ok``. ``refuse_sockets=True``
refuses every socket.io connect (a client must then poll). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0004850180848a9c8c210000000049454e44ae426082"
)


@dataclass
class Run:
    prompt_id: str
    deployment: str
    sid: str | None
    params: dict[str, Any]
    workflow: dict[str, Any] | None
    status: str = "running"
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    canceled: asyncio.Event = field(default_factory=asyncio.Event)


class CentralAPI:
    """Start with ``with CentralAPI() as api:``; ``api.url`` is the ``API_URL`` to give a client."""

    def __init__(
        self,
        client_id: str = "central-id",
        client_secret: str = "central-secret",
        steps: int = 4,
        step_delay: float = 0.05,
        refuse_sockets: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.steps = steps
        self.step_delay = step_delay
        self.refuse_sockets = refuse_sockets
        self._jobs: set[asyncio.Task[None]] = set()
        self.runs: dict[str, Run] = {}
        self.requests: list[dict[str, Any]] = []
        self.socket_auth: list[Any] = []
        self.cancels: list[dict[str, Any]] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[], logger=False, engineio_logger=False)
        self.sio.on("connect", self._connect)
        routes = [
            Route("/api/workflow/infer", self._schedule, methods=["POST"]),
            Route("/api/workflow/infer/", self._results, methods=["GET"]),
            Route("/api/workflow/infer/cancel", self._cancel, methods=["POST"]),
            Route("/files/{prompt_id}/{name}", self._file, methods=["GET"]),
            Mount("/socket.io", socketio.ASGIApp(self.sio, socketio_path="")),
        ]
        self.app = Starlette(routes=routes)
        self.app.router.redirect_slashes = False  # the client does not follow a redirect on results

    # ------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CentralAPI:
        import socket as _socket

        with _socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="central-api")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("central API emulator did not start")
            time.sleep(0.01)
        return self

    def _serve(self) -> None:
        assert self._server is not None
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        assert self._server is not None
        await self._server.serve()

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------------------ helpers
    def _auth_ok(self, given: dict[str, Any] | Any) -> bool:
        return (
            isinstance(given, dict)
            and given.get("client_id") == self.client_id
            and given.get("client_secret") == self.client_secret
        )

    def _refuse(self) -> JSONResponse:
        return JSONResponse({"error": "unauthorized", "message": "wrong client_id / client_secret"}, 401)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        self.socket_auth.append(auth)
        if self.refuse_sockets or not self._auth_ok(auth):
            raise socketio.exceptions.ConnectionRefusedError("wrong client_id / client_secret")

    def record_of(self, run: Run, base: str) -> dict[str, Any]:
        return {
            "promptId": run.prompt_id,
            "status": run.status,
            "completed": run.status in ("success", "error", "canceled"),
            "executionTimeSeconds": round((run.finished_at or time.time()) - run.created_at, 3),
            "prompt": run.workflow or {},
            "outputs": [
                {
                    "filename": o["filename"],
                    "contentType": o["content_type"],
                    "size": o["size"],
                    "filepath": o["filepath"],
                }
                for o in run.outputs
            ],
            "errorData": {"message": run.error} if run.error else None,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.created_at)),
            "workflow": {"deployment": run.deployment},
            "clientId": self.client_id,
            "user": {"id": "emulated"},
        }

    # ------------------------------------------------------------------------------ routes
    async def _schedule(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        form = await request.form()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        files = {k: v.filename for k, v in form.multi_items() if not isinstance(v, str)}
        self.requests.append(
            {
                "path": "schedule",
                "headers": headers,
                "fields": fields,
                "files": files,
                "media_type": headers.get("content-type", "").split(";")[0],
            }
        )
        if not self._auth_ok(headers):
            return self._refuse()
        prompt_id = fields.get("prompt_id") or str(uuid.uuid4())
        deployment = (fields.get("view_comfy_api_url") or "").rstrip("/").rsplit("/", 1)[-1]
        raw_workflow = fields.get("workflow_api")
        run = Run(
            prompt_id=prompt_id,
            deployment=deployment,
            sid=fields.get("sid") or None,
            params=json.loads(fields.get("params") or "{}"),
            workflow=json.loads(raw_workflow) if raw_workflow else None,
        )
        self.runs[prompt_id] = run
        base = str(request.base_url).rstrip("/")
        job = asyncio.create_task(self._execute(run, base))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return JSONResponse(
            {"data": {"prompt_id": prompt_id, "message": "Prompt scheduled", "workflow": {"deployment": deployment}}},
            status_code=201,
        )

    async def _results(self, request: Request) -> Response:
        self.requests.append({"path": "results", "headers": dict(request.headers), "query": str(request.url.query)})
        if not self._auth_ok({k.lower(): v for k, v in request.headers.items()}):
            return self._refuse()
        base = str(request.base_url).rstrip("/")
        ids = request.query_params.getlist("prompt_ids")
        return JSONResponse([self.record_of(self.runs[i], base) for i in ids if i in self.runs])

    async def _cancel(self, request: Request) -> Response:
        body = await request.json()
        self.cancels.append({"headers": dict(request.headers), "body": body})
        if not self._auth_ok({k.lower(): v for k, v in request.headers.items()}):
            return self._refuse()
        run = self.runs.get(body.get("prompt_id", ""))
        if run is None:
            return JSONResponse({"error": "not_found"}, 404)
        run.canceled.set()
        return JSONResponse({"prompt_id": run.prompt_id, "message": "cancel requested"}, status_code=201)

    async def _file(self, request: Request) -> Response:
        run = self.runs.get(request.path_params["prompt_id"])
        name = request.path_params["name"]
        if run is None or not any(o["filename"] == name for o in run.outputs):
            return JSONResponse({"error": "not_found"}, 404)
        return Response(PNG_BYTES, media_type="image/png")

    # ------------------------------------------------------------------------------ a run
    async def _emit(self, run: Run, event: str, data: Any) -> None:
        if run.sid is not None:
            await self.sio.emit(event, data, to=run.sid)

    async def _execute(self, run: Run, base: str) -> None:
        kind = run.deployment
        await asyncio.sleep(self.step_delay)
        await self._emit(run, "infer_log_message", {"prompt_id": run.prompt_id, "data": "got prompt"})
        if kind == "drop" and run.sid is not None:
            await self.sio.disconnect(run.sid)
        steps = 10**9 if kind == "slow" else self.steps
        for step in range(1, steps + 1):
            if run.canceled.is_set():
                run.status, run.finished_at = "canceled", time.time()
                await self._emit(run, "infer_canceled_message", {"prompt_id": run.prompt_id, "data": "canceled"})
                return
            await asyncio.sleep(self.step_delay)
            await self._emit(
                run, "infer_log_message", {"prompt_id": run.prompt_id, "data": f"KSampler: {step}/{steps} steps"}
            )
            if kind == "fail" and step == 2:
                run.status, run.finished_at = "error", time.time()
                run.error = "KSampler (node 3): CUDA out of memory"
                await self._emit(run, "infer_error_message", {"prompt_id": run.prompt_id, "data": run.error})
                return
        await self._emit(run, "infer_executed_message", {"prompt_id": run.prompt_id, "data": {"node": "9"}})
        name = "ComfyUI_00001_.png"
        run.outputs = [
            {
                "filename": name,
                "content_type": "image/png",
                "size": len(PNG_BYTES),
                "filepath": f"{base}/files/{run.prompt_id}/{name}",
            }
        ]
        run.status, run.finished_at = "success", time.time()
        await self._emit(run, "infer_result_message", self.result_of(run))

    def result_of(self, run: Run) -> dict[str, Any]:
        return {
            "prompt_id": run.prompt_id,
            "status": run.status,
            "completed": True,
            "execution_time_seconds": round((run.finished_at or time.time()) - run.created_at, 3),
            "prompt": run.workflow or {},
            "outputs": list(run.outputs),
        }
