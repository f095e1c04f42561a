"""Image parameters given as content instead of a name already on the backend.

An image input (LoadImage ``image``, or any input whose detected role is ``input_image``) may receive
a file part (multipart submit), a base64 string or data URL, or an http(s) URL that ComfyGate
downloads through ``url_guard``. The bytes must decode as an image; they are then uploaded to every
reachable backend (``push_upload``) under a content-addressed name, which replaces the value. Plain
names pass through unchanged, so existing clients keep working.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

import httpx

from core.errors import InvalidRequest, ParameterError, PayloadTooLarge
from gateway.services import Services
from gateway.uploads import check_image, push_upload
from security.url_guard import guarded_send, parse_http_url
from workflow.params import detect_params, parse_param_key

MAX_REDIRECTS = 3
# Bare base64 is told apart from a filename by its alphabet and length (a tiny PNG is ~90 characters).
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")
_MIN_BARE_BASE64 = 64
_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}


class RemoteInputError(InvalidRequest):
    status_code = 422
    code = "remote_input_failed"


@dataclass(slots=True)
class InlineFile:
    """A file part of a multipart submit, standing in for a parameter value until it is uploaded."""

    data: bytes
    filename: str = ""


def _image_keys(api: dict[str, Any], object_info: dict[str, Any]) -> set[str]:
    return {
        p["key"]
        for p in detect_params(api, object_info)
        if p["role"] == "input_image" or (p["class_type"] == "LoadImage" and p["input"] == "image")
    }


def _kind(value: Any) -> str | None:
    """What an image value is: "file", "data_url", "url", "base64", or None for a plain name."""
    if isinstance(value, InlineFile):
        return "file"
    if not isinstance(value, str):
        return None
    head = value[:16].lower()
    if head.startswith("data:"):
        return "data_url"
    if head.startswith(("http://", "https://")):
        return "url"
    if len(value) >= _MIN_BARE_BASE64 and _BASE64.match(value[:4096]) and "." not in value:
        return "base64"
    return None


def _b64(text: str, key: str, limit: int) -> bytes:
    if len(text) * 3 // 4 > limit + 3:
        raise PayloadTooLarge(f"parameter {key!r}: the image is larger than the limit of {limit} bytes", limit=limit)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteInputError(f"parameter {key!r}: not valid base64 ({exc})", param=key) from exc


def decode_data_url(value: str, key: str, limit: int) -> bytes:
    header, comma, payload = value.partition(",")
    if not comma or ";base64" not in header.lower():
        raise RemoteInputError(f"parameter {key!r}: only base64 data URLs (data:image/png;base64,...) are accepted")
    return _b64(payload, key, limit)


async def download(services: Services, url: str, key: str) -> bytes:
    """GET ``url`` with the size and time limits, checking every redirect hop against the guard."""
    settings = services.settings
    limit = settings.max_upload_bytes
    current = parse_http_url(url, f"parameter {key!r}")
    try:
        async with asyncio.timeout(settings.remote_input_timeout):
            for _ in range(MAX_REDIRECTS + 1):
                response = await guarded_send(
                    services.http,
                    "GET",
                    current,
                    allow_private=settings.allow_private_urls,
                    timeout=settings.remote_input_timeout,
                    what=f"parameter {key!r}",
                )
                try:
                    if response.is_redirect and "location" in response.headers:
                        current = parse_http_url(str(current.join(response.headers["location"])))
                        continue
                    if response.status_code != 200:
                        raise RemoteInputError(
                            f"parameter {key!r}: {url} answered HTTP {response.status_code}", param=key
                        )
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > limit:
                        raise PayloadTooLarge(f"parameter {key!r}: {url} is larger than {limit} bytes", limit=limit)
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise PayloadTooLarge(f"parameter {key!r}: {url} is larger than {limit} bytes", limit=limit)
                        chunks.append(chunk)
                    return b"".join(chunks)
                finally:
                    await response.aclose()
            raise RemoteInputError(f"parameter {key!r}: {url} redirects more than {MAX_REDIRECTS} times", param=key)
    except TimeoutError as exc:
        raise RemoteInputError(
            f"parameter {key!r}: downloading {url} took longer than {settings.remote_input_timeout:g} s", param=key
        ) from exc
    except httpx.HTTPError as exc:
        raise RemoteInputError(f"parameter {key!r}: could not download {url} ({exc})", param=key) from exc


def _image_name(data: bytes, key: str) -> str:
    """Check the bytes decode; name them by content so a repeat upload is the same file (and cached)."""
    from PIL import Image

    check_image(data, key)
    with Image.open(io.BytesIO(data)) as img:
        ext = _EXTENSIONS.get(img.format or "", ".png")
    return f"cg_{hashlib.sha256(data).hexdigest()[:20]}{ext}"


async def resolve_image_params(
    services: Services, api: dict[str, Any], object_info: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """``params`` with every image given as content replaced by the name it was uploaded under."""
    pending = {key: kind for key, value in params.items() if (kind := _kind(value)) is not None}
    if not pending:
        return params
    image_keys = _image_keys(api, object_info)

    def for_image_input(key: Any) -> bool:
        parsed = parse_param_key(key) if isinstance(key, str) else None
        return parsed is not None and f"{parsed[0]}.{parsed[1]}" in image_keys

    problems = [
        {"key": key, "message": f"file part {key!r} does not name an image input"}
        for key, kind in pending.items()
        if kind == "file" and not for_image_input(key)
    ]
    if problems:
        raise ParameterError(problems)
    resolved = dict(params)
    for key, kind in pending.items():
        if for_image_input(key):  # else a text that merely looks like a URL or base64, for a non-image input
            resolved[key] = await _upload_image(services, key, kind, params[key])
    return resolved


async def _image_bytes(services: Services, key: str, kind: str, value: Any) -> bytes:
    """The image a parameter carries (file part, data: URL, base64 or a URL to fetch), within the size limit."""
    limit = services.settings.max_upload_bytes
    if kind == "file":
        data = value.data
    elif kind == "data_url":
        data = decode_data_url(value, key, limit)
    elif kind == "base64":
        data = _b64(value, key, limit)
    else:
        data = await download(services, value, key)
    if not data:
        raise RemoteInputError(f"parameter {key!r}: the image is empty", param=key)
    if len(data) > limit:
        raise PayloadTooLarge(f"parameter {key!r}: the image is larger than {limit} bytes", limit=limit)
    return data


async def _upload_image(services: Services, key: str, kind: str, value: Any) -> str:
    """Keep the image in uploads/ and push it to the backends: the name a LoadImage input takes."""
    data = await _image_bytes(services, key, kind, value)
    name = await asyncio.to_thread(_image_name, data, key)
    local = services.settings.uploads_dir / name
    if not local.exists():
        await asyncio.to_thread(local.write_bytes, data)
    uploaded = await push_upload(services, name, data, overwrite=True, local=name)
    sub = uploaded.get("subfolder") or ""
    return f"{sub}/{uploaded['name']}" if sub else uploaded["name"]
