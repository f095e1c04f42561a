"""ComfyGate: the app factory. The lifespan owns every resource and closes each on shutdown.

``python start.py`` is the way to run it; under a uvicorn command of your own, use the factory:
``uvicorn --factory main:create_app`` (importing this module builds no app).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import v2 as api_v2
from api.output_lane import CachedOutputLane
from api.routers import core as routes_core
from api.routers import metrics as routes_metrics
from api.routers import task_events as routes_task_events
from api.routers import tasks as routes_tasks
from api.routers import viewcomfy as routes_viewcomfy
from api.routers import viewcomfy_current as routes_viewcomfy_current
from api.routers import workflows as routes_workflows
from api.routers import ws as routes_ws
from api.submit_lane import SubmitLane
from api.viewcomfy_socketio import ViewComfySocketIO
from backends.comfyui import ComfyUIBackend
from backends.viewcomfy.backend import ViewComfyBackend
from backends.viewcomfy.current_backend import CurrentViewComfyBackend
from cluster.coordinator import Cluster
from cluster.http import ClusterMiddleware
from config import PROJECT_DIR, Settings, get_settings
from core.busy_poll import BusyPoll, ThreadsFirst
from core.errors import ComfyGateError
from core.task import Task
from events.bus import EventBus
from events.hub import EventHub
from gateway import integration
from gateway.links import links_from_settings
from gateway.services import Services
from security.json_safety import scrub
from security.setup import install_security
from tasks.manager import TaskManager
from tasks.memory_store import TaskStore
from tasks.sqlite_store import TaskDatabase
from tasks.store import TaskStore as TaskStoreSeam
from workflow.library import WorkflowLibrary

log = logging.getLogger("comfygate")
STATIC_DIR = PROJECT_DIR / "static"


async def open_database(
    settings: Settings, store: TaskStoreSeam, manager: TaskManager
) -> tuple[TaskDatabase, list[Task]]:
    """The SQLite task store: every stored task loaded (off the event loop), its unfinished ones to recover."""
    assert settings.database_path is not None
    db = TaskDatabase(settings.database_path, settings.history_limit)
    await asyncio.to_thread(db.open)
    recovered: list[Task] = []

    def load() -> None:  # before anything else uses the store: read and compact off the event loop
        for task in db.load():
            store.add(task)
            if not task.status.final:
                recovered.append(task)

    await asyncio.to_thread(load)
    manager.add_observer(db.observe)

    async def load_workflow(task_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(db.load_workflow, task_id)

    manager.workflow_loader = load_workflow
    return db, recovered


def add_backends(settings: Settings, manager: TaskManager, http: httpx.AsyncClient, busy_poll: BusyPoll) -> None:
    """The configured ComfyUI servers (comfyui-1, -2, ...) of a single replica."""
    for index, server in enumerate(settings.servers, start=1):
        manager.add_backend(
            ComfyUIBackend(
                f"comfyui-{index}",
                server,
                http,
                timeout=settings.request_timeout,
                fast_post=settings.fast_prompt_post,
                busy_poll=busy_poll,
                output_dir=settings.output_dir_for(f"comfyui-{index}", server),
                on_event=manager.on_event,
                on_state=manager.on_backend_state,
                on_output=manager.on_output,
                partner_key=settings.partner_key(index - 1),
            )
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.ensure_dirs()
    http = httpx.AsyncClient(
        timeout=settings.request_timeout,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        trust_env=False,  # ComfyUI is reached directly; a proxy from the environment would break loopback
    )
    hub = EventHub(settings.ws_queue_size)
    # One for every backend; ComfyGate's worker threads come first (a job handed to one ends the poll).
    busy_poll = BusyPoll(settings.busy_poll_ms / 1000)
    asyncio.get_running_loop().set_default_executor(ThreadsFirst(busy_poll))
    library = WorkflowLibrary(settings.workflows_dir)
    store: TaskStoreSeam
    bus: EventBus
    db: TaskDatabase | None = None
    recovered: list[Task] = []
    # Cluster mode (COMFYUI_REDIS_URL): tasks, queue and events shared with the other replicas through Redis.
    cluster = Cluster(settings) if settings.redis_url is not None else None
    if cluster is not None:
        await cluster.open()
        store, bus = cluster.store, cluster.make_bus(hub)
        manager = TaskManager(settings, store, bus)
        cluster.add_backends(manager, http, busy_poll)
        library = cluster.shared_library(library)  # saved workflows in the store, for every replica
    else:
        store, bus = TaskStore(settings.history_limit, settings.full_finished_tasks), hub
        manager = TaskManager(settings, store, bus)
        if settings.database_path is not None:
            db, recovered = await open_database(settings, store, manager)
        add_backends(settings, manager, http, busy_poll)
    if settings.viewcomfy_url:
        manager.add_backend(viewcomfy_backend(settings, http))
    services = Services(settings, http, store, bus, manager, library)
    services.extras["task_db"] = db
    services.extras["viewcomfy_socketio"] = app.state.viewcomfy_socketio
    services.extras["output_links"] = links_from_settings(settings)
    app.state.services = services
    integration.install(services)  # SSE log, synchronous waits, webhooks, metrics: all task observers
    await api_v2.start(services)  # Comfy API v2: its asset store, idempotency keys, dispatch hook
    if cluster is not None:
        cluster.install(manager, services.extras)
    await manager.start()
    if cluster is not None:
        await cluster.start()
    if recovered:
        log.info("recovering %d unfinished task(s) from %s", len(recovered), settings.database_path)
        manager.recover(recovered)
    try:
        yield
    finally:
        if cluster is not None:
            await cluster.stop()  # leases first: another replica takes this one's backends at once
        await manager.stop()
        await integration.stop(services)
        await api_v2.stop(services)
        await http.aclose()
        if db is not None:
            await asyncio.to_thread(db.close)


def viewcomfy_backend(settings: Settings, http: httpx.AsyncClient) -> ViewComfyBackend:
    """The ViewComfy backend in the API generation the settings choose (COMFYUI_VIEWCOMFY_API)."""
    assert settings.viewcomfy_url is not None
    if settings.viewcomfy_api == "current":
        return CurrentViewComfyBackend(
            settings.viewcomfy_url,
            http,
            api_url=settings.viewcomfy_api_url,
            outputs_dir=settings.outputs_dir,
            client_id=settings.viewcomfy_client_id,
            client_secret=settings.viewcomfy_client_secret,
            poll_interval=settings.viewcomfy_poll_interval,
            allow_private_urls=settings.allow_private_urls,
        )
    return ViewComfyBackend(
        settings.viewcomfy_url,
        http,
        outputs_dir=settings.outputs_dir,
        client_id=settings.viewcomfy_client_id,
        client_secret=settings.viewcomfy_client_secret,
    )


async def comfygate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ComfyGateError)
    # scrub: an error that echoes what it refused (a NaN, a lone surrogate) must still be a JSON answer
    return JSONResponse(scrub(exc.to_dict()), status_code=exc.status_code, headers=exc.headers())


_HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no route: 404, wrong method: 405, unreadable body: 400) in ErrorBody's shape,
    so every documented error response really fits its schema."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    where = f"{request.method} {request.url.path}"[:200]
    if exc.status_code == 404 and message == "Not Found":  # Starlette's bare phrases say nothing actionable
        message = f"no route {where}; /docs lists them (an id or name in the path may be empty or hold a '/')"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        allowed = (exc.headers or {}).get("allow") or (exc.headers or {}).get("Allow")
        message = f"{where}: method not allowed" + (f"; use {allowed}" if allowed else "")
    return JSONResponse(scrub({"error": code, "message": message}), status_code=exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(scrub({"field": where, "message": err.get("msg"), "type": err.get("type")}))
    if any(p["type"] == "json_invalid" for p in problems):
        return JSONResponse(
            {"error": "invalid_json", "message": "the request body is not valid JSON", "problems": problems},
            status_code=400,
        )
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return JSONResponse(
        {"error": "invalid_request", "message": f"{first['field']}: {first['message']}", "problems": problems},
        status_code=422,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "internal_error", "message": f"ComfyGate hit an unexpected {type(exc).__name__}; see its log"},
        status_code=500,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="ComfyGate",
        version=routes_core.VERSION,
        description="Run ComfyUI workflows as a service: submit, track, stream progress, fetch outputs.",
        lifespan=lifespan,
    )
    app.state.settings = settings or get_settings()
    app.add_middleware(CachedOutputLane)  # innermost: only what every check before it let through
    app.add_middleware(SubmitLane)  # (likewise)
    if app.state.settings.redis_url is not None:
        app.add_middleware(ClusterMiddleware)  # innermost: after the keys and limits, before the routes
    install_security(app, app.state.settings)  # API keys, body limits, CORS: before any router
    app.add_exception_handler(ComfyGateError, comfygate_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.include_router(routes_core.router)
    app.include_router(routes_viewcomfy_current.router)  # before routes_workflows: GET /api/workflow/{name:path}
    app.include_router(routes_tasks.router)
    app.include_router(routes_task_events.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_workflows.router)
    app.include_router(routes_ws.router)
    app.include_router(routes_viewcomfy.router)
    api_v2.install(app)  # its routes, and its error envelope on /api/v2/ (outermost middleware)
    # ViewComfy's current clients: socket.io inside the app, so the middleware stack wraps it as any route.
    app.state.viewcomfy_socketio = ViewComfySocketIO(app.state.settings)
    app.mount("/socket.io", app.state.viewcomfy_socketio.asgi_app(), name="socket.io")
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> Any:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return JSONResponse({"name": "ComfyGate", "docs": "/docs"})

    return app
