"""What the emulated ComfyUI says about itself: the node classes (``/object_info``), ``/system_stats``,
``/features``, ``/models`` and the empty ``/embeddings``/``/extensions`` lists."""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator import nodes as en
from emulator.media_nodes import newer_object_info
from emulator.web import empty_response, guard, json_response

if TYPE_CHECKING:
    from emulator.server import ComfyUIEmulator

OBJECT_INFO_PATH = Path(__file__).resolve().parent / "data" / "object_info.json"
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
NEWER_VERSION = "0.36.0"
AUDIO_EXTENSIONS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a"})
MODEL_FOLDERS = {
    "checkpoints": "ckpt_name",
    "loras": "lora_name",
    "vae": "vae_name",
    "diffusion_models": "unet_name",
    "text_encoders": "clip_name",
    "controlnet": "control_net_name",
    "upscale_models": "model_name",
    "embeddings": "",
    "hypernetworks": "hypernetwork_name",
}


@functools.lru_cache(maxsize=1)
def base_object_info() -> dict[str, Any]:
    """The recorded object_info with fake model names filled in, so SD workflows validate."""
    info = json.loads(OBJECT_INFO_PATH.read_text(encoding="utf-8"))
    for cls in info.values():
        cls.setdefault("description", "")  # stripped from the recording; ComfyUI always sends the key
        for category in ("required", "optional"):
            for name, spec in cls.get("input", {}).get(category, {}).items():
                fakes = en.FAKE_MODELS.get(name)
                if fakes and spec and isinstance(spec[0], list):
                    spec[0] = list(dict.fromkeys(fakes + [v for v in spec[0] if v not in fakes]))
    return info


def custom_validators(dirs: en.Dirs) -> dict[str, dict[str, Callable[[Any], bool | str]]]:
    """LoadImage's VALIDATE_INPUTS: the file must exist (annotated names allowed)."""

    def image_exists(name: Any) -> bool | str:
        if isinstance(name, str) and en.annotated_path(name, dirs.input, dirs).is_file():
            return True
        return f"Invalid image file: {name}"

    return {"LoadImage": {"image": image_exists}, "LoadImageMask": {"image": image_exists}}


class EmulatorInfo:
    """The info routes of one emulator; ``object_info()`` is also what prompts are validated against."""

    def __init__(self, emu: ComfyUIEmulator) -> None:
        self.emu = emu
        self._object_info_bytes: tuple[tuple[str, ...], bytes] | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/object_info", guard(self.get_object_info), methods=["GET"]),
            Route("/object_info/{node_class}", guard(self.get_object_info_class), methods=["GET"]),
            Route("/system_stats", guard(self.get_system_stats), methods=["GET"]),
            Route("/features", guard(self.get_features), methods=["GET"]),
            Route("/embeddings", guard(self.get_embeddings), methods=["GET"]),
            Route("/extensions", guard(self.get_embeddings), methods=["GET"]),
            Route("/models", guard(self.get_models), methods=["GET"]),
            Route("/models/{folder}", guard(self.get_models_folder), methods=["GET"]),
        ]

    def object_info(self) -> dict[str, Any]:
        """The installed node classes: the recording (+ a newer server's media classes) minus ``exclude_classes``."""
        info = base_object_info()
        if self.emu.newer:
            info = {**info, **newer_object_info(en.input_files(self.emu.dirs.input, AUDIO_EXTENSIONS))}
        if not self.emu.exclude_classes:
            return info
        return {k: v for k, v in info.items() if k not in self.emu.exclude_classes}

    def forget_served_object_info(self) -> None:
        """An upload changed input/: the next /object_info lists the files again."""
        self._object_info_bytes = None

    def _served_object_info(self) -> dict[str, Any]:
        info = dict(self.object_info())
        files = en.input_files(self.emu.dirs.input)
        for cls in ("LoadImage", "LoadImageMask"):
            if cls in info:
                c = copy.deepcopy(info[cls])
                c["input"]["required"]["image"][0] = files
                info[cls] = c
        return info

    async def get_object_info(self, request: Request) -> Response:
        files = tuple(en.input_files(self.emu.dirs.input))
        if self._object_info_bytes is None or self._object_info_bytes[0] != files:
            body = json.dumps(self._served_object_info()).encode()
            self._object_info_bytes = (files, body)
        return Response(self._object_info_bytes[1], media_type="application/json; charset=utf-8")

    async def get_object_info_class(self, request: Request) -> Response:
        name = request.path_params["node_class"]
        if name not in self.object_info():
            return json_response({})
        return json_response({name: self._served_object_info()[name]})

    async def get_system_stats(self, request: Request) -> Response:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = free = 0
        return json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": NEWER_VERSION if self.emu.newer else "0.3.64",
                    "required_frontend_version": "1.58.1" if self.emu.newer else "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.13.0+cpu",
                    "embedded_python": False,
                    "argv": [
                        "main.py",
                        "--cpu",
                        "--listen",
                        self.emu.host,
                        "--port",
                        str(self.emu.port),
                        "--disable-auto-launch",
                    ],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def get_features(self, request: Request) -> Response:
        return json_response(SERVER_FEATURES)

    async def get_embeddings(self, request: Request) -> Response:
        return json_response([])

    async def get_models(self, request: Request) -> Response:
        return json_response(list(MODEL_FOLDERS))

    async def get_models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in MODEL_FOLDERS:
            return empty_response(404)
        return json_response(en.FAKE_MODELS.get(MODEL_FOLDERS[folder], []))
