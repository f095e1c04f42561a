"""Node execution for the ComfyUI emulator: real Pillow work for image nodes, stand-ins for model nodes.

IMAGE values are lists of RGB PIL images (a batch), MASK values lists of "L" images. Model nodes pass
small tokens around so a standard SD txt2img/img2img graph runs end to end and ends in a deterministic
picture (derived from seed and prompt text), which is what tests and the demo need to see.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps, PngImagePlugin

from emulator.validation import is_link

Images = list[Image.Image]
NodeOutput = tuple[tuple[Any, ...], dict[str, Any] | None]

# Fake model files: the recorded object_info has empty model lists, so nothing would validate without them.
FAKE_MODELS: dict[str, list[str]] = {
    "ckpt_name": ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"],
    "lora_name": ["add_detail.safetensors", "lcm-lora-sdxl.safetensors"],
    "vae_name": ["sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors"],
    "unet_name": ["flux1-dev.safetensors"],
    "clip_name": ["clip_l.safetensors", "t5xxl_fp16.safetensors"],
    "clip_name1": ["clip_l.safetensors"],
    "clip_name2": ["t5xxl_fp16.safetensors"],
    "control_net_name": ["control_v11p_sd15_canny.pth"],
    "style_model_name": ["flux1-redux-dev.safetensors"],
    "gligen_name": ["gligen_sd14_textbox_pruned.safetensors"],
    "hypernetwork_name": ["hypernetwork.pt"],
    "model_name": ["4x-UltraSharp.pth"],
}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
# Nodes whose IS_CHANGED makes them run every time (ComfyUI returns time or NaN for these).
NEVER_CACHED = {"SaveImageWebsocket"}
# Above this many pixels, Pillow work goes to a thread so the server stays responsive.
_INLINE_PIXELS = 256 * 256


class InterruptProcessing(Exception):
    """Raised at an interrupt check point, like comfy.model_management.InterruptProcessingException."""


@dataclass(frozen=True)
class ModelToken:
    """Stand-in for MODEL/CLIP/VAE/etc.: names what was loaded, nothing more."""

    kind: str
    name: str
    loras: tuple[str, ...] = ()


@dataclass
class Latent:
    """Stand-in for a LATENT: its size, plus what a sampler would have baked into it."""

    width: int
    height: int
    batch: int
    seed: int | None = None
    text: str = ""
    denoise: float = 1.0
    source: Images | None = None


@dataclass
class Dirs:
    input: Path
    output: Path
    temp: Path


@dataclass
class NodeContext:
    """What a node may use: its ids, folders, and callbacks that emit the recorded WS side effects."""

    node_id: str
    prompt_id: str
    prompt: dict[str, Any]
    dirs: Dirs
    temp_prefix: str
    step_delay: Callable[[], float]
    progress: Callable[[int, int, tuple[str, Image.Image] | None], Awaitable[None]]
    text: Callable[[str], Awaitable[None]]
    check_interrupt: Callable[[], None]
    class_info: dict[str, Any] = field(default_factory=dict)


async def _pixels(fn: Callable[..., Any], pixel_count: int, *args: Any) -> Any:
    """Run small Pillow jobs inline (cheaper than a thread hop), big ones in the default executor."""
    if pixel_count <= _INLINE_PIXELS:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _count(images: Images) -> int:
    return sum(im.width * im.height for im in images)


# ----------------------------------------------------------------------------------------- torch repr
def _fmt_values(values: list[float]) -> tuple[Callable[[float], str], int]:
    """torch's _Formatter for float tensors in [0, 1]: int mode ("1.") or 4 decimals, right-aligned."""
    nonzero = [v for v in values if v != 0]
    if all(v == int(v) for v in nonzero):
        width = max([len(f"{v:.0f}") + 1 for v in nonzero], default=1)
        return (lambda v: f"{v:.0f}."), width
    width = max(len(f"{v:.4f}") for v in nonzero)
    return (lambda v: f"{v:.4f}"), width


