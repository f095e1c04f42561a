"""UI -> API conversion against ComfyUI's real frontend: every current template it can run, and variants.

The expected prompts are not ComfyGate's: `data/frontend_prompts.json` holds what the frontend itself
(comfyui-frontend-package, run headless by `record_frontend_prompts.py`) queued for each template of
comfyui-workflow-templates-json whose node classes are all in the recorded object_info, and for the
variants in `ui_variants.py`. Node ids, class types, inputs and pack metadata must match exactly; only
`_meta.title` of untitled nodes may differ (the frontend shows its own English names, see ui_convert).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.errors import UnknownNodeClass, UnsupportedWidget
from tests.workflow import ui_variants
from workflow.ui_convert import ui_to_api

RECORDED = Path(__file__).parent / "data" / "frontend_prompts.json"


@cache
def recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())


@cache
def object_info() -> dict[str, Any]:
    return ui_variants.object_info()


def comparable(prompt: dict[str, Any]) -> dict[str, Any]:
    """A prompt without the display titles (the only part that may differ, see the module docstring)."""
    return {
        node_id: {
            "class_type": node["class_type"],
            "inputs": node["inputs"],
            "_meta": {k: v for k, v in node.get("_meta", {}).items() if k != "title"},
        }
        for node_id, node in prompt.items()
    }


def test_recorded_templates_are_every_template_the_server_can_run() -> None:
    eligible = ui_variants.eligible_templates(object_info())
    assert sorted(eligible) == sorted(recorded()["templates"])
    assert len(eligible) == 112


@pytest.mark.parametrize("name", sorted(json.loads(RECORDED.read_text())["templates"]))
def test_template_converts_like_the_frontend(name: str) -> None:
    expected = recorded()["templates"][name]
    assert comparable(ui_to_api(ui_variants.template(name), object_info())) == comparable(expected)


@pytest.mark.parametrize("name", sorted(ui_variants.VARIANTS))
def test_variant_converts_like_the_frontend(name: str) -> None:
    expected = recorded()["variants"][name]
    assert comparable(ui_to_api(ui_variants.VARIANTS[name](), object_info())) == comparable(expected)


def test_titles_are_kept_when_the_node_has_one() -> None:
    wf = ui_variants.template("flux_dev_checkpoint_example.json")
    titles = {n["id"]: n.get("title") for n in wf["nodes"]}
    api = ui_to_api(wf, object_info())
    assert (
        api["9"]["_meta"]["title"] == recorded()["templates"]["flux_dev_checkpoint_example.json"]["9"]["_meta"]["title"]
    )
    assert titles  # the file was read


# ---- each conversion gap of issue 15, shown by a real template (or a variant of one) --------------


def _nodes(wf: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = list(wf.get("nodes") or [])
    for sg in (wf.get("definitions") or {}).get("subgraphs") or []:
        nodes += sg.get("nodes") or []
    return nodes


def _has(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda wf: any(predicate(n) for n in _nodes(wf))


def _root_subgraph_mode(mode: int) -> Callable[[dict[str, Any]], bool]:
    ids = lambda wf: {sg["id"] for sg in (wf.get("definitions") or {}).get("subgraphs") or []}  # noqa: E731
    return lambda wf: any(n["type"] in ids(wf) and n.get("mode") == mode for n in wf["nodes"])


def _nested_subgraph_mode(mode: int) -> Callable[[dict[str, Any]], bool]:
    def check(wf: dict[str, Any]) -> bool:
        definitions = (wf.get("definitions") or {}).get("subgraphs") or []
        ids = {sg["id"] for sg in definitions}
        return any(n["type"] in ids and n.get("mode") == mode for sg in definitions for n in sg.get("nodes") or [])

    return check


def _renumbered(wf: dict[str, Any]) -> bool:
    """A definition's node id repeats a root node id: the frontend renumbers it on load."""
    root = {n["id"] for n in wf["nodes"]}
    return any(n["id"] in root for sg in (wf.get("definitions") or {}).get("subgraphs") or [] for n in sg["nodes"])


