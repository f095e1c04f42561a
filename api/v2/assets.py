"""Assets: upload, mint from a hash, probe by hash, read, download (HTTP Range), delete.

An upload is streamed to disk and hashed (blake3) on the asset store's thread, never on the event loop,
and refused past ``max_upload_bytes``; identical bytes are stored once. A job's outputs are assets too
(read-only here: deleting one is ``409 asset_in_use``, since the task still lists the file).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from api.dependencies import get_services
from api.v2 import asset_sharing
from api.v2.asset_store import AssetRecord, HashMismatch, TooLarge, valid_hash
from api.v2.bodies import caller_scope, idempotency_key, read_object
from api.v2.content import content_response
from api.v2.errors import V2Error
from api.v2.models import FROM_HASH_BODY, IDEMPOTENCY_HEADER, UPLOAD_BODY, Asset, errors
from api.v2.state import V2State, get_state
from api.v2.view import iso
from gateway.integration import public_base
from gateway.services import Services

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])
URL_TTL = 3600.0
MAX_TAGS = 32
MAX_FIELD = 1024


def asset_json(record: AssetRecord, base: str, *, created_new: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "hash": record.hash,
        "size_bytes": record.size,
        "content_type": record.content_type,
        "file_path": record.file_path,
        "created_at": iso(record.created_at),
        "url": f"{base}/api/v2/assets/{record.id}/content",
        "url_expires_at": iso(time.time() + URL_TTL),
        "expires_at": iso(record.expires_at) if record.expires_at is not None else None,
        "tags": record.tags,
    }
    if record.job_id is not None:
        body["job_id"] = record.job_id
    if created_new is not None:
        body["created_new"] = created_new
    return body


def read_upload_form(form: FormData, limit: int) -> tuple[UploadFile, dict[str, Any], str | None]:
    """(the file part, the record's content_type/file_path/tags, the declared hash) of an upload."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise V2Error(422, "invalid_request", "missing the 'file' part (the bytes)")
    if upload.size is not None and upload.size > limit:
        raise V2Error(413, "payload_too_large", f"the file is larger than the limit of {limit} bytes")
    file_path = form.get("file_path")
    if not isinstance(file_path, str) or not file_path.strip():
        raise V2Error(422, "invalid_request", "missing 'file_path' (the file name, e.g. photo.png)")
    content_type = form.get("content_type")
    if not isinstance(content_type, str) or not content_type.strip():
        content_type = upload.content_type or "application/octet-stream"
    expected = form.get("expected_hash")
    if expected is not None and (not isinstance(expected, str) or not valid_hash(expected.lower())):
        raise V2Error(422, "invalid_request", "'expected_hash' must be blake3:<64 hex digits>")
    tags = [t for t in form.getlist("tags") if isinstance(t, str)]
    if len(tags) > MAX_TAGS:
        raise V2Error(422, "invalid_request", f"at most {MAX_TAGS} tags")
    meta = {"content_type": content_type.strip(), "file_path": file_path.strip(), "tags": tags}
    return upload, meta, expected


def _tags(raw: Any) -> list[str]:
    if raw is None:
        return []
    if (
        not isinstance(raw, list)
        or not all(isinstance(t, str) and len(t) <= MAX_FIELD for t in raw)
        or len(raw) > MAX_TAGS
    ):
        raise V2Error(422, "invalid_request", f"'tags' must be a list of at most {MAX_TAGS} strings")
    return list(raw)


async def keep_upload(
    state: V2State, upload: UploadFile, limit: int, expected: str | None, meta: dict[str, Any]
) -> tuple[AssetRecord, bool]:
    """Store the bytes and mint the record (in cluster mode for every replica): (the record, new bytes?)."""
    try:
        record, new_blob = await state.store.run(state.store.upload, upload.file, limit, expected, meta)
    except HashMismatch as exc:
        raise V2Error(409, "hash_mismatch", str(exc), retry_after=None) from exc
    except TooLarge as exc:
        raise V2Error(413, "payload_too_large", str(exc)) from exc
    return record, await asset_sharing.publish(state, record, new_blob)


@router.post(
    "/assets",
    status_code=201,
    summary="Upload an asset (multipart: file, content_type, file_path)",
    responses={
        201: {"model": Asset, "description": "new bytes stored"},
        200: {"model": Asset, "description": "the same bytes were stored already: a new record over them"},
        **errors(400, 401, 409, 413, 422),
    },
    openapi_extra={"requestBody": UPLOAD_BODY, "parameters": [IDEMPOTENCY_HEADER]},
)
async def upload_asset(
    request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    key = idempotency_key(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise V2Error(
            422, "invalid_request", "send multipart/form-data with a 'file' part, 'content_type' and 'file_path'"
        )
    limit = services.settings.max_upload_bytes
    try:
        form = await request.form(max_files=1, max_fields=64, max_part_size=MAX_FIELD)
    except MultiPartException as exc:
        raise V2Error(422, "invalid_request", f"malformed multipart body: {exc.message}") from exc
    try:
        upload, meta, expected = read_upload_form(form, limit)
        scope = caller_scope(request)
        if key is not None and not await state.keys.take(scope, f"asset:{key}", "uploading"):
            raise V2Error(
                422, "idempotency_key_reuse", "this Idempotency-Key was used for an upload before; keys are single-use"
            )
        try:
            await upload.seek(0)
            record, new_blob = await keep_upload(state, upload, limit, expected, meta)
        except V2Error:
            if key is not None:
                await state.keys.give_back(scope, f"asset:{key}")
            raise
    finally:
        await form.close()
    if key is not None:
        state.keys.settle(scope, f"asset:{key}", record.id)
    body = asset_json(record, public_base(services, request), created_new=new_blob)
    return JSONResponse(body, status_code=201 if new_blob else 200)


@router.post(
    "/assets/from-hash",
    status_code=201,
    summary="Mint an asset over bytes ComfyGate already has",
    responses={
        201: {"model": Asset, "description": "a new record over the stored bytes"},
        200: {"model": Asset, "description": "the same record existed (same bytes and file_path)"},
        **errors(400, 401, 404, 422),
    },
    openapi_extra={"requestBody": FROM_HASH_BODY},
)
async def asset_from_hash(
    request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    body = await read_object(request)
    hash_ = body.get("hash")
    if not isinstance(hash_, str) or not valid_hash(hash_.lower()):
        raise V2Error(422, "invalid_request", "'hash' must be blake3:<64 hex digits>")
    file_path = body.get("file_path")
    if file_path is not None and (not isinstance(file_path, str) or len(file_path) > MAX_FIELD):
        raise V2Error(422, "invalid_request", "'file_path' must be a string")
    meta = {"file_path": file_path, "tags": _tags(body.get("tags"))}
    record, minted = await asset_sharing.mint_from_hash(state, hash_.lower(), meta)
    if record is None:
        raise V2Error(404, "blob_not_found", "no stored bytes have this hash: upload them with POST /api/v2/assets")
    return JSONResponse(
        asset_json(record, public_base(services, request), created_new=False), status_code=201 if minted else 200
    )


@router.head(
    "/assets/by-hash/{hash}",
    summary="Whether ComfyGate has bytes with this hash (200 or 404)",
    responses={200: {"description": "stored"}, 404: {"description": "not stored"}},
)
async def asset_by_hash(hash: str, state: V2State = Depends(get_state)) -> Response:
    found = valid_hash(hash.lower()) and await asset_sharing.has_blob(state, hash.lower())
    return Response(status_code=200 if found else 404)


async def record_or_404(state: V2State, asset_id: str) -> AssetRecord:
    record = state.recent_outputs.get(asset_id) or await asset_sharing.find(state, asset_id)
    if record is None:
        raise V2Error(404, "not_found", f"no asset {asset_id!r}")
    return record


@router.get(
    "/assets/{asset_id}",
    summary="An asset's metadata and a fresh content URL",
    responses={200: {"model": Asset}, **errors(401, 404)},
)
async def get_asset(
    asset_id: str, request: Request, services: Services = Depends(get_services), state: V2State = Depends(get_state)
) -> JSONResponse:
    record = await record_or_404(state, asset_id)
    return JSONResponse(asset_json(record, public_base(services, request)))


@router.get(
    "/assets/{asset_id}/content",
    summary="An asset's bytes (HTTP Range: 206, 416)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the requested range", "content": {"application/octet-stream": {}}},
        416: {"description": "range not satisfiable"},
        **errors(401, 404),
    },
)
async def get_asset_content(asset_id: str, request: Request, state: V2State = Depends(get_state)) -> Response:
    record = await record_or_404(state, asset_id)
    if record.kind != "upload":  # an output: its file may still be being written behind
        await state.services.manager.outputs.fetcher.settled(record.location.rpartition("/")[2])
    await asset_sharing.ensure_blob(state, record)  # (cluster mode: an asset of another replica)
    try:
        return await content_response(state.store.file_of(record), record.content_type, request.headers.get("range"))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise V2Error(404, "not_found", f"the bytes of asset {asset_id!r} are no longer on disk") from exc


@router.delete(
    "/assets/{asset_id}",
    status_code=204,
    summary="Delete an asset record (its bytes go with the last one)",
    responses={204: {"description": "deleted"}, **errors(401, 404, 409)},
)
async def delete_asset(asset_id: str, state: V2State = Depends(get_state)) -> Response:
    record = await record_or_404(state, asset_id)
    if record.kind != "upload":
        raise V2Error(409, "asset_in_use", "this asset is a job's output; it goes when ComfyGate forgets the job")
    if not await asset_sharing.delete(state, record):
        raise V2Error(404, "not_found", f"no asset {asset_id!r}")
    return Response(status_code=204)