def tensor_repr(images: Images) -> str:
    """``str(tensor)`` of a ComfyUI IMAGE batch ([B,H,W,C] floats), summarised like torch above 1000."""
    if not images:
        return "tensor([])"
    b, h, w = len(images), images[0].height, images[0].width
    summarize = b * h * w * 3 > 1000

    def idx(n: int) -> list[int | None]:
        if summarize and n > 6:
            return [0, 1, 2, None, n - 3, n - 2, n - 1]
        return list(range(n))

    rows: dict[tuple[int, int, int], tuple[float, float, float]] = {}
    for bi in idx(b):
        if bi is None:
            continue
        px = images[bi].load()
        for yi in idx(h):
            for xi in idx(w):
                if yi is not None and xi is not None:
                    r, g, bl = px[xi, yi][:3]
                    rows[(bi, yi, xi)] = (r / 255.0, g / 255.0, bl / 255.0)
    fmt, width = _fmt_values([v for t in rows.values() for v in t])

    def cell(v: float) -> str:
        s = fmt(v)
        return " " * (width - len(s)) + s

    def block(dim: int, prefix: tuple[int, ...], indent: int) -> str:
        if dim == 3:
            return "[" + ", ".join(cell(v) for v in rows[prefix]) + "]"  # type: ignore[index]
        n = (b, h, w)[dim]
        parts = ["..." if i is None else block(dim + 1, (*prefix, i), indent + 1) for i in idx(n)]
        sep = "," + "\n" * (3 - dim) + " " * (indent + 1)
        return "[" + sep.join(parts) + "]"

    return "tensor(" + block(0, (), 7) + ")"


def format_value(value: Any) -> str:
    """How ComfyUI shows an input value in execution_error.current_inputs (``str()`` of it)."""
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        return tensor_repr(value)
    return str(value)


# ---------------------------------------------------------------------------------------- image nodes
def _rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


async def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int = 1, color: int = 0) -> NodeOutput:
    img = Image.new("RGB", (width, height), _rgb(color))
    return ([img.copy() for _ in range(batch_size)] if batch_size > 1 else [img],), None


def annotated_path(name: str, default: Path, dirs: Dirs) -> Path:
    """ComfyUI's ``name.png [output]`` annotation picks the folder; plain names use ``default``."""
    for tag, folder in (("[output]", dirs.output), ("[input]", dirs.input), ("[temp]", dirs.temp)):
        if name.endswith(" " + tag):
            return folder / name[: -len(tag) - 1]
    return default / name


def _load_image(path: Path) -> tuple[Images, Images]:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im) or im
        rgb = im.convert("RGB")
        if "A" in im.getbands():
            mask = ImageOps.invert(im.getchannel("A"))
        else:
            mask = Image.new("L", (64, 64), 0)
    return [rgb], [mask]


async def load_image(ctx: NodeContext, image: str, upload: Any = None) -> NodeOutput:
    path = annotated_path(image, ctx.dirs.input, ctx.dirs)
    images, masks = await asyncio.get_running_loop().run_in_executor(None, _load_image, path)
    return (images, masks), None


async def image_invert(ctx: NodeContext, image: Images) -> NodeOutput:
    return (await _pixels(lambda: [ImageOps.invert(im) for im in image], _count(image)),), None


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bislerp": Image.Resampling.BICUBIC,
}


def _scale(images: Images, method: str, width: int, height: int, crop: str) -> Images:
    out = []
    for im in images:
        w, h = width, height
        if w == 0 and h == 0:
            out.append(im.copy())
            continue
        if w == 0:
            w = max(1, round(im.width * h / im.height))
        elif h == 0:
            h = max(1, round(im.height * w / im.width))
        src = im
        if crop == "center":
            old_aspect, new_aspect = im.width / im.height, w / h
            if old_aspect > new_aspect:
                cw = round(im.width * new_aspect / old_aspect)
                x = (im.width - cw) // 2
                src = im.crop((x, 0, x + cw, im.height))
            elif old_aspect < new_aspect:
                ch = round(im.height * old_aspect / new_aspect)
                y = (im.height - ch) // 2
                src = im.crop((0, y, im.width, y + ch))
        out.append(src.resize((w, h), _RESAMPLE.get(method, Image.Resampling.BILINEAR)))
    return out


