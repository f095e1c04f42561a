"""Routes about ComfyGate and its backends: health, system, nodes, queue, interrupt, files."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response

from api.dependencies import get_services
from api.models import HealthOut, QueueOut, TaskList, TaskOut, UploadOut
from api.output_lane import cached_headers
from backends.base import Backend
from backends.comfyui import ComfyUIBackend
from core.errors import ComfyGateError, InvalidRequest, NotFound
from core.media_types import content_type
from core.task import TaskStatus
from gateway.services import Services
from gateway.uploads import check_image, fetch_input_image, push_upload, read_limited
from security.safe_paths import (
    is_active_type,
    output_headers,
    resolve_inside,
    sanitize_filename,
    write_new_file,
)
from tasks.output_cache import validators

router = APIRouter(prefix="/api", tags=["core"])

VERSION = "0.1.0"


INLINE_TYPES = ("image/", "video/", "audio/", "text/plain")  # shown in the page; anything else is a download


class BigChunkFileResponse(FileResponse):
    """Starlette reads a file 64 kB at a time, one thread hop each: 1 MB chunks serve a big output 2-4× faster."""

    chunk_size = 1024 * 1024


@router.get(
    "/health",
    response_model=HealthOut,
    summary="Is ComfyGate up, and which backends are reachable",
    responses={503: {"model": HealthOut, "description": "cluster mode: Redis or the object store is unreachable"}},
)
async def health(services: Services = Depends(get_services)) -> Any:
    backends = [b.describe() for b in services.manager.backends.values()]
    up = sum(1 for b in backends if b["healthy"])
    counts = services.store.counts()
    status = "ok" if up == len(backends) else ("degraded" if up else "down")
    body: dict[str, Any] = {
        "status": status,
        "backends": backends,
        "totals": pool_totals(services, backends),
        "tasks": counts,
        "listeners": services.hub.listeners,
    }
    cluster = services.extras.get("cluster")
    if cluster is not None:
        body["cluster"] = cluster.describe()
        if not cluster.healthy:  # a load balancer drains this replica until Redis and the store are back
            body["status"] = "unavailable"
            return JSONResponse(jsonable_encoder(body), status_code=503, headers={"Retry-After": "2"})
    return body


def pool_totals(services: Services, backends: list[dict[str, Any]]) -> dict[str, int]:
    """The pool at a glance: how many backends serve, and how much work is where."""
    return {
        "backends": len(backends),
        "healthy": sum(1 for b in backends if b.get("healthy")),
        "inflight": sum(int(b.get("inflight") or 0) for b in backends),
        "queue_remaining": sum(int(b.get("queue_remaining") or 0) for b in backends),
        "pending": len(services.manager.pending),
        "max_pending": services.settings.max_pending_tasks,
    }


@router.get("/system/info", summary="ComfyGate's version and every backend's /system_stats")
async def system_info(services: Services = Depends(get_services)) -> dict[str, Any]:
    backends = list(services.manager.backends.values())
    stats = await asyncio.gather(*(probe(b) for b in backends))
    settings = services.settings
    described = [
        {**b.describe(), "system_stats": s, "reachable": s is not None} for b, s in zip(backends, stats, strict=True)
    ]
    return {
        "comfygate": {
            "version": VERSION,
            "task_timeout": settings.task_timeout,
            "history_limit": settings.history_limit,
            "max_upload_bytes": settings.max_upload_bytes,
            "auth_enabled": bool(settings.api_keys),
            "task_store": "sqlite" if settings.database_path is not None else "memory",
            "max_pending_tasks": settings.max_pending_tasks,
            "max_backend_queue": settings.max_backend_queue,
        },
        "backends": described,
        "totals": {**pool_totals(services, described), "reachable": sum(1 for b in described if b["reachable"])},
    }


async def probe(backend: Backend) -> dict[str, Any] | None:
    """A backend's /system_stats (ViewComfy: what it can say), or None when it does not answer."""
    return await backend.probe()


@router.get("/nodes", summary="The node classes a backend knows (its /object_info)")
async def nodes(
    services: Services = Depends(get_services),
    backend: str | None = Query(None, description="backend name; default: every backend's classes merged"),
    class_type: str | None = Query(None, alias="class", description="one class only"),
) -> dict[str, Any]:
    info = await services.object_info(backend)
    if class_type is not None:
        if class_type not in info:
            raise NotFound(f"no node class {class_type!r} on this backend")
        return {class_type: info[class_type]}
    return info


@router.get("/queue", response_model=QueueOut, summary="Every backend's queue, and the totals")
async def queue(services: Services = Depends(get_services)) -> dict[str, Any]:
    backends = services.manager.comfyui_backends()  # ViewComfy has no queue to show

    async def one(backend: ComfyUIBackend) -> dict[str, Any]:
        try:
            q = await backend.client.get_queue()
        except ComfyGateError as exc:
            return {"reachable": False, "error": exc.message, "running": [], "pending": []}
        return {"reachable": True, **summarise_queue(services, q)}

    results = await asyncio.gather(*(one(b) for b in backends))
    per = {b.name: r for b, r in zip(backends, results, strict=True)}
    held = [{"task_id": t.task_id, "pinned_backend": t.pinned_backend} for t in services.manager.pending.values()]
    return {
        "total_running": sum(len(r["running"]) for r in results),
        "total_pending": sum(len(r["pending"]) for r in results),
        "total_held": len(held),
        "backends": per,
        "comfygate": {"pending": held, "max_pending": services.settings.max_pending_tasks},
    }


