"""Shared v2 assets against a real redis-server and a real object store (a folder, or an S3 endpoint that is down):
a blob stays while a record uses it, a new record waits for a deletion of its bytes to end, and a refused upload
leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from bench.cluster_procs import RedisServer
from bench.procs import free_port
from cluster.assets import SharedAssets
from cluster.errors import ClusterUnavailable
from cluster.objects import ObjectStore
from cluster.writer import RedisWriter

HEX = "ab" * 32


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    server = RedisServer(tmp_path)
    client = Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


def shared(redis: Redis, objects: ObjectStore) -> SharedAssets:
    return SharedAssets(redis, lambda *parts: "t:" + ":".join(parts), objects, RedisWriter(redis))


def record(asset_id: str, created_at: float = 1.0) -> dict:
    """As ``AssetRecord`` would be, as a dict (the cluster's side only reads id, location and created_at)."""
    return {"id": asset_id, "kind": "upload", "location": HEX, "file_path": "in.png", "created_at": created_at}


async def test_the_blob_goes_with_the_last_record_over_it(redis: Redis, tmp_path: Path) -> None:
    objects = ObjectStore(f"file://{tmp_path / 'store'}")
    assets = shared(redis, objects)
    (tmp_path / "blob").write_bytes(b"abc")
    assert await assets.publish(record("b", 2.0), tmp_path / "blob") is True
    assert await assets.publish(record("a"), tmp_path / "blob") is False  # stored once
    assert await assets.publish(record("c", 3.0), None) is False  # over the stored bytes
    assert [r["id"] for r in await assets.over(HEX)] == ["a", "b", "c"]  # oldest first
    for asset_id in ("a", "b"):
        assert await assets.remove(record(asset_id)) is True
        assert await objects.exists(f"assets/{HEX}") and await assets.over(HEX)
    assert await assets.remove(record("a")) is False  # gone already
    assert await assets.remove(record("c")) is True
    assert not await objects.exists(f"assets/{HEX}") and not await assets.over(HEX)
    assert await redis.keys("t:*") == []
    with pytest.raises(FileNotFoundError):  # no bytes to mint a record over
        await assets.publish(record("d"), None)
    assert await redis.keys("t:*") == []


async def test_a_new_record_waits_while_its_bytes_are_being_deleted(redis: Redis, tmp_path: Path) -> None:
    assets = shared(redis, ObjectStore(f"file://{tmp_path / 'store'}"))
    (tmp_path / "blob").write_bytes(b"abc")
    await redis.set(f"t:asset_deleting:{HEX}", "1")  # another replica is deleting these bytes
    publishing = asyncio.create_task(assets.publish(record("a"), tmp_path / "blob"))
    await asyncio.sleep(0.3)
    assert not publishing.done()
    await redis.delete(f"t:asset_deleting:{HEX}")  # ... and is done: the bytes are stored again
    assert await asyncio.wait_for(publishing, 2) is True
    assert await assets.get("a") == record("a")


async def test_an_upload_the_store_refuses_is_a_503_and_leaves_nothing(redis: Redis, tmp_path: Path) -> None:
    settings = SimpleNamespace(
        storage_region="us-east-1",
        storage_endpoint=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        storage_key_id=SecretStr("key"),
        storage_secret=SecretStr("secret"),
    )
    assets = shared(redis, ObjectStore("s3://bucket/prefix", settings))  # type: ignore[arg-type]
    (tmp_path / "blob").write_bytes(b"abc")
    with pytest.raises(ClusterUnavailable, match="object store is unreachable") as refused:
        await assets.publish(record("a"), tmp_path / "blob")
    assert refused.value.status_code == 503 and refused.value.retry_after
    assert await redis.keys("t:*") == [] and await assets.get("a") is None