async def image_scale(
    ctx: NodeContext, image: Images, upscale_method: str, width: int, height: int, crop: str = "disabled"
) -> NodeOutput:
    pixels = _count(image) + width * height * len(image)
    return (await _pixels(_scale, pixels, image, upscale_method, width, height, crop),), None


async def image_scale_by(ctx: NodeContext, image: Images, upscale_method: str, scale_by: float) -> NodeOutput:
    w, h = round(image[0].width * scale_by), round(image[0].height * scale_by)
    return await image_scale(ctx, image, upscale_method, w, h, "disabled")


async def image_blur(ctx: NodeContext, image: Images, blur_radius: int, sigma: float) -> NodeOutput:
    if blur_radius == 0:
        return (image,), None
    flt = ImageFilter.GaussianBlur(radius=sigma)
    return (await _pixels(lambda: [im.filter(flt) for im in image], _count(image)),), None


async def get_image_size(ctx: NodeContext, image: Images, unique_id: Any = None) -> NodeOutput:
    w, h, b = image[0].width, image[0].height, len(image)
    await ctx.text(f"width: {w}, height: {h}\n batch size: {b}")
    return (w, h, b), None


def save_image_path(prefix: str, output_dir: Path, width: int, height: int) -> tuple[Path, str, int, str]:
    """ComfyUI's folder_paths.get_save_image_path: subfolder from the prefix, next free counter."""
    if "%" in prefix:
        now = time.localtime()
        for k, v in {
            "%width%": width,
            "%height%": height,
            "%year%": now.tm_year,
            "%month%": f"{now.tm_mon:02}",
            "%day%": f"{now.tm_mday:02}",
            "%hour%": f"{now.tm_hour:02}",
            "%minute%": f"{now.tm_min:02}",
            "%second%": f"{now.tm_sec:02}",
        }.items():
            prefix = prefix.replace(k, str(v))
    out = os.path.abspath(output_dir)
    subfolder = os.path.dirname(os.path.normpath(prefix))
    filename = os.path.basename(os.path.normpath(prefix))
    full = os.path.join(out, subfolder)
    common = os.path.commonpath((out, os.path.abspath(full)))
    if common != out:
        raise Exception(  # noqa: TRY002 - ComfyUI raises a bare Exception; exception_type must say so
            "**** ERROR: Saving image outside the output folder is not allowed."
            + "\n full_output_folder: "
            + os.path.abspath(full)
            + "\n         output_dir: "
            + out
            + "\n         commonpath: "
            + common
        )

    def parse(name: str) -> tuple[int, str]:
        n = len(os.path.basename(prefix))
        try:
            digits = int(name[n + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        return digits, name[: n + 1]

    try:
        found = [d for d, p in map(parse, os.listdir(full)) if p[:-1] == filename and p[-1:] == "_"]
        counter = max(found) + 1 if found else 1
    except FileNotFoundError:
        os.makedirs(full, exist_ok=True)
        counter = 1
    return Path(full), filename, counter, subfolder


def _write_pngs(
    images: Images,
    folder: Path,
    filename: str,
    counter: int,
    subfolder: str,
    kind: str,
    level: int,
    prompt: dict[str, Any] | None,
) -> list[dict[str, str]]:
    results = []
    info = None
    if prompt is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(prompt))
    for batch_number, im in enumerate(images):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        im.save(folder / name, pnginfo=info, compress_level=level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


async def save_image(ctx: NodeContext, images: Images, filename_prefix: str = "ComfyUI", **_: Any) -> NodeOutput:
    folder, filename, counter, sub = save_image_path(
        filename_prefix, ctx.dirs.output, images[0].width, images[0].height
    )
    results = await _pixels(
        _write_pngs, _count(images) * 4, images, folder, filename, counter, sub, "output", 4, ctx.prompt
    )
    return (), {"images": results}


async def preview_image(ctx: NodeContext, images: Images, **_: Any) -> NodeOutput:
    prefix = "ComfyUI" + ctx.temp_prefix
    folder, filename, counter, sub = save_image_path(prefix, ctx.dirs.temp, images[0].width, images[0].height)
    results = await _pixels(_write_pngs, _count(images) * 4, images, folder, filename, counter, sub, "temp", 1, None)
    return (), {"images": results}


async def save_image_websocket(ctx: NodeContext, images: Images) -> NodeOutput:
    for step, im in enumerate(images):
        await ctx.progress(step, len(images), ("PNG", im))
    return (), None


async def preview_any(ctx: NodeContext, source: Any = None) -> NodeOutput:
    if isinstance(source, str):
        value = source
    elif isinstance(source, bool | int | float):
        value = str(source)
    elif source is not None:
        try:
            value = json.dumps(source)
        except Exception:  # noqa: BLE001 - ComfyUI falls back to str() for anything json can't take
            value = format_value(source)
    else:
        value = "source exists, but could not be serialized."
    return (), {"text": [value]}


# ----------------------------------------------------------------------------------------- model nodes
async def checkpoint_loader(ctx: NodeContext, ckpt_name: str, **_: Any) -> NodeOutput:
    return (ModelToken("MODEL", ckpt_name), ModelToken("CLIP", ckpt_name), ModelToken("VAE", ckpt_name)), None


async def lora_loader(ctx: NodeContext, model: ModelToken, clip: ModelToken, lora_name: str, **_: Any) -> NodeOutput:
    return (
        ModelToken(model.kind, model.name, (*model.loras, lora_name)),
        ModelToken(clip.kind, clip.name, (*clip.loras, lora_name)),
    ), None


async def lora_loader_model_only(ctx: NodeContext, model: ModelToken, lora_name: str, **_: Any) -> NodeOutput:
    return (ModelToken(model.kind, model.name, (*model.loras, lora_name)),), None


async def vae_loader(ctx: NodeContext, vae_name: str) -> NodeOutput:
    return (ModelToken("VAE", vae_name),), None


async def clip_text_encode(ctx: NodeContext, text: str, clip: ModelToken) -> NodeOutput:
    return ([{"text": text, "clip": clip.name}],), None


async def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int = 1) -> NodeOutput:
    return (Latent(width, height, batch_size),), None


def _cond_text(cond: Any) -> str:
    if isinstance(cond, list):
        return " ".join(str(c.get("text", "")) for c in cond if isinstance(c, dict))
    return ""


def _preview_jpeg(latent: Latent, step: int, steps: int) -> Image.Image:
    w, h = max(1, min(64, latent.width // 8)), max(1, min(64, latent.height // 8))
    shade = int(255 * step / max(steps, 1))
    return Image.new("RGB", (w, h), (shade, (latent.seed or 0) % 256, 255 - shade))


async def ksampler(
    ctx: NodeContext,
    model: ModelToken,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent_image: Latent,
    denoise: float = 1.0,
    **_: Any,
) -> NodeOutput:
    for step in range(steps):
        ctx.check_interrupt()
        delay = ctx.step_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        await ctx.progress(step + 1, steps, ("JPEG", _preview_jpeg(latent_image, step + 1, steps)))
    out = Latent(
        latent_image.width,
        latent_image.height,
        latent_image.batch,
        seed=seed,
        text=f"{model.name}|{'+'.join(model.loras)}|{_cond_text(positive)}",
        denoise=denoise,
        source=latent_image.source,
    )
    return (out,), None


async def ksampler_advanced(ctx: NodeContext, **kw: Any) -> NodeOutput:
    steps = int(kw.get("end_at_step", kw["steps"]))
    steps = max(1, min(steps, int(kw["steps"])) - int(kw.get("start_at_step", 0)))
    return await ksampler(
        ctx,
        kw["model"],
        int(kw.get("noise_seed", 0)),
        steps,
        kw.get("cfg", 8.0),
        kw.get("sampler_name", ""),
        kw.get("scheduler", ""),
        kw.get("positive"),
        kw.get("negative"),
        kw["latent_image"],
    )


def _decode(latent: Latent) -> Images:
    out = []
    for i in range(latent.batch):
        digest = hashlib.sha256(f"{latent.seed}|{latent.text}|{i}".encode()).digest()
        rng = random.Random(digest)
        c1, c2 = tuple(digest[0:3]), tuple(digest[3:6])
        size = (latent.width, latent.height)
        grad = Image.linear_gradient("L").rotate(digest[6] * 360 / 256, expand=False).resize(size)
        base = Image.composite(Image.new("RGB", size, c1), Image.new("RGB", size, c2), grad)
        noise = Image.frombytes("RGB", (16, 16), rng.randbytes(16 * 16 * 3)).resize(size, Image.Resampling.BICUBIC)
        img = Image.blend(base, noise, 0.25)
        if latent.source:
            src = latent.source[min(i, len(latent.source) - 1)].resize(size)
            img = Image.blend(src, img, max(0.0, min(1.0, latent.denoise)))
        out.append(img)
    return out


async def vae_decode(ctx: NodeContext, samples: Latent, vae: ModelToken) -> NodeOutput:
    return (await _pixels(_decode, samples.width * samples.height * samples.batch, samples),), None


async def vae_encode(ctx: NodeContext, pixels: Images, vae: ModelToken) -> NodeOutput:
    w, h = pixels[0].width // 8 * 8, pixels[0].height // 8 * 8
    return (Latent(w, h, len(pixels), source=pixels),), None


def _write_latent(path: Path, latent: Latent) -> None:
    """A small but well-formed safetensors file (ComfyUI's .latent), so non-image outputs are real files."""
    shape = [latent.batch, 4, max(1, latent.height // 8), max(1, latent.width // 8)]
    count = shape[0] * shape[1] * shape[2] * shape[3]
    header = {
        "latent_tensor": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * count]},
        "__metadata__": {"emulated": "true"},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4 * count))


async def save_latent(
    ctx: NodeContext, samples: Latent, filename_prefix: str = "latents/ComfyUI", **_: Any
) -> NodeOutput:
    folder, filename, counter, sub = save_image_path(filename_prefix, ctx.dirs.output, 0, 0)
    name = f"{filename}_{counter:05}_.latent"
    await asyncio.to_thread(_write_latent, folder / name, samples)
    return (), {"latents": [{"filename": name, "subfolder": sub, "type": "output"}]}


def _write_animation(images: Images, path: Path, fps: float, **options: Any) -> None:
    frames = [im.convert("RGB") for im in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000.0 / fps), **options)


async def save_animated_webp(
    ctx: NodeContext,
    images: Images,
    filename_prefix: str = "ComfyUI",
    fps: float = 6.0,
    lossless: bool = True,
    quality: int = 80,
    method: str = "default",
    **_: Any,
) -> NodeOutput:
    """ComfyUI's SaveAnimatedWEBP: one animated file of every frame, reported under images + animated."""
    folder, filename, counter, sub = save_image_path(
        filename_prefix, ctx.dirs.output, images[0].width, images[0].height
    )
    name = f"{filename}_{counter:05}_.webp"
    level = {"default": 4, "fastest": 0, "slowest": 6}.get(method, 4)
    options = {"lossless": lossless, "quality": quality, "method": level}
    await _pixels(functools.partial(_write_animation, **options), _count(images) * 8, images, folder / name, fps)
    return (), {"images": [{"filename": name, "subfolder": sub, "type": "output"}], "animated": [True]}


async def save_animated_png(
    ctx: NodeContext,
    images: Images,
    filename_prefix: str = "ComfyUI",
    fps: float = 6.0,
    compress_level: int = 4,
    **_: Any,
) -> NodeOutput:
    folder, filename, counter, sub = save_image_path(
        filename_prefix, ctx.dirs.output, images[0].width, images[0].height
    )
    name = f"{filename}_{counter:05}_.png"
    await _pixels(
        functools.partial(_write_animation, compress_level=compress_level),
        _count(images) * 4,
        images,
        folder / name,
        fps,
    )
    return (), {"images": [{"filename": name, "subfolder": sub, "type": "output"}], "animated": [True]}


NODES: dict[str, Callable[..., Awaitable[NodeOutput]]] = {
    "EmptyImage": empty_image,
    "LoadImage": load_image,
    "ImageInvert": image_invert,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageBlur": image_blur,
    "GetImageSize": get_image_size,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveImageWebsocket": save_image_websocket,
    "PreviewAny": preview_any,
    "CheckpointLoaderSimple": checkpoint_loader,
    "LoraLoader": lora_loader,
    "LoraLoaderModelOnly": lora_loader_model_only,
    "VAELoader": vae_loader,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent,
    "EmptySD3LatentImage": empty_latent,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "SaveLatent": save_latent,
    "SaveAnimatedWEBP": save_animated_webp,
    "SaveAnimatedPNG": save_animated_png,
}
REAL_NODES = (
    "EmptyImage",
    "LoadImage",
    "ImageInvert",
    "ImageScale",
    "ImageScaleBy",
    "ImageBlur",
    "GetImageSize",
    "SaveImage",
    "PreviewImage",
    "SaveImageWebsocket",
    "PreviewAny",
)


def _placeholder(kind: str, inputs: dict[str, Any]) -> Any:
    """A plausible value of an output type, for classes the emulator only knows from object_info."""
    if kind == "IMAGE":
        for v in inputs.values():
            if isinstance(v, list) and v and isinstance(v[0], Image.Image):
                return v
        return [Image.new("RGB", (64, 64), (128, 128, 128))]
    if kind == "MASK":
        return [Image.new("L", (64, 64), 0)]
    if kind == "LATENT":
        for v in inputs.values():
            if isinstance(v, Latent):
                return v
        return Latent(512, 512, 1)
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind, ModelToken(kind, "emulated"))


