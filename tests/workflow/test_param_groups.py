"""Parameters as the user sees a workflow: grouped under subgraph nodes, App Mode inputs first."""

from __future__ import annotations

from typing import Any

from tests.workflow import ui_variants
from workflow.param_groups import arrange_params, display_node
from workflow.params import apply_params, detect_params, parse_param_key
from workflow.ui_convert import convert_ui


def _params(template: str) -> tuple[Any, list[dict[str, Any]]]:
    oi = ui_variants.object_info()
    conversion = convert_ui(ui_variants.template(template), oi)
    return conversion, arrange_params(detect_params(conversion.api, oi), conversion.subgraph_titles, conversion.exposed)


def test_parameters_inside_a_subgraph_are_grouped_under_the_node_the_user_sees() -> None:
    conversion, params = _params("flux_dev_checkpoint_example.json")
    assert conversion.subgraph_titles == {"56": "Text to Image (Flux.1 Dev)"}
    inner = [p for p in params if p["node_id"].startswith("56:")]
    assert inner and all(p["group"] == {"node_id": "56", "title": "Text to Image (Flux.1 Dev)"} for p in inner)
    assert all("group" not in p for p in params if ":" not in p["node_id"])


def test_nested_subgraph_parameters_belong_to_the_root_instance() -> None:
    conversion, params = _params("templates-1_click_multiple_scene_angles-v1.0.json")
    nested = [p for p in params if p["node_id"].count(":") == 2]
    assert nested
    for p in nested:
        assert p["group"]["node_id"] == p["node_id"].split(":")[0]
        assert p["group"]["title"] == conversion.subgraph_titles[p["group"]["node_id"]]
    assert display_node("65:33:14") == "65"


def test_app_mode_inputs_come_first_in_the_authors_order() -> None:
    # extra.linearData.inputs = [["6","text"],["58","width"],["58","height"],["73","strength_model"],
    # ["58","batch_size"],["3","steps"]]: nodes inside subgraph 76, named by their own ids.
    conversion, params = _params("template_qwen_image_illustration_lora.json")
    assert conversion.exposed[0] == ("6", "text")
    first = [p["key"] for p in params[:6]]
    assert first == [
        "76:6.text",
        "76:58.width",
        "76:58.height",
        "76:73.strength_model",
        "76:58.batch_size",
        "76:3.steps",
    ]
    assert all(p["exposed"] for p in params[:6]) and not any(p.get("exposed") for p in params[6:])


def test_app_mode_entries_by_widget_id_and_unknown_ones() -> None:
    params = [
        {"key": "12:5.prompt", "node_id": "12:5"},
        {"key": "7.seed", "node_id": "7"},
        {"key": "12:9.seed", "node_id": "12:9"},
    ]
    exposed = [("0a1b-uuid:5:prompt", "prompt"), ("404", "text"), ("9", "seed"), ("7", "seed")]
    keys = [p["key"] for p in arrange_params(params, {"12": "Sub"}, exposed)]
    assert keys == ["12:5.prompt", "12:9.seed", "7.seed"]


def test_colon_id_keys_in_both_forms() -> None:
    assert parse_param_key("12:5.text") == ("12:5", "text")
    assert parse_param_key("12:5-inputs-text") == ("12:5", "text")
    assert parse_param_key("12:7:3.combo.nested") == ("12:7:3", "combo.nested")
    oi = ui_variants.object_info()
    api = convert_ui(ui_variants.template("flux_dev_checkpoint_example.json"), oi).api
    text_node = next(k for k, v in api.items() if v["class_type"] == "CLIPTextEncode")
    sampler = next(k for k, v in api.items() if v["class_type"] == "KSampler")
    result, applied = apply_params(api, {f"{text_node}.text": "a fox", f"{sampler}-inputs-steps": 4}, oi)
    assert result[text_node]["inputs"]["text"] == "a fox" and result[sampler]["inputs"]["steps"] == 4
    assert applied == {f"{text_node}.text": "a fox", f"{sampler}.steps": 4}
