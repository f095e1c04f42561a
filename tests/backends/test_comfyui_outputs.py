"""Reading ComfyUI's output shapes (NEWER-SERVERS.md) as files and texts, each with its kind and content type."""

from __future__ import annotations

from backends.comfyui_outputs import node_output_refs, output_refs
from core.media_types import content_type, kind_of


def test_every_shape_a_node_reports() -> None:
    outputs = {
        "9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
        "10": {"images": [{"filename": "v.mp4", "subfolder": "video", "type": "output"}], "animated": [True]},
        "11": {"images": [{"filename": "w.webp", "subfolder": "", "type": "output"}], "animated": [True]},
        "12": {
            "gifs": [
                {
                    "filename": "g.mp4",
                    "subfolder": "",
                    "type": "temp",
                    "format": "video/h264-mp4",
                    "frame_rate": 8.0,
                    "fullpath": "/srv/comfy/temp/g.mp4",
                }
            ]
        },
        "13": {"audio": [{"filename": "a.flac", "subfolder": "audio", "type": "output"}]},
        "14": {"text": ["hello", "world"]},
        "15": {"3d": [{"filename": "m.glb", "subfolder": "mesh", "type": "output"}]},
        "16": {"result": ["mesh/m.glb", {"position": [0, 0, 0]}, None]},
        "17": {"latents": [{"filename": "l.latent", "subfolder": "latents", "type": "output"}]},
        "18": {"images": [{"filename": "in.png", "subfolder": "", "type": "input"}]},
    }
    refs = output_refs(outputs)
    kinds = [(r.node_id, r.kind) for r in refs]
    assert kinds == [
        ("9", "image"),
        ("10", "video"),
        ("11", "image"),
        ("12", "video"),
        ("13", "audio"),
        ("14", "text"),
        ("14", "text"),
        ("15", "3d"),
        ("16", "3d"),
        ("17", "file"),
        ("18", "image"),
    ]
    by_node = {r.node_id: r for r in refs}
    assert by_node["10"].animated and by_node["11"].animated and not by_node["9"].animated
    assert by_node["12"].type == "temp" and dict(by_node["12"].extra) == {"format": "video/h264-mp4", "frame_rate": 8.0}
    assert "fullpath" not in dict(by_node["12"].extra)  # a server-local path: never passed on
    assert (by_node["16"].subfolder, by_node["16"].filename, by_node["16"].type) == ("mesh", "m.glb", "output")
    assert by_node["18"].type == "input"
    assert [r.text for r in refs if r.kind == "text"] == ["hello", "world"]


def test_what_is_not_an_output_is_ignored() -> None:
    assert node_output_refs("1", None) == []
    assert node_output_refs("1", {"animated": [True], "result": ["no extension", "/abs/x.glb", "..\\\\x.glb"]}) == []
    assert node_output_refs("1", {"images": [{"subfolder": ""}, "x", 3]}) == []


def test_content_types_and_kinds_by_name() -> None:
    assert [content_type(n) for n in ("a.webm", "a.mp4", "a.flac", "a.wav", "a.glb", "a.gltf", "a.webp")] == [
        "video/webm",
        "video/mp4",
        "audio/flac",
        "audio/wav",
        "model/gltf-binary",
        "model/gltf+json",
        "image/webp",
    ]
    assert content_type("x.unknownext") == "application/octet-stream"
    assert [kind_of(n) for n in ("a.GIF", "b.MOV", "c.ogg", "d.ply", "e.safetensors")] == [
        "image",
        "video",
        "audio",
        "3d",
        "file",
    ]
