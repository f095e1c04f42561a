"""Assets: UUID records over content-addressed blobs (``blake3:<hex>``), durable in SQLite.

Uploaded bytes live once per hash under ``uploads_dir/v2/<hex>``, however many records point at them;
deleting a record removes the blob only when no other record uses it. Job outputs are assets too: their
record (a deterministic id, the task and the file in ``outputs/``) is written when the task finishes, and
their hash is computed then, off the event loop. Every SQLite call and every byte of hashing runs on
one worker thread (``run``), so the event loop never waits on the disk and the connection is never
shared between threads. Idempotency claims are mirrored to the same file, so a restart keeps them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import blake3

T = TypeVar("T")
CHUNK = 1024 * 1024
HASH_PREFIX = "blake3:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- upload | output
    hash TEXT,                     -- blake3:<hex>, NULL until computed (outputs)
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    file_path TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    expires_at REAL,
    job_id TEXT,
    location TEXT NOT NULL         -- upload: blob hex; output: "output/<file>" or "temp/<file>"
);
CREATE INDEX IF NOT EXISTS assets_hash ON assets(hash);
CREATE TABLE IF NOT EXISTS idempotency (scoped TEXT PRIMARY KEY, claimed_at REAL NOT NULL, what TEXT NOT NULL);
"""


class HashMismatch(ValueError):
    """The bytes do not hash to what the client declared."""


class TooLarge(ValueError):
    pass


@dataclass(slots=True)
class AssetRecord:
    id: str
    kind: str
    hash: str | None
    size: int
    content_type: str
    file_path: str | None
    location: str
    created_at: float = field(default_factory=time.time)
    tags: list[str] = field(default_factory=list)
    expires_at: float | None = None
    job_id: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AssetRecord:
        return cls(
            id=row["id"],
            kind=row["kind"],
            hash=row["hash"],
            size=row["size"],
            content_type=row["content_type"],
            file_path=row["file_path"],
            location=row["location"],
            created_at=row["created_at"],
            tags=json.loads(row["tags"] or "[]"),
            expires_at=row["expires_at"],
            job_id=row["job_id"],
        )


def valid_hash(value: str) -> bool:
    hexpart = value[len(HASH_PREFIX) :] if value.startswith(HASH_PREFIX) else ""
    return len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def hash_file(path: Path) -> str:
    digest = blake3.blake3()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return HASH_PREFIX + digest.hexdigest()


