"""Input files: checked to be real images, read within limits, pushed to every reachable backend."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

from starlette.datastructures import UploadFile  # FastAPI's UploadFile and a parsed form's parts both are

from core.errors import ComfyUINotFound, InvalidRequest, NotFound, PayloadTooLarge, ServiceBusy
from core.media_types import content_type
from gateway.services import Services
from security.safe_paths import check_filename


def check_image(data: bytes, name: str, max_pixels: int = 89_478_485) -> None:
    """The upload must really decode as an image, and not be a decompression bomb (413)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            pixels = img.width * img.height
            if pixels > max_pixels:
                raise PayloadTooLarge(
                    f"{name!r} has {pixels} pixels, more than the limit of {max_pixels}", limit=max_pixels
                )
            img.verify()  # structure and checksums
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # and the pixels themselves (bounded by the size check above)
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{name!r} decodes to too many pixels ({exc})", limit=max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InvalidRequest(
            f"{name!r} is not an image ComfyUI can read: its format is not recognised (send PNG, JPEG, WebP, GIF, "
            "BMP or TIFF)"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidRequest(f"{name!r} is not an image ComfyUI can read: {_reason(exc)}") from exc


_OBJECT_REPR = re.compile(r"<[^<>]* (?:object )?at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """Pillow's complaint without its internals (object reprs like ``<_io.BytesIO object at 0x…>``)."""
    text = _OBJECT_REPR.sub("the data", str(exc)).strip() or type(exc).__name__
    return f"it is damaged or truncated ({text})"


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(1024 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"upload is larger than the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def push_upload(
    services: Services, name: str, data: bytes, *, subfolder: str = "", overwrite: bool = False, local: str = ""
) -> dict[str, Any]:
    """Send one input file to every reachable backend, so any of them can run the task that uses it."""
    backends = [b for b in services.manager.comfyui_backends() if b.healthy]
    if not backends:
        raise ServiceBusy("no ComfyUI backend is reachable to receive the upload", retry_after=5)
    answers = await asyncio.gather(
        *(b.client.upload_image(name, data, subfolder=subfolder, overwrite=overwrite) for b in backends),
        return_exceptions=True,
    )
    ok = [(b, a) for b, a in zip(backends, answers, strict=True) if isinstance(a, dict)]
    for backend, _ in ok:
        backend.invalidate_object_info()  # its LoadImage choices now include the new file
    if not ok:
        first = answers[0]
        raise first if isinstance(first, BaseException) else ServiceBusy("upload failed")
    answer = ok[0][1]
    return {
        "name": answer.get("name", name),
        "subfolder": answer.get("subfolder", subfolder),
        "type": answer.get("type", "input"),
        "local_filename": local,
        "size": len(data),
        "backends": [b.name for b, _ in ok],
    }


PREVIEWABLE = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"})


def split_input_name(name: str) -> tuple[str, str]:
    """``"sub/dir/file.png"`` (a LoadImage value) → (subfolder, filename); a 400 for anything path-like."""
    subfolder, _, filename = name.rpartition("/")
    check_filename(filename, "input image")
    for part in subfolder.split("/") if subfolder else []:
        check_filename(part, "input subfolder")
    return subfolder, filename


async def fetch_input_image(services: Services, name: str) -> tuple[bytes, str]:
    """An input image as a backend holds it (bytes, content type), for the debugger's preview.

    Only image types are served (never active content), at most ``max_upload_bytes``; the first
    reachable backend that has the file answers (uploads go to every backend).
    """
    subfolder, filename = split_input_name(name)
    kind = content_type(filename)
    if kind not in PREVIEWABLE:
        raise InvalidRequest(f"{filename!r} is not an image that can be previewed ({kind})")
    backends = [b for b in services.manager.comfyui_backends() if b.healthy]
    if not backends:
        raise ServiceBusy("no ComfyUI backend is reachable to read the input image from", retry_after=5)
    limit = services.settings.max_upload_bytes
    for backend in backends:
        try:
            async with backend.client.view(filename, subfolder, "input") as response:
                data = bytearray()
                async for chunk in response.aiter_raw(1024 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise PayloadTooLarge(f"input image {name!r} is larger than {limit} bytes", limit=limit)
            return bytes(data), kind
        except ComfyUINotFound:
            continue
    raise NotFound(f"no backend has an input image named {name!r}; upload it first")
