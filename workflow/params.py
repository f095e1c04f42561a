"""Workflow parameters: what a caller may change in an API workflow, and applying their changes safely.

Pure functions over API-format workflows (see `workflow_format.to_api`) and ComfyUI's `object_info`.
Every check happens before a prompt reaches a backend, so callers get one error listing every problem
in terms they can act on, instead of ComfyUI's first `node_errors` entry.

Decisions:
- Keys: `"6.text"` and ViewComfy's `"6-inputs-text"` both address `workflow["6"]["inputs"]["text"]`;
  keys starting with `_` are context only and skipped. `applied` is keyed by the `"6.text"` form.
- Types are strict but friendly: INT accepts ints, integral floats (20.0) and numeric strings ("20"),
  never bools; FLOAT accepts ints, floats and numeric strings, never bools; BOOLEAN accepts bools and
  "true"/"false"; STRING accepts strings only. Ranges are inclusive (`min`/`max` of the spec).
- COMBO values must be in the options, except when the recorded options list is empty (a server
  without models): then any string is accepted.
- A linked input (`["4", 0]`) is only replaced by another link to an existing node; a scalar for it is
  refused, so a stray value cannot silently cut the graph. A link may replace a widget value.
- Seeds (`seed`, `noise_seed`, or inputs whose spec has `control_after_generate`): `-1` or `"random"`
  becomes a fresh random value in 0..max (max defaults to 2**64-1, ComfyUI's seed max).
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from core.errors import ParameterError
from workflow.node_specs import (
    SEED_INPUTS,
    display_name,
    has_control_after_generate,
    input_specs,
    is_multiline,
    is_seed_input,
    is_widget_spec,
    output_name,
    output_types,
    spec_declared_default,
    spec_max,
    spec_min,
    spec_options,
    spec_step,
    spec_type,
)

# One generator for the values a parameter asks to be random: a new random.Random() seeds itself from
# os.urandom (~30 µs) on every submission.
_RNG = random.Random()
SEED_MAX = 0xFFFFFFFFFFFFFFFF
VIEWCOMFY_KEY = re.compile(r"^(?P<node>.+?)-inputs-(?P<input>.+)$")
RANDOM_SEED_VALUES = (-1, "-1", "random", "randomize")
SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider", "DualCFGGuider"})
SINGLE_CONDITIONING_GUIDERS = {"BasicGuider": "conditioning"}
NAME_ROLES = {
    "seed": "seed",
    "noise_seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler_name": "sampler",
    "scheduler": "scheduler",
    "denoise": "denoise",
    "ckpt_name": "checkpoint",
    "lora_name": "lora",
}
SIZE_INPUTS = {"width": "width", "height": "height", "batch_size": "batch_size", "length": "length"}
MAX_FOLLOW = 16


# --------------------------------------------------------------------------------------------------
# helpers


def is_link(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    """True for an API-format link `["node_id", slot]`."""
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def node_sort_key(node_id: str) -> tuple[Any, ...]:
    """Numeric order for ids like "10" and subgraph ids like "9:5" (non-numeric ids last)."""
    parts = str(node_id).split(":")
    if all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts), "")
    return (1, (), str(node_id))


def _seed_max(spec: Any) -> int:
    """The largest seed an input takes (its spec's max, else ComfyUI's 2**64-1)."""
    hi = spec_max(spec)
    return SEED_MAX if hi is None else int(hi)


def _title(node: dict[str, Any], class_def: dict[str, Any] | None) -> str:
    meta = node.get("_meta") or {}
    if meta.get("title"):
        return str(meta["title"])
    if display_name(class_def):
        return str(display_name(class_def))
    return str(node.get("class_type", "?"))


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INT"
    if isinstance(value, float):
        return "FLOAT"
    if isinstance(value, str):
        return "STRING"
    return type(value).__name__.upper()


def _ordered_input_names(node: dict[str, Any], class_def: dict[str, Any] | None) -> list[str]:
    names = [n for n in input_specs(class_def) if n in node.get("inputs", {})]
    names += [n for n in node.get("inputs", {}) if n not in names]
    return names


# --------------------------------------------------------------------------------------------------
# roles


def _text_inputs(node: dict[str, Any], class_def: dict[str, Any] | None) -> list[str]:
    """Prompt inputs of a text encoder: multiline (or `text`) STRING inputs holding a value."""
    specs = input_specs(class_def)
    names = []
    for name, value in node.get("inputs", {}).items():
        spec = specs.get(name)
        if is_link(value) or not isinstance(value, str):
            continue
        if spec is not None and spec_type(spec) == "STRING" and (is_multiline(spec) or name == "text"):
            names.append(name)
    return names


@dataclass(slots=True)
class _ConditioningWalk:
    """Follows conditioning links upstream from a sampler, noting which text inputs feed which role."""

    api: dict[str, Any]
    object_info: dict[str, Any]
    found: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def follow(self, link: Any, role: str, depth: int, seen: set[tuple[str, int]]) -> None:
        if not is_link(link) or depth > MAX_FOLLOW:
            return
        node_id, slot = str(link[0]), int(link[1])
        if (node_id, slot) in seen or node_id not in self.api:
            return
        seen.add((node_id, slot))
        node = self.api[node_id]
        class_def = self.object_info.get(node.get("class_type", ""))
        outputs = output_types(class_def)
        if slot >= len(outputs) or outputs[slot] != "CONDITIONING":
            return
        for name in _text_inputs(node, class_def):
            self.found.setdefault((node_id, name), set()).add(role)
        inputs = node.get("inputs", {})
        out_name = output_name(class_def, slot)
        if out_name in ("positive", "negative") and out_name in inputs:
            self.follow(inputs[out_name], role, depth + 1, seen)
            return
        specs = input_specs(class_def)
        for name, value in inputs.items():
            if spec_type(specs.get(name)) == "CONDITIONING":
                self.follow(value, role, depth + 1, seen)


def _prompt_roles(api: dict[str, Any], object_info: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Find the text inputs that end up as a sampler's positive / negative conditioning."""
    walk = _ConditioningWalk(api, object_info)
    for node in api.values():
        class_type = node.get("class_type")
        inputs = node.get("inputs", {})
        if class_type in SAMPLERS:
            for role in ("positive", "negative"):
                walk.follow(inputs.get(role), role, 0, set())
        elif class_type in SINGLE_CONDITIONING_GUIDERS:
            walk.follow(inputs.get(SINGLE_CONDITIONING_GUIDERS[class_type]), "positive", 0, set())
    return {key: f"{roles.pop()}_prompt" for key, roles in walk.found.items() if len(roles) == 1}


