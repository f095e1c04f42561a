"""Comfy API v2 assets in cluster mode: every replica knows every upload (and job output), whichever took it.

An upload's record is in Redis (``asset:<id>``, JSON) and its bytes once per content hash in the object store
(``assets/<hex>``); the blob's references (``asset_refs:<hex>``: the ids of its records) say when the last record
over it goes, and the blob with it, as on a single replica. A record is written only once its bytes are stored,
so a replica that reads it can fetch them. Claiming a reference and deleting a blob are atomic steps in Lua
(``ASSET_CLAIM``, ``ASSET_RELEASE``): a blob being deleted is not claimed until it is gone, then stored again.
Redis or the store unreachable: ``ClusterUnavailable`` (503), nothing half-kept. A job's outputs are assets too:
their records go to Redis for as long as they are kept (their files are in the store already, ``outputs/``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.errors import ClusterUnavailable
from cluster.objects import ObjectStore, StoreUnavailable
from cluster.replies import texts
from cluster.scripts import ASSET_CLAIM, ASSET_RELEASE
from cluster.writer import RedisWriter

log = logging.getLogger("comfygate.cluster")

# An asset record as the v2 API keeps it (``AssetRecord`` as a dict): this module reads its id, location (an
# upload's blob: the hex of its hash), created_at and expires_at, and stores the rest as it is.
Record = dict[str, Any]
BLOBS = "assets/"
CLAIM_WAIT = 10.0  # seconds a new record waits for a deletion of the same bytes to end
DELETING_TTL_MS = 60_000  # a deletion marker left by a replica that died mid-delete lapses after this


def _unavailable(exc: Exception) -> ClusterUnavailable:
    what = "the object store" if isinstance(exc, StoreUnavailable) else "Redis"
    return ClusterUnavailable(f"{what} is unreachable, so assets cannot be shared now ({exc}); retry", retry_after=2)


class SharedAssets:
    def __init__(self, redis: Redis, key: Callable[..., str], objects: ObjectStore, writer: RedisWriter) -> None:
        self.redis = redis
        self.key = key
        self.objects = objects
        self.writer = writer
        self.on_gone: Callable[[str], None] | None = None  # a blob was deleted everywhere: drop this replica's copy

    def share_outputs(self, records: list[Record]) -> None:
        """A finished task's outputs, readable on every replica until they expire. Written behind, through the
        writer that also carries the task's final update: a replica that has heard the task end finds them."""
        now = time.time()
        items = [
            (self.key("asset", r["id"]), json.dumps(r), max(int((r.get("expires_at") or now) - now), 60))
            for r in records
        ]

        def op(pipe: Any) -> None:
            for key, value, ttl in items:
                pipe.set(key, value, ex=ttl)

        if items:
            self.writer.submit(op, count=len(items))

    def _keys(self, record: Record) -> tuple[str, str, str]:
        """(record, the blob's references, the blob's "being deleted" marker)."""
        blob = record["location"]
        return self.key("asset", record["id"]), self.key("asset_refs", blob), self.key("asset_deleting", blob)

    # --- reads -------------------------------------------------------------------------------------
    async def get(self, asset_id: str) -> Record | None:
        try:
            raw = await self.redis.get(self.key("asset", asset_id))
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return json.loads(raw) if raw is not None else None

    async def over(self, hex_digest: str) -> list[Record]:
        """Every stored upload record over these bytes, oldest first."""
        try:
            ids = texts(await self.redis.hkeys(self.key("asset_refs", hex_digest)))
            raws = await self.redis.mget([self.key("asset", i) for i in ids]) if ids else []
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return sorted((json.loads(raw) for raw in raws if raw is not None), key=lambda r: float(r["created_at"]))

    async def fetch(self, hex_digest: str, path: Path) -> bool:
        """The blob into ``path`` (this replica's cache of it); False when the store does not have it."""
        try:
            return await self.objects.get_file(BLOBS + hex_digest, path)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc

    def gone(self, hex_digest: str) -> None:
        """Another replica (or this one) deleted a blob: its copies on this replica's disk go too."""
        if self.on_gone is not None and len(hex_digest) == 64 and hex_digest.isalnum():
            self.on_gone(hex_digest)

    # --- writes ------------------------------------------------------------------------------------
    async def publish(self, record: Record, path: Path | None) -> bool:
        """A new upload record, known to every replica on return: whether its bytes were stored now (from ``path``;
        None: only over bytes the store has, else FileNotFoundError)."""
        keys = self._keys(record)
        await self._claim(keys, record["id"])
        try:
            stored = False
            if not await self.objects.exists(BLOBS + record["location"]):
                if path is None:
                    raise FileNotFoundError(record["location"])
                await self.objects.put_file(BLOBS + record["location"], path)
                stored = True
            await self.redis.set(keys[0], json.dumps(record))
        except BaseException as exc:
            await self._unclaim(keys, record)
            if isinstance(exc, StoreUnavailable | RedisError | OSError) and not isinstance(exc, FileNotFoundError):
                raise _unavailable(exc) from exc
            raise
        return stored

    async def remove(self, record: Record) -> bool:
        """Forget the record everywhere, and the blob with its last record; False when it was gone already."""
        try:
            return await self._release(self._keys(record), record)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def _release(self, keys: tuple[str, str, str], record: Record) -> bool:
        """Uncount the record (and delete it); its blob goes with the last one: whether the record existed."""
        existed, last = await self.redis.eval(ASSET_RELEASE, 3, *keys, record["id"], DELETING_TTL_MS)
        if last:
            try:
                await self.objects.delete(BLOBS + record["location"])
            except StoreUnavailable as exc:  # the bytes stay, unused: a new record over them finds them
                log.warning("could not delete the bytes of asset %s (%s): %s", record["id"], record["location"], exc)
            await self.redis.publish(self.key("asset_gone"), record["location"])  # to every replica's cache
            await self.redis.delete(keys[2])
        return bool(existed)

    async def _claim(self, keys: tuple[str, str, str], asset_id: str) -> None:
        deadline = time.monotonic() + CLAIM_WAIT
        try:
            while not await self.redis.eval(ASSET_CLAIM, 2, keys[1], keys[2], asset_id):
                if time.monotonic() > deadline:
                    raise ClusterUnavailable("these bytes are being deleted by another replica; retry", retry_after=1)
                await asyncio.sleep(0.05)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def _unclaim(self, keys: tuple[str, str, str], record: Record) -> None:
        """Undo a claim whose record was not written (best effort: a stray reference only keeps a blob)."""
        try:
            await self._release(keys, record)
        except (RedisError, OSError) as exc:
            log.warning("could not undo the claim of asset %s on %s: %s", record["id"], record["location"], exc)
