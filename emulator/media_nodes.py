"""The emulator's nodes for every output kind a newer ComfyUI reports: video, audio, 3D (and their inputs).

Each writes a real, playable file (``emulator.media``) and reports it in the shape ComfyUI uses:
SaveVideo/SaveWEBM under ``images`` with ``animated: [true]`` (no ``videos`` key), VideoHelperSuite's
VHS_VideoCombine under ``gifs`` (with ``format``, ``frame_rate`` and a server-local ``fullpath``),
SaveAudio/PreviewAudio under ``audio``, SaveGLB under ``3d`` and Preview3D as a bare file name under
``result``. The emulator cannot encode H.264 or FLAC, so videos are VP8 WebM and audio is WAV.
``EmulatorTone`` and ``EmulatorMesh`` are emulator-only sources of AUDIO and MESH (real servers make those
with models).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from emulator import media
from emulator.nodes import Images, NodeContext, NodeOutput, annotated_path, save_image_path


@dataclass(frozen=True)
class Video:
    frames: tuple[Image.Image, ...]
    fps: float


@dataclass(frozen=True)
class Audio:
    wav: bytes


@dataclass(frozen=True)
class Mesh:
    glb: bytes


def _next_name(prefix: str, extension: str, folder: Path) -> tuple[Path, str, str]:
    out, filename, counter, sub = save_image_path(prefix, folder, 0, 0)
    name = f"{filename}_{counter:05}_.{extension}"
    return out / name, name, sub


async def _write(path: Path, data: bytes) -> None:
    await asyncio.to_thread(path.write_bytes, data)


async def _save_webm(ctx: NodeContext, frames: list[Image.Image], fps: float, prefix: str) -> dict[str, str]:
    path, name, sub = _next_name(prefix, "webm", ctx.dirs.output)
    data = await asyncio.to_thread(media.webm, frames, fps)
    await _write(path, data)
    return {"filename": name, "subfolder": sub, "type": "output"}


async def create_video(ctx: NodeContext, images: Images, fps: float = 30.0, audio: Any = None) -> NodeOutput:
    return (Video(tuple(images), float(fps)),), None


def _frames(video: Any) -> tuple[list[Image.Image], float]:
    """A VIDEO's frames, or one grey frame for a stand-in the emulator made from object_info alone."""
    if isinstance(video, Video):
        return list(video.frames), video.fps
    return [Image.new("RGB", (64, 64), (128, 128, 128))], 1.0


async def save_video(ctx: NodeContext, video: Any, filename_prefix: str = "video/ComfyUI", **_: Any) -> NodeOutput:
    frames, fps = _frames(video)
    item = await _save_webm(ctx, frames, fps, filename_prefix)
    return (), {"images": [item], "animated": [True]}


async def save_webm(
    ctx: NodeContext, images: Images, filename_prefix: str = "ComfyUI", fps: float = 24.0, **_: Any
) -> NodeOutput:
    item = await _save_webm(ctx, list(images), fps, filename_prefix)
    return (), {"images": [item], "animated": [True]}


async def vhs_video_combine(
    ctx: NodeContext, images: Images, frame_rate: float = 8.0, filename_prefix: str = "AnimateDiff", **_: Any
) -> NodeOutput:
    item = await _save_webm(ctx, list(images), frame_rate, filename_prefix)
    fullpath = str(ctx.dirs.output / item["subfolder"] / item["filename"])
    gif = {**item, "format": "video/webm", "frame_rate": float(frame_rate), "workflow": "", "fullpath": fullpath}
    return (), {"gifs": [gif]}


async def emulator_tone(ctx: NodeContext, seconds: float = 1.0, frequency: float = 440.0) -> NodeOutput:
    return (Audio(await asyncio.to_thread(media.wav_tone, float(seconds), float(frequency))),), None


async def load_audio(ctx: NodeContext, audio: str, **_: Any) -> NodeOutput:
    path = annotated_path(audio, ctx.dirs.input, ctx.dirs)
    return (Audio(await asyncio.to_thread(path.read_bytes)),), None


def _wav(audio: Any) -> bytes:
    return audio.wav if isinstance(audio, Audio) else media.wav_tone(0.25)