GAPS: dict[str, tuple[str, str, Callable[[dict[str, Any]], bool]]] = {
    # gap: (templates | variants, source, what in the source shows the gap)
    "INT with control_after_generate, not a seed": (
        "templates",
        "video_wan_vace_outpainting.json",
        _has(lambda n: n["type"] == "PrimitiveInt" and len(n.get("widgets_values") or []) == 2),
    ),
    "seed whose spec turns control_after_generate off": (
        "variants",
        "seed_without_control",
        _has(lambda n: n["type"] == "MoonvalleyVideo2VideoNode"),
    ),
    "empty upload value": ("variants", "upload_empty", _has(lambda n: n.get("widgets_values") == ["", "image"])),
    "upload value without its button slot": (
        "variants",
        "upload_empty_without_button",
        _has(lambda n: n.get("widgets_values") == [""]),
    ),
    "button-like widget that is sent (SaveGLB's 3D view)": (
        "templates",
        "3d_hunyuan3d_multiview_to_model.json",
        _has(lambda n: n["type"] == "SaveGLB"),
    ),
    "subgraph per-instance widget values": (
        "templates",
        "image_qwen_image_edit_2509_relight.json",
        lambda wf: any(n["id"] == 10 and n.get("widgets_values") for n in wf["nodes"]),
    ),
    "promoted widgets (properties.proxyWidgets)": (
        "templates",
        "flux1_krea_dev.json",
        _has(lambda n: bool((n.get("properties") or {}).get("proxyWidgets"))),
    ),
    "promoted values shifted by a widget this server lacks": (
        "templates",
        "3d_hunyuan3d_image_to_model.json",
        _has(lambda n: n["type"] == "ModelSamplingAuraFlow" and len(n.get("widgets_values") or []) == 2),
    ),
    "root subgraph bypassed": (
        "templates",
        "image_qwen_image_instantx_inpainting_controlnet.json",
        _root_subgraph_mode(4),
    ),
    "root subgraph muted": ("variants", "subgraph_muted", _root_subgraph_mode(2)),
    "nested subgraph bypassed (still expanded)": (
        "templates",
        "flux1_dev_uso_reference_image_gen.json",
        _nested_subgraph_mode(4),
    ),
    "nested subgraphs (a:b:c ids)": (
        "templates",
        "templates-1_click_multiple_scene_angles-v1.0.json",
        lambda wf: any(
            key.count(":") == 2 for key in recorded()["templates"]["templates-1_click_multiple_scene_angles-v1.0.json"]
        ),
    ),
    "subgraph node ids renumbered on load": ("templates", "image_newbieimage_exp0_1-t2i.json", _renumbered),
    "legacy group node turned into a subgraph": (
        "variants",
        "legacy_group_node_twice",
        lambda wf: sum(1 for n in wf["nodes"] if n["type"] == "workflow>Inv") == 2,
    ),
    "widgets_values null": (
        "variants",
        "widgets_values_null",
        _has(lambda n: "widgets_values" in n and n["widgets_values"] is None),
    ),
    "widgets_values_named beside the list": (
        "variants",
        "widgets_values_named_beside_list",
        _has(lambda n: "widgets_values_named" in n),
    ),
    "widgets_values as a dict": (
        "variants",
        "widgets_values_dict",
        _has(lambda n: isinstance(n.get("widgets_values"), dict)),
    ),
    "dict and list values inside the list": (
        "variants",
        "widget_value_items",
        _has(lambda n: any(isinstance(v, dict | list) for v in n.get("widgets_values") or [])),
    ),
    "list value wrapped as {__value__: [...]}": (
        "variants",
        "widget_value_items",
        _has(lambda n: any(isinstance(v, dict) and "__value__" in v for v in n.get("widgets_values") or [])),
    ),
}


@pytest.mark.parametrize("gap", sorted(GAPS))
def test_conversion_gap_is_covered_by_a_real_workflow(gap: str) -> None:
    section, source, shows = GAPS[gap]
    wf = ui_variants.template(source) if section == "templates" else ui_variants.VARIANTS[source]()
    assert shows(wf), f"{source} no longer shows {gap!r}"
    assert comparable(ui_to_api(wf, object_info())) == comparable(recorded()[section][source])


# ---- where ComfyGate cannot match the frontend: a 422 naming the node and why ----------------------


def _single(node_type: str, widgets_values: list[Any]) -> dict[str, Any]:
    return {
        "last_node_id": 7,
        "nodes": [
            {"id": 7, "type": node_type, "mode": 0, "inputs": [], "outputs": [], "widgets_values": widgets_values}
        ],
        "links": [],
    }


@pytest.mark.parametrize(
    ("node_type", "values", "reason"),
    [
        ("Load3D", ["toy.glb", "upload3dmodel", "clear", "", 1024, 1024], "LOAD_3D widget"),
        ("WebcamCapture", ["", 0, 0, True, "capture"], "WEBCAM widget"),
    ],
)
def test_widgets_it_cannot_lay_out_are_refused_with_the_node(node_type: str, values: list[Any], reason: str) -> None:
    with pytest.raises(UnsupportedWidget) as info:
        ui_to_api(_single(node_type, values), object_info())
    assert info.value.status_code == 422
    assert info.value.detail["node_id"] == "7" and info.value.detail["class_type"] == node_type
    assert reason in info.value.message


def test_a_muted_node_of_an_unmodelled_kind_is_not_refused() -> None:
    wf = _single("WebcamCapture", [])
    wf["nodes"][0]["mode"] = 2
    assert ui_to_api(wf, object_info()) == {}


def test_unknown_class_inside_a_subgraph_names_its_api_id() -> None:
    wf = ui_variants.template("flux_dev_checkpoint_example.json")
    inner = wf["definitions"]["subgraphs"][0]["nodes"]
    victim = next(n for n in inner if n["type"] == "KSampler")
    victim["type"] = "NoSuchSampler"
    with pytest.raises(UnknownNodeClass) as info:
        ui_to_api(wf, object_info())
    assert info.value.detail["node_id"] == f"56:{victim['id']}"
