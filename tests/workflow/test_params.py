"""Parameter detection, application (every problem path) and structural validation."""

from __future__ import annotations

import copy
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.errors import ParameterError
from workflow.params import (
    SEED_MAX,
    apply_params,
    bump_seed,
    detect_params,
    randomize_seed_if_no_params,
    validate_workflow,
)

ROOT = Path(__file__).resolve().parents[2]


@cache
def object_info() -> dict[str, Any]:
    return json.loads((ROOT / "emulator" / "data" / "object_info.json").read_text())


def load(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "workflows" / name).read_text())


def roles(params: list[dict[str, Any]]) -> dict[str, str]:
    return {p["key"]: p["role"] for p in params if p["role"]}


def img2img() -> dict[str, Any]:
    """LoadImage → VAEEncode → KSampler, positive through ConditioningCombine, plus a LoRA."""
    api = load("sd_txt2img_api.json")
    del api["5"]
    api["10"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}
    api["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    api["12"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "style", "clip": ["13", 1]}}
    api["13"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "x.safetensors",
            "strength_model": 1.0,
            "strength_clip": 1.0,
        },
    }
    api["14"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["12", 0]},
    }
    api["3"]["inputs"].update({"latent_image": ["11", 0], "positive": ["14", 0], "denoise": 0.6})
    return api


# ---- detect_params --------------------------------------------------------------------------------


def test_detect_params_txt2img() -> None:
    params = detect_params(load("sd_txt2img_api.json"), object_info())
    assert [p["key"] for p in params] == [
        "3.seed",
        "3.steps",
        "3.cfg",
        "3.sampler_name",
        "3.scheduler",
        "3.denoise",
        "4.ckpt_name",
        "5.width",
        "5.height",
        "5.batch_size",
        "6.text",
        "7.text",
        "9.filename_prefix",
    ]
    assert roles(params) == {
        "3.seed": "seed",
        "3.steps": "steps",
        "3.cfg": "cfg",
        "3.sampler_name": "sampler",
        "3.scheduler": "scheduler",
        "3.denoise": "denoise",
        "4.ckpt_name": "checkpoint",
        "5.width": "width",
        "5.height": "height",
        "5.batch_size": "batch_size",
        "6.text": "positive_prompt",
        "7.text": "negative_prompt",
    }
    steps = next(p for p in params if p["key"] == "3.steps")
    assert steps | {} == {
        "key": "3.steps",
        "node_id": "3",
        "class_type": "KSampler",
        "title": "KSampler",
        "input": "steps",
        "value": 20,
        "type": "INT",
        "min": 1,
        "max": 10000,
        "step": None,
        "options": None,
        "multiline": None,
        "default": 20,
        "role": "steps",
    }
    text = next(p for p in params if p["key"] == "6.text")
    assert text["type"] == "STRING" and text["multiline"] is True and text["title"] == "Positive Prompt"
    sampler = next(p for p in params if p["key"] == "3.sampler_name")
    assert sampler["type"] == "COMBO" and "euler" in sampler["options"]
    assert next(p for p in params if p["key"] == "3.seed")["max"] == SEED_MAX


def test_detect_params_img2img_follows_conditioning_nodes() -> None:
    params = detect_params(img2img(), object_info())
    r = roles(params)
    assert r["10.image"] == "input_image"
    assert r["3.denoise"] == "denoise"
    assert r["6.text"] == "positive_prompt" and r["12.text"] == "positive_prompt"
    assert r["7.text"] == "negative_prompt"
    assert r["13.lora_name"] == "lora"
    assert not any(k.endswith((".pixels", ".vae", ".model", ".clip")) for k in (p["key"] for p in params))


def test_detect_params_model_free() -> None:
    params = detect_params(load("image_invert_blur_api.json"), object_info())
    assert [p["key"] for p in params] == [
        "1.width",
        "1.height",
        "1.batch_size",
        "1.color",
        "3.blur_radius",
        "3.sigma",
        "4.filename_prefix",
    ]
    assert roles(params) == {"1.width": "width", "1.height": "height", "1.batch_size": "batch_size"}


def test_detect_params_orders_node_ids_numerically() -> None:
    api = {k: {"class_type": "EmptyImage", "inputs": {"width": 1}} for k in ("10", "9", "2:3", "2")}
    assert [p["node_id"] for p in detect_params(api, object_info())] == ["2", "2:3", "9", "10"]