def _role(class_type: str, name: str, spec: Any, prompt_roles: dict[tuple[str, str], str], node_id: str) -> str | None:
    if (node_id, name) in prompt_roles:
        return prompt_roles[(node_id, name)]
    if class_type == "LoadImage" and name == "image":
        return "input_image"
    if name in NAME_ROLES:
        return NAME_ROLES[name]
    if name in SIZE_INPUTS and class_type.startswith("Empty") and ("Latent" in class_type or "Image" in class_type):
        return SIZE_INPUTS[name]
    if spec is not None and has_control_after_generate(name, spec) and spec_type(spec) == "INT":
        return "seed" if name in SEED_INPUTS else None
    return None


# --------------------------------------------------------------------------------------------------
# detection


def detect_params(api: dict[str, Any], object_info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every editable (non-link) input of an API workflow, with its spec and an obvious role if any.

    Each item: key ("6.text"), node_id, class_type, title, input, value, type, min, max, step, options,
    multiline, default, role (None when unknown). Ordered by node id (numeric), then input_order.
    """
    prompt_roles = _prompt_roles(api, object_info)
    params: list[dict[str, Any]] = []
    for node_id in sorted(api, key=node_sort_key):
        node = api[node_id]
        class_type = str(node.get("class_type", ""))
        class_def = object_info.get(class_type)
        specs = input_specs(class_def)
        for name in _ordered_input_names(node, class_def):
            value = node["inputs"][name]
            if is_link(value):
                continue
            spec = specs.get(name)
            kind = spec_type(spec) or _value_type(value)
            params.append(
                {
                    "key": f"{node_id}.{name}",
                    "node_id": str(node_id),
                    "class_type": class_type,
                    "title": _title(node, class_def),
                    "input": name,
                    "value": value,
                    "type": kind,
                    "min": spec_min(spec),
                    "max": spec_max(spec),
                    "step": spec_step(spec),
                    "options": spec_options(spec),
                    "multiline": is_multiline(spec) if kind == "STRING" else None,
                    "default": spec_declared_default(spec),
                    "role": _role(class_type, name, spec, prompt_roles, str(node_id)),
                }
            )
    return params


# --------------------------------------------------------------------------------------------------
# applying


def parse_param_key(key: str) -> tuple[str, str] | None:
    """Split "6.text" or ViewComfy's "6-inputs-text" into (node_id, input); None if neither."""
    match = VIEWCOMFY_KEY.match(key)
    if match:
        return match.group("node"), match.group("input")
    node_id, dot, name = key.partition(".")
    if dot and node_id and name:
        return node_id, name
    return None


def _problem(key: str, node_id: str | None, name: str | None, expected: Any, received: Any, message: str) -> dict:
    return {
        "key": key,
        "node_id": node_id,
        "input": name,
        "expected": expected,
        "received": received,
        "message": message,
    }


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" between {lo} and {hi}"
    if lo is not None:
        return f" of at least {lo}"
    if hi is not None:
        return f" of at most {hi}"
    return ""


Coerced = tuple[Any, str | None, str]  # (value to store, error or None, what was expected)


def _in_range(value: Any, spec: Any, expected: str) -> Coerced:
    lo, hi = spec_min(spec), spec_max(spec)
    if lo is not None and value < lo or hi is not None and value > hi:
        return value, "out of range", expected
    return value, None, expected


def _coerce_int(spec: Any, value: Any) -> Coerced:
    expected = f"an integer{_range_text(spec_min(spec), spec_max(spec))}"
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return value, "not an integer", expected
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return value, "wrong type", expected
    return _in_range(value, spec, expected)


def _coerce_float(spec: Any, value: Any) -> Coerced:
    expected = f"a number{_range_text(spec_min(spec), spec_max(spec))}"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return value, "not a number", expected
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, "wrong type", expected
    if value != value or value in (float("inf"), float("-inf")):
        return value, "not finite", expected
    return _in_range(value, spec, expected)


def _coerce_boolean(spec: Any, value: Any) -> Coerced:
    expected = "true or false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        return value, "wrong type", expected
    return value, None, expected


def _coerce_string(spec: Any, value: Any) -> Coerced:
    return value, None if isinstance(value, str) else "wrong type", "a string"


def _coerce_combo(spec: Any, value: Any) -> Coerced:
    options = spec_options(spec) or []
    if not options:
        expected = "a name (the backend did not list the available ones)"
        return value, None if isinstance(value, str) else "wrong type", expected
    shown = ", ".join(_describe(o) for o in options[:12]) + (" ..." if len(options) > 12 else "")
    expected = f"one of {shown}"
    if value not in options or isinstance(value, bool):
        return value, "not an option", expected
    return value, None, expected


_COERCERS: dict[str, Callable[[Any, Any], Coerced]] = {
    "INT": _coerce_int,
    "FLOAT": _coerce_float,
    "BOOLEAN": _coerce_boolean,
    "STRING": _coerce_string,
    "COMBO": _coerce_combo,
}


def _coerce(kind: str, spec: Any, value: Any) -> Coerced:
    """Check one value against its input type: (value to store, error or None, what was expected)."""
    coerce = _COERCERS.get(kind)
    if coerce is None:
        return value, None, f"a {kind} value"  # a type ComfyGate does not model: ComfyUI checks it
    return coerce(spec, value)


class _Refused(Exception):
    """One parameter that cannot be applied; carries its problem entry."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(problem["message"])
        self.problem = problem


@dataclass(slots=True)
class _Target:
    """The input a parameter key addresses, once it is known to exist."""

    node_id: str
    name: str
    class_type: str
    spec: Any
    inputs: dict[str, Any]

    @property
    def where(self) -> str:
        return f"node {self.node_id} ({self.class_type}) input '{self.name}'"


def _locate(api: dict[str, Any], object_info: dict[str, Any] | None, key: str, existing: str) -> _Target:
    """The node and input a key addresses, or _Refused saying which part does not exist."""
    parsed = parse_param_key(key)
    if parsed is None:
        raise _Refused(
            _problem(
                key,
                None,
                None,
                '"<node_id>.<input>" or "<node_id>-inputs-<input>"',
                key,
                f'parameter key {key!r} is not of the form "6.text" or "6-inputs-text"',
            )
        )
    node_id, name = parsed
    node = api.get(node_id)
    if not isinstance(node, dict):
        raise _Refused(
            _problem(
                key,
                node_id,
                name,
                f"one of the node ids {existing}",
                node_id,
                f"parameter {key!r}: there is no node {node_id} in this workflow (existing node ids: {existing})",
            )
        )
    class_type = str(node.get("class_type", "?"))
    specs = input_specs((object_info or {}).get(class_type))
    inputs = node.setdefault("inputs", {})
    valid = list(dict.fromkeys([*specs, *inputs]))
    if name not in valid:
        raise _Refused(
            _problem(
                key,
                node_id,
                name,
                f"one of the inputs {', '.join(valid)}",
                name,
                f"node {node_id} ({class_type}) has no input '{name}'; its inputs are: {', '.join(valid) or '(none)'}",
            )
        )
    return _Target(node_id, name, class_type, specs.get(name), inputs)


def _new_value(
    api: dict[str, Any], object_info: dict[str, Any] | None, key: str, target: _Target, value: Any, rng: random.Random
) -> Any:
    """The value to store for one parameter (a link, a fresh seed, or the coerced value), or _Refused."""
    name, spec, inputs = target.name, target.spec, target.inputs
    current: Any = inputs.get(name)
    if is_link(value):
        link = [str(value[0]), int(value[1])]
        problem = _check_link(api, object_info, link)
        if problem:
            raise _Refused(
                _problem(
                    key, target.node_id, name, "a link to an existing node output", value, f"{target.where}: {problem}"
                )
            )
        return link
    if is_link(current):
        raise _Refused(
            _problem(
                key,
                target.node_id,
                name,
                f'a link like ["{current[0]}", {current[1]}]',
                value,
                f"{target.where} is connected to node {current[0]} output {current[1]}; it cannot be "
                f"replaced by the value {_describe(value)} (send a link like "
                f'["{current[0]}", {current[1]}] or edit the workflow)',
            )
        )
    kind = spec_type(spec) if spec is not None else (_value_type(current) if name in inputs else None)
    if is_seed_input(name, spec) and (value in RANDOM_SEED_VALUES and not isinstance(value, bool)):
        value = rng.randint(0, _seed_max(spec))
    if kind is None:
        return value
    coerced, error, expected = _coerce(kind, spec, value)
    if error:
        raise _Refused(
            _problem(
                key,
                target.node_id,
                name,
                expected,
                value,
                f"{target.where}: expected {expected}, got {_describe(value)}",
            )
        )
    if isinstance(current, dict) and "__value__" in current and isinstance(coerced, list):
        coerced = {"__value__": coerced}
    return coerced


def apply_params(
    api: dict[str, Any],
    params: dict[str, Any],
    object_info: dict[str, Any] | None,
    *,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (a deep copy of `api` with `params` applied, {"node.input": value actually set}).

    Raises ParameterError listing every problem at once; `api` itself is never modified.
    """
    rng = rng or _RNG
    result = copy.deepcopy(api)
    applied: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    existing = ", ".join(sorted(result, key=node_sort_key))
    for key, value in params.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        try:
            target = _locate(result, object_info, key, existing)
            new = _new_value(result, object_info, key, target, value, rng)
        except _Refused as refused:
            problems.append(refused.problem)
            continue
        target.inputs[target.name] = new
        applied[f"{target.node_id}.{target.name}"] = new
    if problems:
        raise ParameterError(problems)
    return result, applied


def _check_link(api: dict[str, Any], object_info: dict[str, Any] | None, link: list[Any]) -> str | None:
    """Why a link cannot point where it points, or None when it can."""
    origin, slot = str(link[0]), link[1]
    if origin not in api or not isinstance(api[origin], dict):
        existing = ", ".join(sorted(api, key=node_sort_key))
        return f"links to node {origin}, which is not in the workflow (existing node ids: {existing})"
    if slot < 0:
        return f"links to output {slot} of node {origin}; output slots start at 0"
    class_def = (object_info or {}).get(str(api[origin].get("class_type")))
    if class_def is not None:
        outputs = output_types(class_def)
        if slot >= len(outputs):
            return (
                f"links to output {slot} of node {origin} ({api[origin].get('class_type')}), "
                f"which has {len(outputs)} output(s)"
            )
    return None


def find_cycle(api: dict[str, Any]) -> list[str] | None:
    """Node ids of one dependency cycle (first id repeated at the end), or None. Iterative: any size."""
    done: set[str] = set()
    for start in api:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, Any]] = [(start, None)]
        while stack:
            node_id, inputs = stack[-1]
            if inputs is None:  # entering the node
                if node_id in on_path:
                    return path[path.index(node_id) :] + [node_id]
                if node_id in done or not isinstance(api.get(node_id), dict):
                    stack.pop()
                    continue
                path.append(node_id)
                on_path.add(node_id)
                node_inputs = api[node_id].get("inputs")
                values = node_inputs.values() if isinstance(node_inputs, dict) else ()
                inputs = iter([str(v[0]) for v in values if is_link(v)])
                stack[-1] = (node_id, inputs)
            origin = next(inputs, None)
            if origin is None:  # every input followed: leave the node
                stack.pop()
                path.pop()
                on_path.discard(node_id)
                done.add(node_id)
            else:
                stack.append((origin, None))
    return None


