"""Assets over raw HTTP: upload and dedup, HEAD by hash, from-hash, Range downloads, delete, outputs."""

from __future__ import annotations

import os
from typing import Any

import blake3
import pytest
from comfy_sdk import Comfy

from tests.api.v2.conftest import V2, conform_asset, conform_error, png
from tests.protocol import load_workflow


def upload(v2: V2, data: bytes, name: str = "photo.png", **fields: Any) -> Any:
    form = {"content_type": "image/png", "file_path": name, **fields}
    return v2.http.post("/api/v2/assets", data=form, files={"file": (name, data, "image/png")})


def digest(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def test_upload_is_content_addressed_and_deduplicated(v2: V2) -> None:
    data = png((9, 9, 9))
    first = upload(v2, data, expected_hash=digest(data), tags="input")
    assert first.status_code == 201, first.text
    asset = conform_asset(first.json())
    assert asset.hash == digest(data) and asset.size_bytes == len(data) and asset.created_new is True
    assert first.json()["tags"] == ["input"]
    again = upload(v2, data, name="same.png")
    assert again.status_code == 200 and again.json()["created_new"] is False
    assert again.json()["id"] != asset.id and again.json()["hash"] == asset.hash
    blobs = list((v2.gate.settings.uploads_dir / "v2").iterdir())
    assert [b.name for b in blobs] == [digest(data).removeprefix("blake3:")]  # stored once
    fetched = v2.http.get(f"/api/v2/assets/{asset.id}")
    assert conform_asset(fetched.json()).id == asset.id and "created_new" not in fetched.json()


def test_head_by_hash_answers_200_or_404_only(v2: V2) -> None:
    data = png((1, 1, 1))
    assert v2.http.head(f"/api/v2/assets/by-hash/{digest(data)}").status_code == 404
    upload(v2, data)
    assert v2.http.head(f"/api/v2/assets/by-hash/{digest(data)}").status_code == 200
    assert v2.http.head("/api/v2/assets/by-hash/not-a-hash").status_code == 404
    assert v2.http.head("/api/v2/assets/by-hash/blake3:..%2F..%2Fetc").status_code == 404


def test_from_hash_mints_over_known_bytes_only(v2: V2) -> None:
    data = png((2, 2, 2))
    conform_error(v2.http.post("/api/v2/assets/from-hash", json={"hash": digest(data)}), 404, "blob_not_found")
    original = upload(v2, data).json()
    minted = v2.http.post("/api/v2/assets/from-hash", json={"hash": digest(data), "file_path": "other.png"})
    assert minted.status_code == 201 and conform_asset(minted.json()).id != original["id"]
    same = v2.http.post("/api/v2/assets/from-hash", json={"hash": digest(data), "file_path": "photo.png"})
    assert same.status_code == 200 and same.json()["id"] == original["id"]
    conform_error(v2.http.post("/api/v2/assets/from-hash", json={"hash": 5}), 422, "invalid_request")


@pytest.mark.parametrize("big", [False, True], ids=["small-in-memory", "big-streamed"])
def test_content_with_range(v2: V2, big: bool) -> None:
    data = png((3, 4, 5), size=(200, 200)) + (os.urandom(1_500_000) if big else b"")
    asset = upload(v2, data).json()
    whole = v2.http.get(asset["url"])
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "image/png" and whole.headers["accept-ranges"] == "bytes"
    part = v2.http.get(asset["url"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = v2.http.get(asset["url"], headers={"Range": f"bytes={len(data) - 5}-"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    assert v2.http.get(asset["url"], headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416
    last = v2.http.get(asset["url"], headers={"Range": "bytes=-4"})
    assert last.status_code == 206 and last.content == data[-4:]
    with Comfy() as client:  # the SDK's inclusive range download of an output-like asset
        assert client.assets.get(asset["id"]).id == asset["id"]


def test_delete_removes_the_record_and_the_last_reference_removes_the_bytes(v2: V2) -> None:
    data = png((6, 6, 6))
    a = upload(v2, data, name="a.png").json()
    b = upload(v2, data, name="b.png").json()
    blob = v2.gate.settings.uploads_dir / "v2" / a["hash"].removeprefix("blake3:")
    assert v2.http.delete(f"/api/v2/assets/{a['id']}").status_code == 204
    conform_error(v2.http.delete(f"/api/v2/assets/{a['id']}"), 404, "not_found")
    assert blob.is_file() and v2.http.get(b["url"]).content == data  # b still holds the bytes
    with Comfy() as client:
        client.assets.delete(b["id"])
    assert not blob.exists()
    assert v2.http.head(f"/api/v2/assets/by-hash/{a['hash']}").status_code == 404


def test_uploads_are_bounded(v2_factory: Any) -> None:
    v2 = v2_factory(max_upload_bytes=1000)
    conform_error(upload(v2, b"x" * 2000), 413, "payload_too_large")
    conform_error(v2.http.post("/api/v2/assets", data={"file_path": "a"}), 422, "invalid_request")
    conform_error(v2.http.post("/api/v2/assets", json={}), 422, "invalid_request")
    assert not [p for p in (v2.gate.settings.uploads_dir / "v2").iterdir()]  # nothing half-written kept


def test_outputs_are_assets(v2: V2) -> None:
    job = v2.submit(load_workflow("trivial_save.json")).json()
    out = v2.wait(job["id"])["outputs"][0]
    asset = v2.http.get(f"/api/v2/assets/{out['id']}")
    assert asset.status_code == 200, asset.text
    body = conform_asset(asset.json())
    assert body.job_id == job["id"] and body.size_bytes == out["size_bytes"]
    content = v2.http.get(out["url"], headers={"Range": "bytes=0-7"})
    assert content.status_code == 206 and content.content == b"\x89PNG\r\n\x1a\n"
    conform_error(v2.http.delete(f"/api/v2/assets/{out['id']}"), 409, "asset_in_use")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "%2e%2e%2fetc"])
def test_asset_ids_cannot_escape(v2: V2, bad: str) -> None:
    assert v2.http.get(f"/api/v2/assets/{bad}/content").status_code == 404
