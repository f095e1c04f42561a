"""Format detection and UI → API conversion, against hand-made edge cases and real ComfyUI templates."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.errors import UnknownNodeClass, WorkflowFormatError
from workflow.format import detect_format, to_api, ui_to_api, workflow_node_classes
from workflow.node_specs import widget_layout
from workflow.params import is_link, validate_workflow

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_PACKAGE = "comfyui_workflow_templates"


@cache
def object_info() -> dict[str, Any]:
    return json.loads((ROOT / "emulator" / "data" / "object_info.json").read_text())


def load(name: str) -> Any:
    return json.loads((ROOT / "workflows" / name).read_text())


# ---- tiny UI-workflow builder ---------------------------------------------------------------------


def node(
    node_id: int,
    node_type: str,
    *,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    wv: Any = None,
    mode: int = 0,
    title: str | None = None,
) -> dict[str, Any]:
    n: dict[str, Any] = {
        "id": node_id,
        "type": node_type,
        "mode": mode,
        "inputs": inputs or [],
        "outputs": outputs or [],
        "properties": {},
    }
    if wv is not None:
        n["widgets_values"] = wv
    if title is not None:
        n["title"] = title
    return n


def inp(name: str, kind: str, link: int | None = None, widget: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "type": kind, "link": link}
    if widget:
        d["widget"] = {"name": name}
    return d


def out(name: str, kind: str, links: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "type": kind, "links": links or []}


def ui(nodes: list[dict[str, Any]], links: list[list[Any]], **extra: Any) -> dict[str, Any]:
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "version": 0.4, **extra}


def empty_image(node_id: int = 1, links: list[int] | None = None, wv: Any = None, **kw: Any) -> dict[str, Any]:
    return node(node_id, "EmptyImage", outputs=[out("IMAGE", "IMAGE", links)], wv=wv or [64, 32, 1, 0], **kw)


def save(node_id: int, link: int | None, prefix: str = "t") -> dict[str, Any]:
    return node(node_id, "SaveImage", inputs=[inp("images", "IMAGE", link)], wv=[prefix])


def invert(node_id: int, link_in: int | None, links_out: list[int], mode: int = 0) -> dict[str, Any]:
    return node(
        node_id,
        "ImageInvert",
        inputs=[inp("image", "IMAGE", link_in)],
        outputs=[out("IMAGE", "IMAGE", links_out)],
        mode=mode,
    )


# ---- detect_format / to_api -----------------------------------------------------------------------


def test_detect_format_api_and_ui() -> None:
    assert detect_format(load("sd_txt2img_api.json")) == "api"
    assert detect_format(load("sd_txt2img_ui.json")) == "ui"
    assert detect_format({"prompt": load("sd_txt2img_api.json"), "client_id": "x"}) == "api"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1, 2], "JSON list"),
        ({}, "empty object"),
        ("text", "JSON str"),
        ({"3": {"inputs": {}}}, "node '3' has no class_type"),
        ({"3": [1]}, "node '3' is a list"),
        ({"nodes": {}}, "'nodes' is a dict"),
    ],
)
def test_detect_format_errors_are_helpful(data: Any, fragment: str) -> None:
    with pytest.raises(WorkflowFormatError) as info:
        detect_format(data)
    assert fragment in info.value.message
    assert "expected either an API-format workflow" in info.value.message


def test_to_api_returns_a_copy_and_checks_classes() -> None:
    api = load("sd_txt2img_api.json")
    result = to_api(api, object_info())
    assert result == api and result is not api
    result["3"]["inputs"]["seed"] = 1
    assert api["3"]["inputs"]["seed"] == 42
    assert to_api({"prompt": api}, object_info()) == api
    with pytest.raises(UnknownNodeClass) as info:
        to_api({"1": {"class_type": "NoSuchNode", "inputs": {}}}, object_info())
    assert info.value.detail["node_id"] == "1" and info.value.detail["class_type"] == "NoSuchNode"
    with pytest.raises(WorkflowFormatError, match="'inputs' must be an object"):
        to_api({"1": {"class_type": "EmptyImage", "inputs": [1]}}, object_info())


def test_example_ui_converts_to_example_api_exactly() -> None:
    result = to_api(load("sd_txt2img_ui.json"), object_info())
    assert result == load("sd_txt2img_api.json")
    # Widgets first in widget order, then linked inputs, like the frontend.
    assert list(result["3"]["inputs"]) == [
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
        "model",
        "positive",
        "negative",
        "latent_image",
    ]


def test_workflow_node_classes() -> None:
    assert workflow_node_classes(load("image_invert_blur_api.json")) == {
        "EmptyImage",
        "ImageInvert",
        "ImageBlur",
        "SaveImage",
    }


def test_example_workflows_are_valid() -> None:
    for name in ("sd_txt2img_api.json", "image_invert_blur_api.json"):
        assert validate_workflow(load(name), object_info()) == []


# ---- widgets ---------------------------------------------------------------------------------------


def widget_slots(class_type: str) -> list[str | None]:
    """Names behind each widgets_values slot; None marks a frontend-only slot (never sent)."""
    return [s.name if s.sent else None for s in widget_layout("1", class_type, object_info()[class_type]) if s.stored]


def test_widget_slots_include_frontend_only_slots() -> None:
    assert widget_slots("KSampler") == [
        "seed",
        None,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
    ]
    assert widget_slots("LoadImage") == ["image", None]
    assert widget_slots("LoadImageMask") == ["image", "channel", None]
    assert widget_slots("PrimitiveInt") == ["value", None]
    # An explicit `control_after_generate: False` on a seed means no control widget (useIntWidget's `??`).
    assert widget_slots("MoonvalleyVideo2VideoNode")[:4] == ["prompt", "negative_prompt", "seed", "steps"]
    # SaveGLB gets the frontend's 3D view as a widget that is sent.
    assert widget_slots("SaveGLB") == ["filename_prefix", "image"]


@pytest.mark.parametrize("control", ["randomize", "fixed", True, False])
def test_control_after_generate_slot_is_skipped(control: Any) -> None:
    wf = ui([node(3, "KSampler", wv=[5, control, 30, 6.5, "dpmpp_2m", "karras", 0.7])], [])
    inputs = ui_to_api(wf, object_info())["3"]["inputs"]
    assert inputs == {
        "seed": 5,
        "steps": 30,
        "cfg": 6.5,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 0.7,
    }


def test_image_upload_slot_is_skipped() -> None:
    wf = ui(
        [
            node(1, "LoadImage", outputs=[out("IMAGE", "IMAGE"), out("MASK", "MASK")], wv=["cat.png", "image"]),
            node(2, "LoadImageMask", outputs=[out("MASK", "MASK")], wv=["m.png", "red", "image"]),
        ],
        [],
    )
    result = ui_to_api(wf, object_info())
    assert result["1"]["inputs"] == {"image": "cat.png"}
    assert result["2"]["inputs"] == {"image": "m.png", "channel": "red"}


def test_missing_widget_values_fall_back_to_defaults_and_extra_ones_are_ignored() -> None:
    wf = ui([node(1, "EmptyImage", wv=[100]), node(2, "ImageBlur", wv=[3, 0.5, "extra", 9])], [])
    result = ui_to_api(wf, object_info())
    assert result["1"]["inputs"] == {"width": 100, "height": 512, "batch_size": 1, "color": 0}
    assert result["2"]["inputs"] == {"blur_radius": 3, "sigma": 0.5}


def test_array_widget_value_is_wrapped() -> None:
    wf = ui([save(1, None, prefix="x")], [])
    wf["nodes"][0]["widgets_values"] = [["a", "b"]]
    assert ui_to_api(wf, object_info())["1"]["inputs"] == {"filename_prefix": {"__value__": ["a", "b"]}}


def test_dict_widget_values_are_positional_only_when_complete() -> None:
    # Frontend 1.58 (recorded in tests/workflow/data/frontend_prompts.json, variants widgets_values_dict*):
    # a dict with one entry per stored widget is read in its key order, any other dict is ignored.
    complete = ui([node(1, "EmptyImage", wv={"a": 9, "b": 7, "c": 2, "d": 3})], [])
    assert ui_to_api(complete, object_info())["1"]["inputs"] == {"width": 9, "height": 7, "batch_size": 2, "color": 3}
    partial = ui([node(1, "EmptyImage", wv={"height": 7, "width": 9})], [])
    assert ui_to_api(partial, object_info())["1"]["inputs"]["width"] == 512


def test_legacy_renames_and_sample_prefix() -> None:
    wf = ui(
        [
            node(1, "T2IAdapterLoader", outputs=[out("CONTROL_NET", "CONTROL_NET")], wv=["t2i.safetensors"]),
            node(3, "KSampler", wv=[1, "fixed", 20, 7, "sample_euler_ancestral", "normal", 1]),
        ],
        [],
    )
    result = ui_to_api(wf, object_info())
    assert result["1"]["class_type"] == "ControlNetLoader"
    assert result["1"]["inputs"] == {"control_net_name": "t2i.safetensors"}
    assert result["3"]["inputs"]["sampler_name"] == "euler_ancestral"


def test_preview_any_writes_no_preview_input() -> None:
    # Frontend 1.5x no longer sends PreviewAny's preview widgets (template_sugar_coated_gummy_style_qwen).
    wf = ui(
        [empty_image(links=[1]), node(2, "PreviewAny", inputs=[inp("source", "*", 1)], wv=[])],
        [[1, 1, 0, 2, 0, "IMAGE"]],
    )
    assert ui_to_api(wf, object_info())["2"]["inputs"] == {"source": ["1", 0]}


def test_converted_widget_gets_link_in_widget_position() -> None:
    wf = ui(
        [
            node(20, "PrimitiveInt", outputs=[out("INT", "INT", [1])], wv=[123, "fixed"]),
            node(2, "EmptyImage", inputs=[inp("height", "INT", 1, widget=True)], wv=[64, 99, 1, 0]),
        ],
        [[1, 20, 0, 2, 0, "INT"]],
    )
    result = ui_to_api(wf, object_info())
    assert result["20"]["inputs"] == {"value": 123}
    assert list(result["2"]["inputs"].items()) == [
        ("width", 64),
        ("height", ["20", 0]),
        ("batch_size", 1),
        ("color", 0),
    ]


def test_primitive_node_value_is_pushed_into_every_target() -> None:
    wf = ui(
        [
            node(
                10,
                "PrimitiveNode",
                outputs=[{"name": "INT", "type": "INT", "links": [1, 2], "widget": {"name": "width"}}],
                wv=[300, "fixed"],
            ),
            node(1, "EmptyImage", inputs=[inp("width", "INT", 1, widget=True)], wv=[64, 64, 1, 0]),
            node(2, "EmptyImage", inputs=[inp("width", "INT", 2, widget=True)], wv=[8, 8, 1, 0]),
        ],
        [[1, 10, 0, 1, 0, "INT"], [2, 10, 0, 2, 0, "INT"]],
    )
    result = ui_to_api(wf, object_info())
    assert "10" not in result
    assert result["1"]["inputs"]["width"] == 300 and result["2"]["inputs"]["width"] == 300
    assert list(result["1"]["inputs"])[0] == "width"


# ---- nodes that never reach the prompt -----------------------------------------------------------


def test_notes_are_dropped_and_titles_set() -> None:
    wf = ui(
        [
            node(1, "Note", wv=["hello"]),
            node(2, "MarkdownNote", wv=["# hi"]),
            empty_image(3, title="Canvas"),
            node(4, "ImageBlur", wv=[1, 1.0]),
            node(5, "ImageInvert"),
        ],
        [],
    )
    result = ui_to_api(wf, object_info())
    assert set(result) == {"3", "4", "5"}
    assert result["3"]["_meta"]["title"] == "Canvas"
    assert result["4"]["_meta"]["title"] == "ImageBlur"  # no display_name: the class name
    assert result["5"]["_meta"]["title"] == "Invert Image"  # the class display_name


def test_muted_node_is_dropped_with_its_dangling_links() -> None:
    wf = ui(
        [empty_image(links=[1]), invert(2, 1, [2], mode=2), save(3, 2)],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    )
    result = ui_to_api(wf, object_info())
    assert set(result) == {"1", "3"}
    assert result["3"]["inputs"] == {"filename_prefix": "t"}


@pytest.mark.parametrize("chain", [1, 2, 3])
def test_bypass_chain_passes_through(chain: int) -> None:
    nodes = [empty_image(links=[1])]
    links = [[1, 1, 0, 10, 0, "IMAGE"]]
    for i in range(chain):
        nodes.append(invert(10 + i, 1 + i, [2 + i], mode=4))
        links.append([2 + i, 10 + i, 0, 10 + i + 1 if i < chain - 1 else 50, 0, "IMAGE"])
    nodes.append(save(50, 1 + chain))
    result = ui_to_api(ui(nodes, links), object_info())
    assert set(result) == {"1", "50"}
    assert result["50"]["inputs"]["images"] == ["1", 0]


def test_bypass_picks_the_input_of_the_target_type() -> None:
    # Slot 0 of the bypassed node is a MASK: the IMAGE consumer gets the first IMAGE input instead.
    bypassed = node(
        2,
        "JoinImageWithAlpha",
        inputs=[inp("alpha", "MASK", 2), inp("image", "IMAGE", 1)],
        outputs=[out("IMAGE", "IMAGE", [3])],
        mode=4,
    )
    mask = node(5, "SolidMask", outputs=[out("MASK", "MASK", [2])], wv=[1.0, 64, 64])
    wf = ui(
        [empty_image(links=[1]), mask, bypassed, save(3, 3)],
        [[1, 1, 0, 2, 1, "IMAGE"], [2, 5, 0, 2, 0, "MASK"], [3, 2, 0, 3, 0, "IMAGE"]],
    )
    assert ui_to_api(wf, object_info())["3"]["inputs"]["images"] == ["1", 0]


def test_bypass_without_a_fitting_input_drops_the_consumer_input() -> None:
    bypassed = node(
        2,
        "VAEDecode",
        inputs=[inp("samples", "LATENT", None), inp("vae", "VAE", None)],
        outputs=[out("IMAGE", "IMAGE", [3])],
        mode=4,
    )
    wf = ui([bypassed, save(3, 3)], [[3, 2, 0, 3, 0, "IMAGE"]])
    assert ui_to_api(wf, object_info())["3"]["inputs"] == {"filename_prefix": "t"}


def test_reroute_chain_resolves_and_unconnected_reroute_drops_input() -> None:
    reroute = lambda i, link_in, links_out: node(  # noqa: E731
        i, "Reroute", inputs=[inp("", "*", link_in)], outputs=[out("", "IMAGE", links_out)]
    )
    wf = ui(
        [
            empty_image(links=[1]),
            reroute(10, 1, [2]),
            reroute(11, 2, [3]),
            save(3, 3),
            reroute(12, None, [4]),
            save(4, 4),
        ],
        [
            [1, 1, 0, 10, 0, "IMAGE"],
            [2, 10, 0, 11, 0, "*"],
            [3, 11, 0, 3, 0, "IMAGE"],
            [4, 12, 0, 4, 0, "IMAGE"],
        ],
    )
    result = ui_to_api(wf, object_info())
    assert set(result) == {"1", "3", "4"}
    assert result["3"]["inputs"]["images"] == ["1", 0]
    assert "images" not in result["4"]["inputs"]


def test_unknown_class_names_node_and_class() -> None:
    wf = ui([empty_image(), node(7, "FancyCustomNode", wv=[1])], [])
    with pytest.raises(UnknownNodeClass) as info:
        ui_to_api(wf, object_info())
    assert info.value.detail == {"node_id": "7", "class_type": "FancyCustomNode", "backend": None}
    assert "node 7" in info.value.message and "FancyCustomNode" in info.value.message


def test_muted_unknown_node_does_not_matter() -> None:
    wf = ui([empty_image(), node(7, "FancyCustomNode", wv=[1], mode=2)], [])
    assert set(ui_to_api(wf, object_info())) == {"1"}


# ---- subgraphs and group nodes --------------------------------------------------------------------

BLUR_SG = "bbbbbbbb-0000-0000-0000-000000000002"
OUTER_SG = "aaaaaaaa-0000-0000-0000-000000000001"


def _subgraph_definitions() -> list[dict[str, Any]]:
    """OUTER: image → ImageInvert(5) → BLUR instance (9) → output; BLUR: ImageBlur(5), radius promoted."""
    blur = {
        "id": BLUR_SG,
        "name": "Blur",
        "inputs": [
            {"id": "i0", "name": "image", "type": "IMAGE", "linkIds": [101]},
            {"id": "i1", "name": "blur_radius", "type": "INT", "linkIds": [102]},
        ],
        "outputs": [{"id": "o0", "name": "IMAGE", "type": "IMAGE", "linkIds": [103]}],
        "widgets": [],
        "nodes": [
            node(
                5,
                "ImageBlur",
                inputs=[inp("image", "IMAGE", 101), inp("blur_radius", "INT", 102, widget=True)],
                outputs=[out("IMAGE", "IMAGE", [103])],
                wv=[1, 2.5],
            ),
        ],
        "links": [
            {
                "id": 101,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 5,
                "target_slot": 0,
                "type": "IMAGE",
            },
            {"id": 102, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 1, "type": "INT"},
            {
                "id": 103,
                "origin_id": 5,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    outer = {
        "id": OUTER_SG,
        "name": "Invert then blur",
        "inputs": [
            {"id": "j0", "name": "image", "type": "IMAGE", "linkIds": [201]},
            {"id": "j1", "name": "radius", "type": "INT", "linkIds": [203]},
        ],
        "outputs": [{"id": "p0", "name": "IMAGE", "type": "IMAGE", "linkIds": [204]}],
        "widgets": [],
        "nodes": [
            invert(5, 201, [202]),
            node(
                9,
                BLUR_SG,
                inputs=[inp("image", "IMAGE", 202), inp("blur_radius", "INT", 203, widget=True)],
                outputs=[out("IMAGE", "IMAGE", [204])],
                wv=[1],
            ),
        ],
        "links": [
            {
                "id": 201,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 5,
                "target_slot": 0,
                "type": "IMAGE",
            },
            {"id": 202, "origin_id": 5, "origin_slot": 0, "target_id": 9, "target_slot": 0, "type": "IMAGE"},
            {"id": 203, "origin_id": -10, "origin_slot": 1, "target_id": 9, "target_slot": 1, "type": "INT"},
            {
                "id": 204,
                "origin_id": 9,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "IMAGE",
            },
        ],
    }
    return [outer, blur]


def _subgraph_workflow(mode_9: int = 0) -> dict[str, Any]:
    instance = lambda i, link_in, link_out, radius, mode=0: node(  # noqa: E731
        i,
        OUTER_SG,
        inputs=[inp("image", "IMAGE", link_in)],
        outputs=[out("IMAGE", "IMAGE", [link_out])],
        wv=[radius],
        mode=mode,
    )
    return ui(
        [
            empty_image(links=[1, 3]),
            instance(9, 1, 2, 7, mode_9),
            save(20, 2),
            instance(12, 3, 4, 11),
            save(21, 4),
        ],
        [
            [1, 1, 0, 9, 0, "IMAGE"],
            [2, 9, 0, 20, 0, "IMAGE"],
            [3, 1, 0, 12, 0, "IMAGE"],
            [4, 12, 0, 21, 0, "IMAGE"],
        ],
        definitions={"subgraphs": _subgraph_definitions()},
    )


def test_nested_subgraphs_flatten_with_per_instance_widget_values() -> None:
    result = ui_to_api(_subgraph_workflow(), object_info())
    # Ids inside definitions that repeat a root id (9) or an earlier definition's (5) are renumbered from
    # last_node_id (99) on load, as the frontend does (subgraphDeduplication.ts): 9 -> 100, 5 -> 101.
    assert set(result) == {"1", "9:5", "9:100:101", "20", "12:5", "12:100:101", "21"}
    assert result["9:5"]["inputs"] == {"image": ["1", 0]}
    assert result["9:100:101"]["inputs"] == {"blur_radius": 7, "sigma": 2.5, "image": ["9:5", 0]}
    assert result["12:100:101"]["inputs"]["blur_radius"] == 11
    assert result["20"]["inputs"]["images"] == ["9:100:101", 0]
    assert result["21"]["inputs"]["images"] == ["12:100:101", 0]
    assert validate_workflow(result, object_info()) == []


def test_bypassed_subgraph_passes_through_and_muted_one_disappears() -> None:
    result = ui_to_api(_subgraph_workflow(mode_9=4), object_info())
    assert not any(k.startswith("9:") for k in result)
    assert result["20"]["inputs"]["images"] == ["1", 0]
    result = ui_to_api(_subgraph_workflow(mode_9=2), object_info())
    assert not any(k.startswith("9:") for k in result)
    assert "images" not in result["20"]["inputs"]


def test_legacy_group_node_expands_with_the_frontends_ids() -> None:
    group = {
        "nodes": [
            {
                "type": "ImageInvert",
                "index": 0,
                "inputs": [{"name": "image", "type": "IMAGE", "link": None}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                "widgets_values": [],
            },
            {
                "type": "ImageBlur",
                "index": 1,
                "inputs": [{"name": "image", "type": "IMAGE", "link": None}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                "widgets_values": [1, 1.0],
            },
        ],
        "links": [[0, 0, 1, 0, 1, "IMAGE"]],
        "external": [],
    }
    wf = ui(
        [
            empty_image(links=[1]),
            node(
                5,
                "workflow>InvertBlur",
                inputs=[inp("image", "IMAGE", 1)],
                outputs=[out("IMAGE", "IMAGE", [2])],
                wv=[4, 0.5],
            ),
            save(6, 2),
        ],
        [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 6, 0, "IMAGE"]],
        extra={"groupNodes": {"InvertBlur": group}},
    )
    result = ui_to_api(wf, object_info())
    # On load the frontend unpacks the group into nodes 100, 101 (after last_node_id 99) and wraps them
    # in a subgraph whose instance is 102 (recorded: variants legacy_group_node*).
    assert set(result) == {"1", "102:100", "102:101", "6"}
    assert result["102:100"]["inputs"] == {"image": ["1", 0]}
    assert result["102:101"]["inputs"] == {"blur_radius": 4, "sigma": 0.5, "image": ["102:100", 0]}
    assert result["6"]["inputs"]["images"] == ["102:101", 0]


# ---- real templates -------------------------------------------------------------------------------

TEMPLATES = [
    "default",
    "image2image",
    "lora",
    "lora_multiple",
    "inpaint_example",
    "hiresfix_latent_workflow",
    "area_composition",
    "controlnet_example",
    "sdxl_simple_example",
    "sdxl_refiner_prompt_example",
    "hidream_e1_1",
    "hidream_e1_full",
    "hunyuan_video_text_to_video",
    "flux1_dev_uso_reference_image_gen",
    "image_flux.1_fill_dev_OneReward",
    "image_qwen_image_instantx_controlnet",
    "image_qwen_image_edit_2509",
    "flux_redux_model_example",
    "esrgan_example",
    "embedding_example",
    "sd3.5_simple_example",
    "flux_schnell",
    "video_wan_vace_flf2v",
    "depth_t2i_adapter",
    "text_to_video_wan",
    "image_to_video_wan",
    "image_qwen_image_instantx_inpainting_controlnet",
]
# Templates using nodes the recorded server lacks (audio nodes): node id and class the error must name.
UNKNOWN_TEMPLATES = {
    "audio_stable_audio_example": ("11", "EmptyLatentAudio"),
    "api_stability_ai_text_to_audio": ("6", "SaveAudioMP3"),
}

needs_templates = pytest.mark.skipif(
    importlib.util.find_spec(TEMPLATES_PACKAGE) is None,
    reason="comfyui-workflow-templates is not installed (pip install -r requirements-dev.txt)",
)


def template(name: str) -> dict[str, Any]:
    path = importlib.resources.files(TEMPLATES_PACKAGE) / "templates" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@needs_templates
@pytest.mark.parametrize("name", TEMPLATES)
def test_real_template_converts(name: str) -> None:
    wf = template(name)
    assert detect_format(wf) == "ui"
    api = to_api(wf, object_info())
    assert api
    for node_id, entry in api.items():
        assert isinstance(entry["class_type"], str) and entry["class_type"] in object_info()
        assert isinstance(entry["inputs"], dict)
        for value in entry["inputs"].values():
            if is_link(value):
                assert value[0] in api, f"{name}: node {node_id} links to missing {value[0]}"
    assert validate_workflow(api, object_info()) == []


@needs_templates
@pytest.mark.parametrize(("name", "expected"), sorted(UNKNOWN_TEMPLATES.items()))
def test_real_template_with_missing_nodes_names_them(name: str, expected: tuple[str, str]) -> None:
    with pytest.raises(UnknownNodeClass) as info:
        to_api(template(name), object_info())
    assert (info.value.detail["node_id"], info.value.detail["class_type"]) == expected


@needs_templates
def test_real_template_details() -> None:
    oi = object_info()
    # PrimitiveNodes push their value into every target, overriding stale values.
    sdxl = to_api(template("sdxl_simple_example"), oi)
    assert sdxl["10"]["inputs"]["steps"] == 25 and sdxl["11"]["inputs"]["steps"] == 25
    assert sdxl["10"]["inputs"]["end_at_step"] == 20 and sdxl["11"]["inputs"]["start_at_step"] == 20
    # Subgraph widget inputs take the instance's values.
    fill = to_api(template("image_flux.1_fill_dev_OneReward"), oi)
    assert fill["48:199"]["inputs"]["expand"] == 0 and fill["48:252"]["inputs"]["blur_radius"] == 31
    assert fill["48:252"]["inputs"]["image"] == ["48:251", 0]
    # A bypassed subgraph instance contributes no node.
    assert not any(":" in k for k in to_api(template("image_qwen_image_edit_2509"), oi))