def validate_workflow(api: dict[str, Any], object_info: dict[str, Any]) -> list[dict[str, Any]]:
    """Structural problems (no class_type, unknown class, dangling link, bad slot, a cycle), as in ParameterError."""
    problems: list[dict[str, Any]] = []
    if not isinstance(api, dict):
        return [
            _problem(
                "",
                None,
                None,
                "an object of node id → node",
                type(api).__name__,
                "the workflow is not an object of node id → {class_type, inputs}",
            )
        ]
    for node_id in sorted(api, key=node_sort_key):
        node = api[node_id]
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            problems.append(
                _problem(
                    str(node_id),
                    str(node_id),
                    None,
                    "a node with class_type",
                    node,
                    f"node {node_id} has no class_type",
                )
            )
            continue
        class_type = node["class_type"]
        if class_type not in object_info:
            problems.append(
                _problem(
                    str(node_id),
                    str(node_id),
                    None,
                    "a node class the backend knows",
                    class_type,
                    f"node {node_id} uses class {class_type!r}, which is not installed",
                )
            )
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            problems.append(
                _problem(
                    str(node_id),
                    str(node_id),
                    None,
                    "an object of inputs",
                    inputs,
                    f"node {node_id} ({class_type}): inputs is not an object",
                )
            )
            continue
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and not is_link(value):
                problems.append(
                    _problem(
                        f"{node_id}.{name}",
                        str(node_id),
                        name,
                        '["node_id", slot]',
                        value,
                        f"node {node_id} ({class_type}) input '{name}': malformed link {_describe(value)}",
                    )
                )
                continue
            if not is_link(value):
                continue
            problem = _check_link(api, object_info, [str(value[0]), value[1]])
            if problem:
                problems.append(
                    _problem(
                        f"{node_id}.{name}",
                        str(node_id),
                        name,
                        "a link to an existing node output",
                        value,
                        f"node {node_id} ({class_type}) input '{name}' {problem}",
                    )
                )
    cycle = find_cycle(api)
    if cycle:  # ComfyUI would accept it and fail at run time ("Dependency cycle detected")
        problems.append(
            _problem(
                cycle[0],
                cycle[0],
                None,
                "a workflow without cycles",
                cycle,
                f"nodes {' → '.join(cycle)} depend on each other in a cycle, so none of them can run first",
            )
        )
    return problems