async def run_node(class_type: str, inputs: dict[str, Any], ctx: NodeContext) -> NodeOutput:
    """Execute one node; unknown-but-declared classes produce placeholders instead of failing."""
    fn = NODES.get(class_type)
    if fn is not None:
        return await fn(ctx, **inputs)
    outputs = tuple(_placeholder(k, inputs) for k in ctx.class_info.get("output", []))
    return outputs, None


def is_changed(class_type: str, inputs: dict[str, Any], dirs: Dirs) -> Any:
    """ComfyUI's IS_CHANGED: file identity for loaders, a fresh value for never-cached nodes."""
    if class_type in NEVER_CACHED:
        return time.time()
    if class_type in ("LoadImage", "LoadImageMask") and isinstance(inputs.get("image"), str):
        try:
            st = annotated_path(inputs["image"], dirs.input, dirs).stat()
            return f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return None
    return None


def input_files(folder: Path, extensions: frozenset[str] | set[str] = IMAGE_EXTENSIONS) -> list[str]:
    """What LoadImage (or, with other extensions, LoadAudio) lists: files directly in the input folder, sorted."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and Path(e.name).suffix.lower() in extensions)
    except FileNotFoundError:
        return []


def encode_image(fmt: str, im: Image.Image) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.convert("RGB").save(buf, format="JPEG", quality=95)
    else:
        im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class ExecutionList:
    """ComfyUI's ExecutionList ordering: only uncached ancestors of outputs, output nodes first."""

    def __init__(self, prompt: dict[str, Any], is_cached: Callable[[str], bool], is_output: Callable[[str], bool]):
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for value in self.prompt[uid]["inputs"].values():
                if is_link(value) and not self.is_cached(value[0]):
                    stack.append(value[0])
                    links.append((value[0], uid))
        for src, dst in links:
            if dst not in self.blocking[src]:
                self.blocking[src][dst] = True
                self.block_count[dst] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def next_node(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for n in ready:
            if self.is_output(n):
                return n
        for n in ready:
            if any(self.is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            if any(self.is_output(b2) for b in self.blocking[n] for b2 in self.blocking[b]):
                return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        for blocked in self.blocking.pop(node_id, {}):
            self.block_count[blocked] -= 1
        del self.pending[node_id]