async def save_audio(ctx: NodeContext, audio: Any, filename_prefix: str = "audio/ComfyUI", **_: Any) -> NodeOutput:
    path, name, sub = _next_name(filename_prefix, "wav", ctx.dirs.output)
    await _write(path, _wav(audio))
    return (), {"audio": [{"filename": name, "subfolder": sub, "type": "output"}]}


async def preview_audio(ctx: NodeContext, audio: Any, **_: Any) -> NodeOutput:
    path, name, sub = _next_name("ComfyUI" + ctx.temp_prefix, "wav", ctx.dirs.temp)
    await _write(path, _wav(audio))
    return (), {"audio": [{"filename": name, "subfolder": sub, "type": "temp"}]}


async def emulator_mesh(ctx: NodeContext, size: float = 1.0) -> NodeOutput:
    return (Mesh(media.glb_triangle(float(size))),), None


async def save_glb(ctx: NodeContext, mesh: Any, filename_prefix: str = "mesh/ComfyUI", **_: Any) -> NodeOutput:
    path, name, sub = _next_name(filename_prefix, "glb", ctx.dirs.output)
    await _write(path, mesh.glb if isinstance(mesh, Mesh) else media.glb_triangle())
    return (), {"3d": [{"filename": name, "subfolder": sub, "type": "output"}]}


async def preview_3d(ctx: NodeContext, model_file: str, camera_info: Any = None, **_: Any) -> NodeOutput:
    """Preview3D names a file already in output/ by its relative path: a bare string, not a file record."""
    return (), {"result": [model_file, camera_info, None]}


MEDIA_NODES = {
    "CreateVideo": create_video,
    "SaveVideo": save_video,
    "SaveWEBM": save_webm,
    "VHS_VideoCombine": vhs_video_combine,
    "EmulatorTone": emulator_tone,
    "LoadAudio": load_audio,
    "SaveAudio": save_audio,
    "PreviewAudio": preview_audio,
    "EmulatorMesh": emulator_mesh,
    "SaveGLB": save_glb,
    "Preview3D": preview_3d,
}


def _spec(required: dict[str, Any], output: list[str], *, output_node: bool, category: str) -> dict[str, Any]:
    return {
        "input": {"required": required},
        "input_order": {"required": list(required)},
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": output,
        "output_node": output_node,
        "category": category,
        "description": "",
    }


def newer_object_info(audio_files: list[str]) -> dict[str, dict[str, Any]]:
    """The classes a newer server adds for these outputs (emulator-only ones named Emulator*)."""
    classes = {
        "VHS_VideoCombine": _spec(
            {
                "images": ["IMAGE"],
                "frame_rate": ["FLOAT", {"default": 8, "min": 1, "step": 1}],
                "loop_count": ["INT", {"default": 0, "min": 0, "max": 100, "step": 1}],
                "filename_prefix": ["STRING", {"default": "AnimateDiff"}],
                "format": [["video/webm", "image/gif"]],
                "pingpong": ["BOOLEAN", {"default": False}],
                "save_output": ["BOOLEAN", {"default": True}],
            },
            ["VHS_FILENAMES"],
            output_node=True,
            category="Video Helper Suite 🎥🅥🅗🅢",
        ),
        "EmulatorTone": _spec(
            {
                "seconds": ["FLOAT", {"default": 1.0, "min": 0.05, "max": 10.0, "step": 0.05}],
                "frequency": ["FLOAT", {"default": 440.0, "min": 20.0, "max": 8000.0, "step": 1.0}],
            },
            ["AUDIO"],
            output_node=False,
            category="emulator",
        ),
        "LoadAudio": _spec(
            {"audio": [sorted(audio_files), {"audio_upload": True}]}, ["AUDIO"], output_node=False, category="audio"
        ),
        "SaveAudio": _spec(
            {"audio": ["AUDIO"], "filename_prefix": ["STRING", {"default": "audio/ComfyUI"}]},
            [],
            output_node=True,
            category="audio",
        ),
        "PreviewAudio": _spec({"audio": ["AUDIO"]}, [], output_node=True, category="audio"),
        "EmulatorMesh": _spec(
            {"size": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.01}]},
            ["MESH"],
            output_node=False,
            category="emulator",
        ),
    }
    for name, spec in classes.items():
        spec.update(name=name, display_name=name, python_module="emulator")
    return classes