def seed_inputs(api: dict[str, Any], object_info: dict[str, Any] | None = None) -> Iterable[tuple[str, str]]:
    """(node_id, input) of every seed input that holds a value (not a link)."""
    for node_id in sorted(api, key=node_sort_key):
        node = api[node_id]
        specs = input_specs((object_info or {}).get(str(node.get("class_type"))))
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value) or isinstance(value, bool) or not isinstance(value, int):
                continue
            spec = specs.get(name)
            if name in SEED_INPUTS or (
                spec is not None
                and has_control_after_generate(name, spec)
                and spec_type(spec) == "INT"
                and is_widget_spec(spec)
            ):
                yield node_id, name


def bump_seed(
    api: dict[str, Any], rng: random.Random | None = None, object_info: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Give every seed a new random value, so ComfyUI does not answer a repeated prompt from its cache."""
    rng = rng or _RNG
    result = copy.deepcopy(api)
    applied: dict[str, Any] = {}
    for node_id, name in list(seed_inputs(result, object_info)):
        spec = input_specs((object_info or {}).get(str(result[node_id].get("class_type")))).get(name)
        value = rng.randint(0, _seed_max(spec))
        result[node_id]["inputs"][name] = value
        applied[f"{node_id}.{name}"] = value
    return result, applied


def randomize_seed_if_no_params(
    api: dict[str, Any],
    params: dict[str, Any],
    object_info: dict[str, Any] | None,
    *,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """ViewComfy's rule: a submission without any real parameter changes the seed; else apply params."""
    if not any(isinstance(k, str) and not k.startswith("_") for k in params):
        return bump_seed(api, rng, object_info)
    return apply_params(api, params, object_info, rng=rng)