# ---- apply_params ---------------------------------------------------------------------------------


def test_apply_params_both_key_styles_and_underscore_keys() -> None:
    api = load("sd_txt2img_api.json")
    before = copy.deepcopy(api)
    new, applied = apply_params(
        api,
        {
            "6.text": "a cat",
            "3-inputs-steps": 30,
            "_3-node-class_type-info": "KSampler",
            "_note": {"x": 1},
            "3.cfg": 7,
            "5.width": "768",
            "3.denoise": 0.5,
            "3.sampler_name": "dpmpp_2m",
        },
        object_info(),
    )
    assert api == before  # never modified in place
    assert new["6"]["inputs"]["text"] == "a cat" and new["3"]["inputs"]["steps"] == 30
    assert new["5"]["inputs"]["width"] == 768  # numeric strings are accepted and converted
    assert applied == {
        "6.text": "a cat",
        "3.steps": 30,
        "3.cfg": 7,
        "5.width": 768,
        "3.denoise": 0.5,
        "3.sampler_name": "dpmpp_2m",
    }


@pytest.mark.parametrize("value", [-1, "random", "randomize"])
def test_random_seed_within_range(value: Any) -> None:
    new, applied = apply_params(load("sd_txt2img_api.json"), {"3.seed": value}, object_info())
    assert 0 <= applied["3.seed"] <= SEED_MAX and new["3"]["inputs"]["seed"] == applied["3.seed"]


def test_random_seed_respects_a_smaller_max_and_is_reproducible() -> None:
    api = {"1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}}}
    first = apply_params(api, {"1.noise_seed": -1}, object_info(), rng=random.Random(7))[1]
    second = apply_params(api, {"1.noise_seed": -1}, object_info(), rng=random.Random(7))[1]
    assert first == second
    values = {
        apply_params(api, {"1.noise_seed": -1}, object_info(), rng=random.Random(i))[1]["1.noise_seed"]
        for i in range(20)
    }
    assert len(values) > 1
    small = {"1": {"class_type": "IdeogramV3", "inputs": {"seed": 1}}}
    hi = object_info()["IdeogramV3"]["input"]["optional"]["seed"][1]["max"]
    for i in range(20):
        assert 0 <= apply_params(small, {"1.seed": -1}, object_info(), rng=random.Random(i))[1]["1.seed"] <= hi


def test_steps_problem_message_is_actionable() -> None:
    with pytest.raises(ParameterError) as info:
        apply_params(load("sd_txt2img_api.json"), {"3.steps": -5}, object_info())
    assert info.value.problems == [
        {
            "key": "3.steps",
            "node_id": "3",
            "input": "steps",
            "expected": "an integer between 1 and 10000",
            "received": -5,
            "message": "node 3 (KSampler) input 'steps': expected an integer between 1 and 10000, got -5",
        }
    ]
    assert info.value.message == info.value.problems[0]["message"]
    assert info.value.status_code == 422


CASES: list[tuple[str, Any, str]] = [
    ("3.steps", True, "expected an integer between 1 and 10000, got True"),
    ("3.steps", 2.5, "expected an integer"),
    ("3.steps", "twenty", "expected an integer"),
    ("3.cfg", 101, "expected a number between 0.0 and 100.0, got 101"),
    ("3.cfg", False, "expected a number"),
    ("3.cfg", [1, 2, 3], "expected a number"),
    ("3.sampler_name", "nope", 'expected one of "euler"'),
    ("6.text", 5, "expected a string, got 5"),
    ("3.model", "x", 'is connected to node 4 output 0; it cannot be replaced by the value "x"'),
    ("3.model", ["77", 0], "links to node 77, which is not in the workflow"),
    ("3.model", ["4", 9], "which has 3 output(s)"),
    ("99.text", "x", "there is no node 99 in this workflow (existing node ids: 3, 4, 5, 6, 7, 8, 9)"),
    ("3.stepz", 1, "node 3 (KSampler) has no input 'stepz'; its inputs are: model, seed, steps"),
    ("steps", 1, "is not of the form"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), CASES)
def test_each_problem_type(key: str, value: Any, fragment: str) -> None:
    with pytest.raises(ParameterError) as info:
        apply_params(load("sd_txt2img_api.json"), {key: value}, object_info())
    [problem] = info.value.problems
    assert set(problem) == {"key", "node_id", "input", "expected", "received", "message"}
    assert problem["key"] == key
    assert fragment in problem["message"]


def test_boolean_values() -> None:
    api = {
        "1": {"class_type": "GrowMask", "inputs": {"mask": ["2", 0], "expand": 0, "tapered_corners": True}},
        "2": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
    }
    assert apply_params(api, {"1.tapered_corners": "false"}, object_info())[1] == {"1.tapered_corners": False}
    with pytest.raises(ParameterError, match="expected true or false, got 1"):
        apply_params(api, {"1.tapered_corners": 1}, object_info())


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParameterError) as info:
        apply_params(
            load("sd_txt2img_api.json"),
            {"3.steps": 0, "3.cfg": "x", "42.text": "a", "6.txt": "b", "6.text": "ok"},
            object_info(),
        )
    assert [p["key"] for p in info.value.problems] == ["3.steps", "3.cfg", "42.text", "6.txt"]
    assert info.value.message.endswith("(and 3 more)")
    assert info.value.to_dict()["problems"] == info.value.problems


