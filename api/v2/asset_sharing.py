"""Where the v2 routes look an asset up: this replica's asset store, or in cluster mode every replica's.

In cluster mode (with an object store) assets are shared (``cluster.assets``): Redis says whether an upload
exists, so a delete on any replica is a 404 on all, and this replica's blob folder is a cache of the store, filled
on first use (a download, a dispatch to a backend this replica owns); job outputs are in Redis too, their files
fetched like any output's. Without a cluster every function here is the asset store's own answer, unchanged.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.v2.asset_store import HASH_PREFIX, AssetRecord
from api.v2.errors import from_comfygate
from core.errors import ServiceBusy

if TYPE_CHECKING:
    from api.v2.state import V2State
    from cluster.assets import SharedAssets


def shared(state: V2State) -> SharedAssets | None:
    cluster = state.services.extras.get("cluster")
    return getattr(cluster, "assets", None)


@contextmanager
def _answered() -> Iterator[None]:
    """Redis or the store away: the contract's 503 (``upstream_unavailable``, with Retry-After)."""
    try:
        yield
    except ServiceBusy as exc:
        raise from_comfygate(exc) from exc


async def find(state: V2State, asset_id: str) -> AssetRecord | None:
    """The record of ``asset_id`` (not the newest outputs: ``recent_outputs`` has them), None when unknown."""
    local = await state.store.run(state.store.get, asset_id)
    assets = shared(state)
    if assets is None or (local is not None and local.kind != "upload"):
        return local
    with _answered():
        found = await assets.get(asset_id)
    if found is None and local is not None:  # deleted on another replica: this replica's copy goes too
        await state.store.run(state.store.delete, local)
    return AssetRecord(**found) if found is not None else None


async def publish(state: V2State, record: AssetRecord, new_blob: bool) -> bool:
    """Make a fresh upload known to every replica before it is answered: whether its bytes are new."""
    assets = shared(state)
    if assets is None:
        return new_blob
    try:
        return await assets.publish(dataclasses.asdict(record), state.store.file_of(record))
    except ServiceBusy as exc:
        await state.store.run(state.store.delete, record)  # refused: not kept here either
        raise from_comfygate(exc) from exc


async def mint_from_hash(state: V2State, hash_: str, meta: dict[str, Any]) -> tuple[AssetRecord | None, bool]:
    assets = shared(state)
    if assets is None:
        return await state.store.run(state.store.mint_from_hash, hash_, meta)
    with _answered():
        over = [AssetRecord(**r) for r in await assets.over(hash_[len(HASH_PREFIX) :])]
        same = next((r for r in over if r.file_path == meta.get("file_path")), None)
        if same is not None or not over:
            return same, False
        like = over[0]
        record = AssetRecord(
            str(uuid.uuid4()), "upload", hash_, like.size, like.content_type, location=like.location, **meta
        )
        try:
            await assets.publish(dataclasses.asdict(record), None)
        except FileNotFoundError:  # the last record over the bytes was deleted meanwhile, and the bytes with it
            return None, False
    return record, True


async def has_blob(state: V2State, hash_: str) -> bool:
    assets = shared(state)
    if assets is None:
        return await state.store.run(state.store.has_blob, hash_)
    with _answered():
        return bool(await assets.over(hash_[len(HASH_PREFIX) :]))


async def delete(state: V2State, record: AssetRecord) -> bool:
    """Delete an upload (everywhere in cluster mode); False when another request deleted it first."""
    assets = shared(state)
    existed = True
    if assets is not None:
        with _answered():
            existed = await assets.remove(dataclasses.asdict(record))
    await state.store.run(state.store.delete, record)
    return existed


async def ensure_blob(state: V2State, record: AssetRecord) -> None:
    """An asset's bytes on this replica's disk, fetched from the object store when another replica has them."""
    if shared(state) is not None:
        with _answered():
            await fetch_input(state, record.kind, record.location, state.store.file_of(record))


async def fetch_input(state: V2State, kind: str, location: str, path: Path) -> None:
    """An asset's file into ``path`` when another replica has it: from the store (an output: as any output is).
    (Also the dispatch hook's: there a ``ServiceBusy`` is ComfyGate's own error, not a route's answer.)"""
    assets = shared(state)
    if assets is None or await state.store.run(path.is_file):
        return
    if kind == "upload":
        await assets.fetch(location, path)
    else:
        await state.services.local_outputs([{"filename": path.name, "type": location.partition("/")[0]}])


def share_outputs(state: V2State, records: list[AssetRecord]) -> None:
    assets = shared(state)
    if assets is not None:
        assets.share_outputs([dataclasses.asdict(r) for r in records])
