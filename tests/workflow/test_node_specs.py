"""ComfyUI node specs: the one place conversion, detection and validation ask about object_info."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from workflow import format as workflow_format
from workflow import params as workflow_params
from workflow.node_specs import (
    MISSING,
    has_control_after_generate,
    has_upload_button,
    input_default,
    input_specs,
    is_multiline,
    is_seed_input,
    is_widget_spec,
    ordered_inputs,
    output_name,
    output_types,
    spec_declared_default,
    spec_max,
    spec_min,
    spec_options,
    spec_step,
    spec_type,
    widget_names,
)

ROOT = Path(__file__).resolve().parents[2]


@cache
def object_info() -> dict[str, Any]:
    return json.loads((ROOT / "emulator" / "data" / "object_info.json").read_text())


def test_input_order_follows_input_order_then_optional() -> None:
    class_def = {
        "input": {
            "required": {"b": ["INT", {}], "a": ["MODEL", {}], "late": ["STRING", {}]},
            "optional": {"z": ["FLOAT", {}], "y": ["BOOLEAN", {}]},
        },
        "input_order": {"required": ["a", "b"], "optional": ["y", "z"]},
    }
    assert list(ordered_inputs(class_def)) == [
        ("required", "a", ["MODEL", {}]),
        ("required", "b", ["INT", {}]),
        ("required", "late", ["STRING", {}]),  # missing from input_order: appended, never dropped
        ("optional", "y", ["BOOLEAN", {}]),
        ("optional", "z", ["FLOAT", {}]),
    ]
    assert list(input_specs(object_info()["KSampler"])) == [
        "model",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "latent_image",
        "denoise",
    ]
    assert input_specs(None) == {} and input_specs({}) == {}


def test_types_options_and_ranges_of_real_specs() -> None:
    specs = input_specs(object_info()["KSampler"])
    assert spec_type(specs["model"]) == "MODEL"
    assert spec_type(specs["sampler_name"]) == "COMBO"
    assert "euler" in (spec_options(specs["sampler_name"]) or [])
    assert spec_options(specs["steps"]) is None
    assert (spec_min(specs["steps"]), spec_max(specs["steps"]), spec_declared_default(specs["steps"])) == (1, 10000, 20)
    assert spec_step(specs["cfg"]) == 0.1
    assert spec_options(["COMBO", {"options": ["a", "b"]}]) == ["a", "b"]
    assert spec_type(["COMBO", {"options": ["a"]}]) == "COMBO"
    # An empty combo (a server without models) is still a combo, with no choices.
    assert spec_options(input_specs(object_info()["CheckpointLoaderSimple"])["ckpt_name"]) == []
    for broken in (None, [], "INT", 3):
        assert spec_type(broken) is None and spec_options(broken) is None and not is_widget_spec(broken)
    assert is_multiline(input_specs(object_info()["CLIPTextEncode"])["text"])
    assert not is_multiline(specs["steps"])


def test_widget_or_link() -> None:
    specs = input_specs(object_info()["KSampler"])
    assert is_widget_spec(specs["seed"]) and is_widget_spec(specs["sampler_name"])
    assert not is_widget_spec(specs["model"]) and not is_widget_spec(specs["positive"])
    assert not is_widget_spec(["INT", {"forceInput": True}])
    assert is_widget_spec(["MARKDOWN", {}])
    assert widget_names(object_info()["CLIPTextEncode"]) == {"text"}


def test_seeds_control_after_generate_and_upload_flags() -> None:
    oi = object_info()
    ksampler = input_specs(oi["KSampler"])
    assert has_control_after_generate("seed", ksampler["seed"])
    # An explicit False on a seed means no control widget (the frontend's useIntWidget reads it with `??`).
    assert not has_control_after_generate("seed", ["INT", {"control_after_generate": False}])
    assert has_control_after_generate("value", input_specs(oi["PrimitiveInt"])["value"])
    assert not has_control_after_generate("steps", ksampler["steps"])
    assert is_seed_input("noise_seed", None) and not is_seed_input("steps", ksampler["steps"])
    assert has_upload_button(input_specs(oi["LoadImage"])["image"])
    assert has_upload_button(["COMBO", {"animated_image_upload": True}])
    assert not has_upload_button(ksampler["sampler_name"])


def test_defaults_the_frontend_gives_empty_widgets() -> None:
    assert input_default(["INT", {"default": 7, "min": 3}]) == 7
    assert input_default(["INT", {"min": 3}]) == 3
    assert input_default(["FLOAT", {}]) == 0
    assert input_default([["x", "y"], {}]) == "x"
    assert input_default(["COMBO", {"options": ["p", "q"]}]) == "p"
    assert input_default([[], {}]) is MISSING
    assert input_default(["BOOLEAN", {}]) is False
    assert input_default(["STRING", {}]) == "" and input_default(["MARKDOWN", {}]) == ""
    assert input_default(["MODEL", {}]) is MISSING


def test_outputs() -> None:
    loader = object_info()["CheckpointLoaderSimple"]
    assert output_types(loader) == ["MODEL", "CLIP", "VAE"]
    assert output_name(loader, 2) == "vae"
    assert output_name(loader, 3) is None and output_name(loader, -1) is None
    assert output_types(None) == []


def test_format_and_params_ask_node_specs_not_each_other() -> None:
    """The back-and-forth this module ended: params no longer imports format's helpers, nor the reverse."""
    params_source = Path(workflow_params.__file__).read_text()
    format_source = Path(workflow_format.__file__).read_text()
    assert "from workflow.format" not in params_source
    assert "from workflow.params" not in format_source
    convert_source = Path(workflow_format.__file__).with_name("ui_convert.py").read_text()  # format's UI half
    assert "from workflow.params" not in convert_source
    assert "from workflow.node_specs import" in params_source and "from workflow.node_specs import" in convert_source