def test_empty_combo_options_accept_any_name() -> None:
    # The recorded object_info has no models: ckpt_name's options are empty.
    new, applied = apply_params(
        load("sd_txt2img_api.json"), {"4.ckpt_name": "sd_xl_base_1.0.safetensors"}, object_info()
    )
    assert new["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    with pytest.raises(ParameterError, match="expected a name"):
        apply_params(load("sd_txt2img_api.json"), {"4.ckpt_name": 3}, object_info())


def test_links_may_replace_links_and_widget_values() -> None:
    api = img2img()
    new, applied = apply_params(api, {"3.positive": ["6", 0], "3-inputs-latent_image": ["11", 0]}, object_info())
    assert new["3"]["inputs"]["positive"] == ["6", 0] and applied["3.latent_image"] == ["11", 0]


def test_optional_input_not_yet_set_can_be_set() -> None:
    api = {"1": {"class_type": "ControlNetApplyAdvanced", "inputs": {"strength": 1.0}}}
    assert "1.vae" in str(apply_params(api, {"1.vae": ["1", 0]}, object_info())[1])


def test_without_object_info_types_come_from_current_values() -> None:
    api = load("image_invert_blur_api.json")
    new, _ = apply_params(api, {"3.sigma": 3, "4.filename_prefix": "x"}, None)
    assert new["3"]["inputs"]["sigma"] == 3
    with pytest.raises(ParameterError, match="expected an integer"):
        apply_params(api, {"3.blur_radius": "big"}, None)


# ---- seeds when nothing changes -------------------------------------------------------------------


def test_bump_seed_and_randomize_if_no_params() -> None:
    api = load("sd_txt2img_api.json")
    new, applied = bump_seed(api, random.Random(1), object_info())
    assert list(applied) == ["3.seed"] and new["3"]["inputs"]["seed"] == applied["3.seed"] != 42
    assert api["3"]["inputs"]["seed"] == 42
    assert (
        randomize_seed_if_no_params(api, {"_3-node-class_type-info": "KSampler"}, object_info(), rng=random.Random(1))[
            1
        ]
        == applied
    )
    assert randomize_seed_if_no_params(api, {"3.steps": 5}, object_info())[1] == {"3.steps": 5}
    assert bump_seed(load("image_invert_blur_api.json"))[1] == {}


# ---- validate_workflow ----------------------------------------------------------------------------


def test_validate_workflow_problems() -> None:
    api = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
        "2": {"inputs": {}},
        "3": {"class_type": "Mystery", "inputs": {}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["1", 3]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["1", "0"]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["1", -1]}},
        "8": {"class_type": "SaveImage", "inputs": []},
    }
    problems = validate_workflow(api, object_info())
    messages = [p["message"] for p in problems]
    assert [p["node_id"] for p in problems] == ["2", "3", "4", "5", "6", "7", "8"]
    assert "node 2 has no class_type" in messages[0]
    assert "'Mystery', which is not installed" in messages[1]
    assert "links to node 9, which is not in the workflow" in messages[2]
    assert "which has 1 output(s)" in messages[3]
    assert "malformed link" in messages[4]
    assert "output slots start at 0" in messages[5]
    assert "inputs is not an object" in messages[6]
    assert all(set(p) == {"key", "node_id", "input", "expected", "received", "message"} for p in problems)
    assert validate_workflow(load("sd_txt2img_api.json"), object_info()) == []
