"""ComfyUI's prompt validation (``execution.validate_prompt`` of 0.3.64), replayed against object_info.

The emulator must reject exactly what a real ComfyUI rejects, with the same 400 body, because ComfyGate
passes those bodies through to its users. The structure and wording below mirror ComfyUI's code; the
recorded ground truth is ``transcripts/20_validation_errors.json``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

# A custom validator gets the input value and returns True, or an error text (ComfyUI's VALIDATE_INPUTS).
CustomValidator = Callable[[Any], "bool | str"]
ValidationResult = tuple[bool, "dict[str, Any] | None", list[str], dict[str, Any]]


def is_link(value: Any) -> bool:
    """A ``[node_id, slot]`` pair is a link; ComfyUI decides by shape, not by content."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def input_spec(class_info: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """Return (type, category, extra options) of one input, as ComfyUI's ``get_input_info`` does."""
    inputs = class_info.get("input", {})
    for category in ("required", "optional", "hidden"):
        spec = inputs.get(category, {}).get(name)
        if spec is not None:
            if category == "hidden":
                return spec, category, {}
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, extra
    return None, None, {}


def _types_match(received: str, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input``: ``*`` matches all, otherwise comma-separated type sets."""
    if isinstance(expected, list):
        expected = "COMBO"
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == "*" or expected == "*" or received == expected:
        return True
    return set(received.split(",")).issubset(set(expected.split(",")))


def _combo_options(input_type: Any, extra: dict[str, Any]) -> list[Any] | None:
    if isinstance(input_type, list):
        return input_type
    if input_type == "COMBO":
        return list(extra.get("options", []))
    return None


class _Validator:
    """One validation pass over a prompt; ``validated`` memoises node results like ComfyUI does."""

    def __init__(
        self,
        prompt: dict[str, Any],
        object_info: dict[str, Any],
        custom: dict[str, dict[str, CustomValidator]],
    ) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.custom = custom
        self.validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}

    def validate_inputs(self, unique_id: str) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        class_info = self.object_info[class_type]
        order = class_info.get("input_order", {})
        names = list(order.get("required", [])) + list(order.get("optional", []))
        for category in ("required", "optional"):
            for name in class_info.get("input", {}).get(category, {}):
                if name not in names:
                    names.append(name)
        custom = self.custom.get(class_type, {})
        errors: list[dict[str, Any]] = []
        valid = True

        for x in names:
            input_type, category, extra = input_spec(class_info, x)
            info = [input_type, extra]
            if x not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{x}",
                            "extra_info": {"input_name": x},
                        }
                    )
                continue
            val = inputs[x]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                o_id = val[0]
                # A dangling link raises KeyError here, exactly like ComfyUI (exception_during_validation).
                o_class_type = self.prompt[o_id]["class_type"]
                outputs = self.object_info[o_class_type].get("output", [])
                received_type = outputs[val[1]]
                if not _types_match(received_type, input_type):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": (f"{x}, received_type({received_type}) mismatch input_type({input_type})"),
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    r = self.validate_inputs(o_id)
                    if r[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 - mirrors ComfyUI's catch-all
                    valid = False
                    self.validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": x,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": _full_type_name(type(ex)),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
            else:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                try:
                    if input_type == "INT":
                        val = int(val)
                    elif input_type == "FLOAT":
                        val = float(val)
                    elif input_type == "STRING":
                        val = str(val)
                    elif input_type == "BOOLEAN":
                        val = bool(val)
                    inputs[x] = val
                except Exception as ex:  # noqa: BLE001
                    errors.append(
                        {
                            "type": "invalid_input_type",
                            "message": f"Failed to convert an input value to a {input_type} value",
                            "details": f"{x}, {val}, {ex}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "received_value": val,
                                "exception_message": str(ex),
                            },
                        }
                    )
                    continue
                if x in custom:
                    continue
                if "min" in extra and isinstance(val, int | float) and val < extra["min"]:
                    errors.append(
                        {
                            "type": "value_smaller_than_min",
                            "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                if "max" in extra and isinstance(val, int | float) and val > extra["max"]:
                    errors.append(
                        {
                            "type": "value_bigger_than_max",
                            "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                            "details": f"{x}",
                            "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                        }
                    )
                    continue
                options = _combo_options(input_type, extra)
                if options is not None and val not in options:
                    input_config: Any = info
                    if len(options) > 20:
                        list_info = f"(list of length {len(options)})"
                        input_config = None
                    else:
                        list_info = str(options)
                    errors.append(
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {
                                "input_name": x,
                                "input_config": input_config,
                                "received_value": val,
                            },
                        }
                    )
                    continue

        for x, check in custom.items():
            if x not in inputs or is_link(inputs[x]):
                continue
            r = check(inputs[x])
            if r is not True:
                details = f"{x}"
                if r is not False:
                    details += f" - {r}"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": x},
                    }
                )

        ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
        self.validated[unique_id] = ret
        return ret


def _full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


def validate_prompt(
    prompt: dict[str, Any],
    object_info: dict[str, Any],
    custom: dict[str, dict[str, CustomValidator]] | None = None,
    partial_execution_targets: list[str] | None = None,
) -> ValidationResult:
    """Return ``(ok, error, good_outputs, node_errors)`` like ComfyUI; non-dict prompts raise (→ 500)."""
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            error = {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }
            return False, error, [], {}
        class_type = prompt[x]["class_type"]
        class_info = object_info.get(class_type) if isinstance(class_type, str) else None
        if class_info is None:
            error = {
                "type": "invalid_prompt",
                "message": f"Cannot execute because node {class_type} does not exist.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }
            return False, error, [], {}
        if class_info.get("output_node") is True:
            if partial_execution_targets is None or x in partial_execution_targets:
                outputs.append(x)

    if not outputs:
        error = {
            "type": "prompt_no_outputs",
            "message": "Prompt has no outputs",
            "details": "",
            "extra_info": {},
        }
        return False, error, [], {}

    v = _Validator(prompt, object_info, custom or {})
    good_outputs: list[str] = []
    errors: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        try:
            valid, reasons, _ = v.validate_inputs(o)
        except Exception as ex:  # noqa: BLE001 - ComfyUI reports any exception as a validation error
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }
            ]
            v.validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.append(o)
            continue
        errors.append((o, reasons))
        for node_id, result in v.validated.items():
            if result[0] is not True and len(result[1]) > 0:
                if node_id not in node_errors:
                    node = prompt.get(node_id)
                    node_errors[node_id] = {
                        "errors": result[1],
                        "dependent_outputs": [],
                        "class_type": node["class_type"] if isinstance(node, dict) else None,
                    }
                node_errors[node_id]["dependent_outputs"].append(o)

    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in errors for e in errs)
        error = {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        }
        return False, error, [], node_errors
    return True, None, good_outputs, node_errors
