"""The asset store on disk: ingest while hashing, dedup, refusal leaves nothing, delete by last reference."""

from __future__ import annotations

import io
from pathlib import Path

import blake3
import pytest

from api.v2.asset_store import AssetRecord, AssetStore, HashMismatch, TooLarge


@pytest.fixture
def store(tmp_path: Path) -> AssetStore:
    s = AssetStore(tmp_path / "v2.sqlite3", tmp_path / "blobs", tmp_path / "out", tmp_path / "out" / "temp")
    s.open()
    yield s
    s.close()


def record(store: AssetStore, data: bytes, name: str) -> AssetRecord:
    hash_, size, _ = store.ingest(io.BytesIO(data), 1 << 20, None)
    return store.add(
        AssetRecord(
            id=name,
            kind="upload",
            hash=hash_,
            size=size,
            content_type="x/y",
            file_path=name,
            location=hash_.removeprefix("blake3:"),
        )
    )


def test_ingest_hashes_and_dedups(store: AssetStore) -> None:
    data = b"hello" * 1000
    hash_, size, new = store.ingest(io.BytesIO(data), 1 << 20, "blake3:" + blake3.blake3(data).hexdigest())
    assert (hash_, size, new) == ("blake3:" + blake3.blake3(data).hexdigest(), len(data), True)
    assert store.ingest(io.BytesIO(data), 1 << 20, None)[2] is False
    assert store.has_blob(hash_) and not store.has_blob("blake3:" + "0" * 64) and not store.has_blob("../x")


def test_refusals_keep_nothing(store: AssetStore) -> None:
    with pytest.raises(HashMismatch):
        store.ingest(io.BytesIO(b"abc"), 100, "blake3:" + "0" * 64)
    with pytest.raises(TooLarge):
        store.ingest(io.BytesIO(b"x" * 200), 100, None)
    assert list(store.blobs_dir.iterdir()) == []


def test_records_survive_a_reopen_and_the_last_delete_removes_the_bytes(store: AssetStore, tmp_path: Path) -> None:
    a = record(store, b"same", "a")
    b = record(store, b"same", "b")
    store.close()
    again = AssetStore(tmp_path / "v2.sqlite3", tmp_path / "blobs", tmp_path / "out", tmp_path / "out" / "temp")
    again.open()
    assert again.get("a") == a
    again.delete(a)
    assert again.file_of(b).read_bytes() == b"same"
    again.delete(b)
    assert not again.file_of(b).exists() and again.get("b") is None
    again.close()


def test_output_locations_stay_in_their_folder(store: AssetStore) -> None:
    bad = AssetRecord(
        id="o", kind="output", hash=None, size=0, content_type="x", file_path=None, location="output/../x"
    )
    with pytest.raises(ValueError):
        store.file_of(bad)
