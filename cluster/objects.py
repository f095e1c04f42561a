"""Files in object storage (``file://`` folder or ``s3://bucket/prefix``), through obstore.

obstore (Rust's object_store) speaks local folders and every S3-compatible store with one async API,
streams both ways (multipart uploads for big files) and signs URLs, without botocore. Outputs, uploaded
inputs, the v2 API's uploaded assets (one blob per content hash) and the workflow library of every replica live
here in cluster mode, under ``outputs/``, ``inputs/``, ``assets/`` and ``workflows/``.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import LocalStore, S3Store

from config import Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig

CHUNK = 1024 * 1024


class StoreUnavailable(Exception):
    """The object store did not answer (or refused): the caller answers 503."""


class ObjectStore:
    def __init__(self, url: str, settings: Settings | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.signs = parts.scheme == "s3"
        if parts.scheme == "file":
            root = Path(unquote(parts.path))
            root.mkdir(parents=True, exist_ok=True)
            self.store: Any = LocalStore(root, mkdir=True)
            self.probe_store: Any = self.store
        elif parts.scheme == "s3":
            options: dict[str, Any] = {"region": settings.storage_region if settings else "us-east-1"}
            endpoint = settings.storage_endpoint if settings else None
            if endpoint:
                options["endpoint"] = endpoint
            if settings and settings.storage_key_id and settings.storage_secret:
                options["access_key_id"] = settings.storage_key_id.get_secret_value()
                options["secret_access_key"] = settings.storage_secret.get_secret_value()
            prefix = parts.path.strip("/") or None
            allow_http = bool(endpoint and endpoint.startswith("http://"))
            client: ClientConfig = {"allow_http": allow_http, "connect_timeout": "2s", "timeout": "120s"}
            self.store = S3Store(
                parts.netloc,
                prefix=prefix,
                client_options=client,
                retry_config={"max_retries": 3, "retry_timeout": datetime.timedelta(seconds=10)},
                **options,
            )
            # Health probes must answer fast, without retries: a hung store is a down store.
            probe: ClientConfig = {"allow_http": allow_http, "connect_timeout": "1s", "timeout": "2s"}
            self.probe_store = S3Store(
                parts.netloc,
                prefix=prefix,
                client_options=probe,
                retry_config={"max_retries": 0, "retry_timeout": datetime.timedelta(seconds=2)},
                **options,
            )
        else:
            raise ValueError(f"COMFYUI_STORAGE_URL must be file:///folder or s3://bucket/prefix, not {url!r}")

    async def put_file(self, key: str, path: Path) -> None:
        """Stream a local file into the store (multipart above a few MB)."""
        try:
            with path.open("rb") as body:
                await obstore.put_async(self.store, key, body)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"could not store {key}: {exc}") from exc

    async def put_bytes(self, key: str, data: bytes, *, create: bool = False) -> bool:
        """``create``: only if absent (atomic); False when it was there already."""
        try:
            await obstore.put_async(self.store, key, data, mode="create" if create else None)
        except AlreadyExistsError:
            return False
        except Exception as exc:
            raise StoreUnavailable(f"could not store {key}: {exc}") from exc
        return True

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            result = await obstore.get_async(self.store, key)
            return bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreUnavailable(f"could not read {key}: {exc}") from exc

    async def open(self, key: str) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, chunks) of an object, or None when it is not there."""
        try:
            result = await obstore.get_async(self.store, key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreUnavailable(f"could not read {key}: {exc}") from exc

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=CHUNK):
                yield bytes(chunk)

        return int(result.meta["size"]), chunks()

    async def get_file(self, key: str, path: Path) -> bool:
        """Stream an object into a local file (written aside, then renamed); False when it is not there."""
        found = await self.open(key)
        if found is None:
            return False
        _, chunks = found
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")  # (two fetches of one file at once)
        try:
            with partial.open("wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            partial.replace(path)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise StoreUnavailable(f"could not fetch {key}: {exc}") from exc
        return True

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise StoreUnavailable(f"could not reach the store: {exc}") from exc
        return True

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self.store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StoreUnavailable(f"could not delete {key}: {exc}") from exc

    async def list_meta(self, prefix: str) -> list[tuple[str, int, float]]:
        """(key, size, modified as a Unix time) of every object under ``prefix``."""
        found: list[tuple[str, int, float]] = []
        try:
            async for batch in obstore.list(self.store, prefix=prefix):
                for item in batch:
                    modified = item.get("last_modified")
                    found.append((str(item["path"]), int(item["size"]), modified.timestamp() if modified else 0.0))
        except Exception as exc:
            raise StoreUnavailable(f"could not list {prefix}: {exc}") from exc
        return found

    async def sign(self, key: str, seconds: int = 300) -> str | None:
        """A presigned GET URL (S3 only); None for a folder."""
        if not self.signs:
            return None
        return str(await obstore.sign_async(self.store, "GET", key, datetime.timedelta(seconds=seconds)))

    async def ping(self) -> None:
        """Raises StoreUnavailable when the store cannot be reached (a HEAD of a key that need not exist)."""
        try:
            await obstore.head_async(self.probe_store, ".comfygate-ping")
        except FileNotFoundError:
            return
        except Exception as exc:
            raise StoreUnavailable(str(exc)) from exc
