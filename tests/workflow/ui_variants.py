"""The current workflow templates and the variants of them that show the conversion gaps no template has.

Templates come from the ``comfyui-workflow-templates-json`` package (PyPI), the JSON files the ComfyUI
frontend offers its users. Each variant is one real template with one change a user's file can carry (a
``null`` or dict ``widgets_values``, an empty upload, a muted subgraph, a legacy group node, ...). The
frontend's answer for each is recorded by ``tools/record_frontend_prompts.py``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from emulator.info import OBJECT_INFO_PATH as OBJECT_INFO

TEMPLATES_PACKAGE = "comfyui_workflow_templates_json"
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
RENAMED = {"T2IAdapterLoader", "SDV_img2vid"}  # classes the frontend renames on load

Workflow = dict[str, Any]


@cache
def _template_files() -> dict[str, str]:
    folder = resources.files(TEMPLATES_PACKAGE) / "templates"
    return {entry.name: entry.read_text() for entry in folder.iterdir() if entry.name.endswith(".json")}


def templates() -> dict[str, Workflow]:
    """Every UI-format template of the package, freshly parsed (callers may change them)."""
    out: dict[str, Workflow] = {}
    for name, text in _template_files().items():
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            out[name] = data
    return out


def template(name: str) -> Workflow:
    return json.loads(_template_files()[name])


def template_classes(wf: Workflow) -> set[str]:
    """Node classes a template needs: root, subgraph definitions and legacy group nodes."""
    definitions = (wf.get("definitions") or {}).get("subgraphs") or []
    subgraph_ids = {sg.get("id") for sg in definitions}
    groups = (wf.get("extra") or {}).get("groupNodes") or {}
    nodes = list(wf.get("nodes") or [])
    for sg in definitions:
        nodes += sg.get("nodes") or []
    for group in groups.values():
        nodes += group.get("nodes") or []
    classes = set()
    for node in nodes:
        kind = node.get("type")
        if kind in subgraph_ids or kind in VIRTUAL:
            continue
        if isinstance(kind, str) and kind.startswith("workflow>") and kind[len("workflow>") :] in groups:
            continue
        classes.add(kind)
    return classes


def eligible_templates(object_info: dict[str, Any]) -> dict[str, Workflow]:
    """Every template whose node classes (root, subgraphs, legacy groups) the object_info has."""
    known = set(object_info) | RENAMED
    return {name: wf for name, wf in templates().items() if template_classes(wf) <= known}


def _node(wf: Workflow, node_id: int) -> dict[str, Any]:
    return next(n for n in wf["nodes"] if n["id"] == node_id)


BASE = "sd3.5_large_canny_controlnet_example.json"  # root-level KSampler 3, CLIPTextEncode 6, LoadImage 45, ...
SUBGRAPH = "flux_dev_checkpoint_example.json"  # one subgraph instance, node 56
KSAMPLER_BY_NAME = {
    "seed": 5,
    "control_after_generate": "fixed",
    "steps": 7,
    "cfg": 2.0,
    "sampler_name": "ddim",
    "scheduler": "karras",
    "denoise": 0.5,
}


def _with(name: str, change: Callable[[Workflow], None]) -> Callable[[], Workflow]:
    def make() -> Workflow:
        wf = template(name)
        change(wf)
        return wf

    return make


def _set(node_id: int, key: str, value: Any) -> Callable[[Workflow], None]:
    return lambda wf: _node(wf, node_id).__setitem__(key, copy.deepcopy(value))


def _items(wf: Workflow) -> None:
    _node(wf, 6)["widgets_values"] = [{"text": "a dict value"}]  # into a multiline (textarea) STRING
    _node(wf, 9)["widgets_values"] = [["list", "value"]]  # a list into a one-line STRING
    _node(wf, 48)["widgets_values"] = ["bilinear", {"__value__": [512, 768]}, None, "center"]
    _node(wf, 3)["widgets_values"] = [840657187058661, "randomize", 32, None, "euler", "simple", 1]


def _moonvalley(wf: Workflow) -> None:
    """A seed whose spec says control_after_generate: false (MoonvalleyVideo2VideoNode): no control slot."""
    common = {"pos": [0, 0], "size": [300, 300], "flags": {}, "mode": 0}
    wf["nodes"] += [
        {
            "id": 90,
            "type": "LoadVideo",
            **common,
            "order": 20,
            "inputs": [],
            "outputs": [{"name": "VIDEO", "type": "VIDEO", "links": [900]}],
            "properties": {},
            "widgets_values": ["clip.mp4", "image"],
        },
        {
            "id": 91,
            "type": "MoonvalleyVideo2VideoNode",
            **common,
            "order": 21,
            "inputs": [{"name": "video", "type": "VIDEO", "link": 900}],
            "outputs": [{"name": "VIDEO", "type": "VIDEO", "links": [901]}],
            "properties": {"cnr_id": "comfy-core", "ver": "v0.3.64"},
            "widgets_values": ["a prompt", "a negative", 123, 40, "Pose Transfer", 80],
        },
        {
            "id": 92,
            "type": "SaveVideo",
            **common,
            "order": 22,
            "inputs": [{"name": "video", "type": "VIDEO", "link": 901}],
            "outputs": [],
            "properties": {},
            "widgets_values": ["video/x", "auto", "auto"],
        },
    ]
    wf["links"] += [[900, 90, 0, 91, 0, "VIDEO"], [901, 91, 0, 92, 0, "VIDEO"]]
    wf["last_node_id"], wf["last_link_id"] = 92, 901


def _legacy_group(instances: int) -> Callable[[], Workflow]:
    """A legacy group node (`workflow>Inv`: EmptyImage -> ImageInvert) used `instances` times."""

    def make() -> Workflow:
        inner = [
            {
                "type": "EmptyImage",
                "pos": [0, 0],
                "size": [300, 200],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [], "slot_index": 0}],
                "properties": {},
                "widgets_values": [512, 512, 1, 0],
                "index": 0,
            },
            {
                "type": "ImageInvert",
                "pos": [300, 0],
                "size": [300, 100],
                "flags": {},
                "order": 1,
                "mode": 0,
                "inputs": [{"name": "image", "type": "IMAGE", "link": None}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [], "slot_index": 0}],
                "properties": {},
                "index": 1,
            },
        ]
        nodes: list[dict[str, Any]] = []
        links: list[list[Any]] = []
        for n in range(instances):
            group_id, save_id, link_id = 1 + 2 * n, 2 + 2 * n, 1 + n
            values = [[640, 480, 1, 255], [64, 48, 1, 7]][n % 2]
            common = {"size": [300, 200], "flags": {}, "mode": 0}
            nodes.append(
                {
                    "id": group_id,
                    "type": "workflow>Inv",
                    "pos": [0, 300 * n],
                    **common,
                    "order": 2 * n,
                    "inputs": [],
                    "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [link_id], "slot_index": 0}],
                    "properties": {"Node name for S&R": "workflow>Inv"},
                    "widgets_values": values,
                }
            )
            nodes.append(
                {
                    "id": save_id,
                    "type": "SaveImage",
                    "pos": [400, 300 * n],
                    **common,
                    "order": 2 * n + 1,
                    "inputs": [{"name": "images", "type": "IMAGE", "link": link_id}],
                    "outputs": [],
                    "properties": {},
                    "widgets_values": [f"grp{n}"],
                }
            )
            links.append([link_id, group_id, 0, save_id, 0, "IMAGE"])
        group = {"nodes": inner, "links": [[0, 0, 1, 0, 1, "IMAGE"]], "external": []}
        return {
            "last_node_id": 2 * instances,
            "last_link_id": instances,
            "version": 0.4,
            "nodes": nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"groupNodes": {"Inv": group}},
        }

    return make


VARIANTS: dict[str, Callable[[], Workflow]] = {
    "widgets_values_null": _with(BASE, _set(3, "widgets_values", None)),
    "widgets_values_dict": _with(BASE, _set(3, "widgets_values", KSAMPLER_BY_NAME)),
    "widgets_values_dict_shuffled": _with(
        BASE, _set(3, "widgets_values", dict(reversed(list(KSAMPLER_BY_NAME.items()))))
    ),
    "widgets_values_dict_partial": _with(BASE, _set(3, "widgets_values", {"steps": 7, "bogus": 1})),
    "widgets_values_named_beside_list": _with(BASE, _set(3, "widgets_values_named", KSAMPLER_BY_NAME)),
    "widget_value_items": _with(BASE, _items),
    "textarea_list": _with(BASE, _set(6, "widgets_values", [["a", "b"]])),
    "textarea_null": _with(BASE, _set(6, "widgets_values", [None])),
    "textarea_number": _with(BASE, _set(6, "widgets_values", [5])),
    "upload_empty": _with(BASE, _set(45, "widgets_values", ["", "image"])),
    "upload_empty_without_button": _with(BASE, _set(45, "widgets_values", [""])),
    "subgraph_muted": _with(SUBGRAPH, _set(56, "mode", 2)),
    "subgraph_bypassed": _with(SUBGRAPH, _set(56, "mode", 4)),
    "seed_without_control": _with(BASE, _moonvalley),
    "legacy_group_node": _legacy_group(1),
    "legacy_group_node_twice": _legacy_group(2),
}


def object_info() -> dict[str, Any]:
    return json.loads(Path(OBJECT_INFO).read_text())