class AssetStore:
    """Records and blobs. Sync methods run on the store's thread; call them through ``run``."""

    def __init__(self, db_path: Path | None, blobs_dir: Path, outputs_dir: Path, temp_dir: Path) -> None:
        self.db_path = db_path
        self.blobs_dir = blobs_dir
        self.outputs_dir = outputs_dir
        self.temp_dir = temp_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-v2-assets")
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run on the store's thread without waiting (writes whose result nobody awaits)."""
        self._executor.submit(fn, *args)

    def open(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        target = str(self.db_path) if self.db_path is not None else ":memory:"
        db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        if self.db_path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        for leftover in self.blobs_dir.glob(".upload-*"):  # a crash mid-upload leaves these behind
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "AssetStore.open() first"
        return self._db

    # --- blobs -----------------------------------------------------------------------------------
    def blob_path(self, hex_digest: str) -> Path:
        return self.blobs_dir / hex_digest

    def ingest(self, source: IO[bytes], limit: int, expected: str | None) -> tuple[str, int, bool]:
        """Copy ``source`` into the blob store while hashing it: (hash, size, new blob?).

        Refuses (nothing kept) past ``limit`` bytes or when ``expected`` does not match.
        """
        digest = blake3.blake3()
        tmp = self.blobs_dir / f".upload-{uuid.uuid4().hex}"
        size = 0
        try:
            with tmp.open("wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"the file is larger than the limit of {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            hex_digest = digest.hexdigest()
            computed = HASH_PREFIX + hex_digest
            if expected is not None and expected.lower() != computed:
                raise HashMismatch(f"the bytes hash to {computed}, not to the declared {expected}")
            final = self.blob_path(hex_digest)
            if final.exists():
                return computed, size, False
            os.replace(tmp, final)
            return computed, size, True
        finally:
            tmp.unlink(missing_ok=True)

    def has_blob(self, hash_: str) -> bool:
        if not valid_hash(hash_):
            return False
        return self.blob_path(hash_[len(HASH_PREFIX) :]).is_file()

    def file_of(self, record: AssetRecord) -> Path:
        """Where the record's bytes are on disk (never outside the store's folders)."""
        if record.kind == "upload":
            return self.blob_path(record.location)
        folder, _, name = record.location.partition("/")
        base = self.temp_dir if folder == "temp" else self.outputs_dir
        path = base / name
        if path.parent != base or name in ("", ".", ".."):
            raise ValueError(f"bad output location {record.location!r}")
        return path

    # --- records ---------------------------------------------------------------------------------
    def add(self, record: AssetRecord) -> AssetRecord:
        self.db.execute(
            "INSERT OR REPLACE INTO assets (id, kind, hash, size, content_type, file_path, tags, created_at,"
            " expires_at, job_id, location) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.id,
                record.kind,
                record.hash,
                record.size,
                record.content_type,
                record.file_path,
                json.dumps(record.tags),
                record.created_at,
                record.expires_at,
                record.job_id,
                record.location,
            ),
        )
        return record

    def get(self, asset_id: str) -> AssetRecord | None:
        row = self.db.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
        return AssetRecord.from_row(row) if row is not None else None

    def find_upload(self, hash_: str, file_path: str | None) -> AssetRecord | None:
        """An uploaded record over these bytes with this file_path (from-hash returns it as-is)."""
        row = self.db.execute(
            "SELECT * FROM assets WHERE hash = ? AND kind = 'upload' AND file_path IS ? ORDER BY created_at LIMIT 1",
            (hash_, file_path),
        ).fetchone()
        return AssetRecord.from_row(row) if row is not None else None

    def delete(self, record: AssetRecord) -> None:
        """Remove the record, and its blob when no other record points at it."""
        self.db.execute("DELETE FROM assets WHERE id = ?", (record.id,))
        if record.kind == "upload" and not self._used(record.location):
            self.blob_path(record.location).unlink(missing_ok=True)

    def _used(self, hex_digest: str) -> bool:
        query = "SELECT 1 FROM assets WHERE kind = 'upload' AND location = ? LIMIT 1"
        return self.db.execute(query, (hex_digest,)).fetchone() is not None

    def drop_cached(self, hex_digest: str, older_than: float) -> None:
        """Cluster mode: the bytes were deleted everywhere (their last record went), so this replica's records over
        them (a cache of Redis) and its copy go too; not what is newer than ``older_than`` (a new upload of the same
        bytes just after the delete)."""
        query = "DELETE FROM assets WHERE kind = 'upload' AND location = ? AND created_at < ?"
        self.db.execute(query, (hex_digest, older_than))
        path = self.blob_path(hex_digest)
        try:
            if not self._used(hex_digest) and path.stat().st_mtime < older_than:
                path.unlink()
        except FileNotFoundError:
            pass

    def upload(
        self, source: IO[bytes], limit: int, expected: str | None, meta: dict[str, Any]
    ) -> tuple[AssetRecord, bool]:
        """Bytes in, record minted, in one call on the store's thread (a delete cannot slip in between):
        (the record, whether the bytes were new). ``meta``: content_type, file_path, tags."""
        hash_, size, new_blob = self.ingest(source, limit, expected)
        record = AssetRecord(
            id=str(uuid.uuid4()), kind="upload", hash=hash_, size=size, location=hash_[len(HASH_PREFIX) :], **meta
        )
        return self.add(record), new_blob

    def mint_from_hash(self, hash_: str, meta: dict[str, Any]) -> tuple[AssetRecord | None, bool]:
        """A record over bytes already stored: the same upload record when one has this file_path (False),
        else a new one (True); (None, False) when no bytes have this hash. ``meta``: file_path, tags."""
        existing = self.find_upload(hash_, meta.get("file_path"))
        if existing is not None:
            return existing, False
        if not self.has_blob(hash_):
            return None, False
        like = self.db.execute("SELECT size, content_type FROM assets WHERE hash = ? LIMIT 1", (hash_,)).fetchone()
        location = hash_[len(HASH_PREFIX) :]
        record = AssetRecord(
            id=str(uuid.uuid4()),
            kind="upload",
            hash=hash_,
            size=like["size"] if like else self.blob_path(location).stat().st_size,
            content_type=like["content_type"] if like else "application/octet-stream",
            location=location,
            **meta,
        )
        return self.add(record), True

    def add_outputs(self, records: list[AssetRecord], hashed: bool) -> dict[str, str]:
        """Record a finished task's outputs (``hashed``: with their blake3, computed here): {asset id: hash}."""
        hashes: dict[str, str] = {}
        for record in records:
            if hashed:
                try:
                    record.hash = hash_file(self.file_of(record))
                    hashes[record.id] = record.hash
                except OSError:
                    record.hash = None
            self.add(record)
        return hashes

    # --- idempotency claims ------------------------------------------------------------------------
    def save_claim(self, scoped: str, what: str, claimed_at: float | None) -> None:
        if claimed_at is None:
            self.db.execute("DELETE FROM idempotency WHERE scoped = ?", (scoped,))
        else:
            self.db.execute(
                "INSERT OR REPLACE INTO idempotency (scoped, claimed_at, what) VALUES (?,?,?)",
                (scoped, claimed_at, what),
            )

    def load_claims(self, since: float) -> list[tuple[str, float, str]]:
        self.db.execute("DELETE FROM idempotency WHERE claimed_at < ?", (since,))
        rows = self.db.execute("SELECT scoped, claimed_at, what FROM idempotency ORDER BY claimed_at").fetchall()
        return [(r["scoped"], r["claimed_at"], r["what"]) for r in rows]
