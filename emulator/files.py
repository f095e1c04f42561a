"""The emulator's files: the input/output/temp folders, ``/view`` and ``/upload/image`` as ComfyUI serves them,
and the renamed or padded outputs that tests and benchmarks ask for."""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from emulator import nodes as en
from emulator.costs import Costs
from emulator.web import empty_response, json_response

_DOWNLOAD_ONLY = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


class _FileResponse(FileResponse):
    """1 MB reads (Starlette's 64 kB cost a thread hop each); ComfyUI's aiohttp uses sendfile, faster still."""

    chunk_size = 1024 * 1024


class EmulatorFiles:
    """The three folders under the base dir and the routes that read and write them."""

    def __init__(self, dirs: en.Dirs, costs: Callable[[], Costs] = Costs) -> None:
        self.dirs = dirs
        self._costs = costs  # the emulator's current cost model (it can be switched at run time)
        self.views = 0  # /view requests answered with a file (tests tell downloads from other ways)
        self._output_aliases: dict[str, Path] = {}  # names output_name_hook made up → the real files

    def folder(self, kind: str | None) -> Path | None:
        return {"output": self.dirs.output, "input": self.dirs.input, "temp": self.dirs.temp}.get(kind or "")

    def rename_outputs(self, ui: dict[str, Any], hook: Callable[[str], str]) -> dict[str, Any]:
        """Apply ``hook`` to every file a node reports, remembering where each really is."""
        renamed: dict[str, Any] = {}
        for key, items in ui.items():
            if not isinstance(items, list):
                renamed[key] = items
                continue
            renamed[key] = []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    folder = self.folder(item.get("type")) or self.dirs.output
                    real = folder / (item.get("subfolder") or "") / item["filename"]
                    item = {**item, "filename": hook(item["filename"])}
                    self._output_aliases[item["filename"]] = real
                renamed[key].append(item)
        return renamed

    def _view_path(self, q: Any) -> tuple[int, str, str]:
        """Resolve /view's filename/subfolder/type like ComfyUI: (status, path, filename)."""
        filename, folder = q["filename"], None
        for tag, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
            if filename.endswith(tag):
                filename, folder = filename[: -len(tag)], self.folder(kind)
        if not filename or filename[0] == "/" or ".." in filename:
            return 400, "", ""
        if folder is None:
            folder = self.folder(q.get("type", "output"))
        if folder is None:
            return 400, "", ""
        root = os.path.abspath(folder)
        if "subfolder" in q:
            full = os.path.abspath(os.path.join(root, q["subfolder"]))
            if os.path.commonpath((full, root)) != root:
                return 403, "", ""
            root = full
        filename = os.path.basename(filename)
        path = os.path.join(root, filename)
        return (200 if os.path.isfile(path) else 404), path, filename

    async def get_view(self, request: Request) -> Response:
        costs = self._costs()
        await costs.wait_ms(costs.view_ms)  # a real /view: stat and open in aiohttp's executor
        q = request.query_params
        if "filename" not in q:
            return empty_response(404)
        if q["filename"] in self._output_aliases:  # a name output_name_hook made up: serve it as is
            self.views += 1
            return FileResponse(self._output_aliases[q["filename"]], media_type="image/png")
        status, path, filename = self._view_path(q)
        if status != 200:
            return empty_response(status)
        self.views += 1
        headers = {"Content-Disposition": f'filename="{filename}"'}
        preview = q.get("preview")
        channel = q.get("channel", "rgba")
        if preview or channel in ("rgb", "a"):
            loop = asyncio.get_running_loop()
            body, media = await loop.run_in_executor(None, _convert_view, path, preview, channel)
            return Response(body, media_type=media, headers=headers)
        media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if media in _DOWNLOAD_ONLY:
            media = "application/octet-stream"
        return _FileResponse(path, media_type=media, headers=headers)

    async def post_upload_image(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            return empty_response(400)
        kind = str(form.get("type") or "input")
        folder = self.folder(kind)
        if folder is None:
            return empty_response(400)
        subfolder = str(form.get("subfolder", ""))
        overwrite = form.get("overwrite") in ("true", "1")
        name = _store_upload(folder, subfolder, image.filename, await image.read(), overwrite)
        if name is None:
            return empty_response(400)
        return json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def write_output(self, filename: str, size: int) -> dict[str, Any]:
        """``size`` random bytes in output/``filename`` (kept if already that size), as a node would report it."""
        filename = os.path.basename(str(filename))
        path = self.dirs.output / filename
        if not path.is_file() or path.stat().st_size != size:
            await asyncio.get_running_loop().run_in_executor(None, _write_random_file, path, size)
        return {"filename": filename, "subfolder": "", "type": "output"}


def _store_upload(folder: Path, subfolder: str, filename: str, content: bytes, overwrite: bool) -> str | None:
    """ComfyUI's image_upload: same content keeps its name, a clash becomes ``name (1).ext``."""
    root = os.path.abspath(folder)
    full_folder = os.path.join(root, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(full_folder, filename))
    if os.path.commonpath((root, filepath)) != root:
        return None
    os.makedirs(full_folder, exist_ok=True)
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        digest = hashlib.sha256(content).hexdigest()
        i = 1
        while os.path.exists(filepath):
            if _sha256_file(filepath) == digest:
                return filename
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(full_folder, filename)
            i += 1
    Path(filepath).write_bytes(content)
    return filename


def _write_random_file(path: Path, size: int) -> None:
    """``size`` incompressible bytes, written in 4 MB blocks."""
    block = 4 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(block, left)))
            left -= block


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert_view(path: str, preview: str | None, channel: str) -> tuple[bytes, str]:
    """/view's ``preview=webp;90`` and ``channel=rgb|a`` conversions."""
    with Image.open(path) as im:
        buf = io.BytesIO()
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = fmt if fmt in ("webp", "jpeg") else "webp"
            img = im.convert("RGB")
            img.save(buf, format=fmt.upper(), quality=int(quality or 90))
            return buf.getvalue(), f"image/{fmt}"
        if channel == "rgb":
            im.convert("RGB").save(buf, format="PNG")
        else:
            alpha = im.getchannel("A") if "A" in im.getbands() else Image.new("L", im.size, 255)
            Image.merge("RGBA", (Image.new("L", im.size, 0),) * 3 + (alpha,)).save(buf, format="PNG")
        return buf.getvalue(), "image/png"