def summarise_queue(services: Services, q: dict[str, Any]) -> dict[str, Any]:
    def item(entry: list[Any]) -> dict[str, Any]:
        task = services.store.by_prompt(entry[1])
        return {"number": entry[0], "prompt_id": entry[1], "task_id": task.task_id if task else None}

    return {
        "running": [item(e) for e in q.get("queue_running", [])],
        "pending": [item(e) for e in q.get("queue_pending", [])],
    }


@router.post("/queue/clear", summary="Remove every pending (not running) prompt from every backend")
async def clear_queue(services: Services = Depends(get_services)) -> dict[str, Any]:
    cleared: list[str] = []
    errors: dict[str, str] = {}
    for backend in services.manager.comfyui_backends():
        try:
            q = await backend.client.get_queue()
            ids = [e[1] for e in q.get("queue_pending", [])]
            await backend.client.clear_queue()
        except ComfyGateError as exc:
            errors[backend.name] = exc.message
            continue
        for prompt_id in ids:
            task = services.store.by_prompt(prompt_id)
            if task is not None:
                services.manager.finish_interrupted(task, "the queue was cleared")
                cleared.append(task.task_id)
    return {"cleared": cleared, "errors": errors}


@router.post("/interrupt/{prompt_id}", response_model=TaskOut, summary="Stop one task, running or queued")
async def interrupt(prompt_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    task = services.store.find(prompt_id)
    if task is None:
        raise NotFound(f"no task with prompt id or task id {prompt_id!r}")
    await services.manager.interrupt(task)
    return task.to_dict()


@router.get("/history", response_model=TaskList, summary="Finished tasks, newest first")
async def history(
    services: Services = Depends(get_services),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    finals = {s for s in TaskStatus if s.final}
    total, tasks = services.store.query(finals, offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "tasks": [t.to_dict() for t in tasks]}


def _regular_file(path: Path) -> os.stat_result | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


@router.get("/image/{filename}", summary="An output file (or a temp preview with type=temp)")
async def image(
    filename: str,
    services: Services = Depends(get_services),
    type: str = Query("output", pattern="^(output|temp)$"),
    range_: str | None = Header(None, alias="range", include_in_schema=False),
    if_none_match: str | None = Header(None, include_in_schema=False),
) -> Response:
    if type == "output" and range_ is None:
        cached = services.manager.outputs.cache.get(filename)
        if cached is not None:  # just finished: from memory (api/output_lane.py answers most of these first)
            if if_none_match is not None and cached.etag in if_none_match:
                headers = {"etag": cached.etag, "last-modified": cached.last_modified, "accept-ranges": "bytes"}
                return Response(status_code=304, headers=headers)
            headers = cached_headers(filename, cached)
            return Response(cached.data, media_type=headers.pop("content-type"), headers=headers)
    folder = services.settings.outputs_dir if type == "output" else services.manager.temp_dir
    path = resolve_inside(folder, filename, "output file")
    if type == "output":  # a Range request for a file still being written behind
        await services.manager.outputs.fetcher.settled(path.name)
    info = _regular_file(path)
    if info is None:
        cluster = services.extras.get("cluster")
        # Stored by the replica that downloaded it, or (not stored yet) fetched here from its backend.
        found = await cluster.serve_file(type, path.name) if cluster is not None else None
        if isinstance(found, Response):
            return found
        info = _regular_file(path) if found is not None else None
        if info is None:
            raise NotFound(f"no output file named {filename!r}")
    etag, _ = validators(info.st_mtime, info.st_size)
    if range_ is None and if_none_match is not None and etag in if_none_match:
        return Response(status_code=304, headers={"etag": etag, "accept-ranges": "bytes"})
    media = content_type(path.name)
    # The stat is passed on: FileResponse would otherwise take it again in a thread.
    return BigChunkFileResponse(
        path,
        media_type=media,
        headers=output_headers(media),
        filename=path.name,  # Content-Disposition, with the RFC 5987 form for any name
        content_disposition_type="attachment" if is_active_type(media) else "inline",
        stat_result=info,
    )


@router.get("/input/{name:path}", summary="An input image a backend holds (a LoadImage value), for previews")
async def input_image(name: str, services: Services = Depends(get_services)) -> Response:
    data, kind = await fetch_input_image(services, name)
    return Response(data, media_type=kind, headers={**output_headers(kind), "Cache-Control": "no-store"})


@router.post("/upload/image", response_model=UploadOut, summary="Upload an input image to every reachable backend")
async def upload_image(
    services: Services = Depends(get_services),
    image: UploadFile = File(..., description="the image file"),
    overwrite: bool = Form(False),
    subfolder: str = Form(""),
) -> dict[str, Any]:
    data = await read_limited(image, services.settings.max_upload_bytes)
    if not data:
        raise InvalidRequest("the uploaded file is empty")
    name = sanitize_filename(image.filename or "upload.png", "upload.png")
    await asyncio.to_thread(check_image, data, name, services.settings.max_image_pixels)
    if subfolder:
        sanitize = sanitize_filename(subfolder)
        if sanitize != subfolder:
            raise InvalidRequest(f"subfolder {subfolder!r} must be a plain folder name")
    folder = services.settings.uploads_dir
    local = await asyncio.to_thread(write_new_file, folder, name, data)  # never another upload's file
    cluster = services.extras.get("cluster")
    if cluster is not None:  # shared with every replica
        await cluster.keep_input(local.name, await asyncio.to_thread(local.read_bytes))
    return await push_upload(services, name, data, subfolder=subfolder, overwrite=overwrite, local=local.name)
