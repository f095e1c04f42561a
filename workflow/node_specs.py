"""ComfyUI's node specs: every question about an `object_info` entry is answered here, and only here.

An `object_info` class definition describes a node's inputs as `[type, {options}]` specs. Conversion
(UI → API, `workflow.format`), parameter detection and validation (`workflow.params`) all need the same
answers about them — input order, widget or link, type, options, default, min/max/step, seeds,
`control_after_generate`, upload buttons — so they ask this module instead of each other.

Pure functions over plain JSON; no I/O. A spec that is not a non-empty list answers "nothing known".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

WIDGET_TYPES: Final = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "MARKDOWN"})
SEED_INPUTS: Final = frozenset({"seed", "noise_seed"})
UPLOAD_FLAGS: Final = ("image_upload", "video_upload", "animated_image_upload")

ClassDef = Mapping[str, Any]


class _Missing:
    """The "no value at all" marker (None is a real widget value)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final[Any] = _Missing()


# --------------------------------------------------------------------------------------------------
# one input spec: [type, {options}]


def _is_spec(spec: Any) -> bool:
    return isinstance(spec, list | tuple) and len(spec) > 0


def spec_opts(spec: Any) -> dict[str, Any]:
    """The options object of a spec (`{"default": 20, "min": 1, ...}`), empty when there is none."""
    if isinstance(spec, list | tuple) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def spec_type(spec: Any) -> str | None:
    """The input's type: "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO" (list-typed), "MODEL", ...; None if unknown."""
    if not _is_spec(spec):
        return None
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def spec_options(spec: Any) -> list[Any] | None:
    """A combo's choices (old list form or the "COMBO" type's `options`); None when not a combo list."""
    if not _is_spec(spec):
        return None
    if isinstance(spec[0], list):
        return list(spec[0])
    options = spec_opts(spec).get("options")
    return list(options) if isinstance(options, list) else None


def spec_min(spec: Any) -> Any:
    return spec_opts(spec).get("min")


def spec_max(spec: Any) -> Any:
    return spec_opts(spec).get("max")


def spec_step(spec: Any) -> Any:
    return spec_opts(spec).get("step")


def spec_declared_default(spec: Any) -> Any:
    """The `default` the spec declares (None when it declares none), as shown to callers."""
    return spec_opts(spec).get("default")


def is_multiline(spec: Any) -> bool:
    return bool(spec_opts(spec).get("multiline"))


def is_widget_spec(spec: Any) -> bool:
    """True when the frontend draws a widget for this input (so it holds a widgets_values slot), not a socket."""
    if not _is_spec(spec):
        return False
    if spec_opts(spec).get("forceInput"):
        return False
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_upload_button(spec: Any) -> bool:
    """True when the frontend adds an upload button for this input (image/video/animated image)."""
    opts = spec_opts(spec)
    return any(opts.get(flag) for flag in UPLOAD_FLAGS)


def has_control_after_generate(name: str, spec: Any) -> bool:
    """The frontend adds a control_after_generate widget after every seed/noise_seed and flagged inputs.

    Seeds get one even when their spec says `control_after_generate: False` (real templates store a
    control value there, e.g. MoonvalleyVideo2VideoNode).
    """
    return name in SEED_INPUTS or bool(spec_opts(spec).get("control_after_generate"))


def is_seed_input(name: str, spec: Any) -> bool:
    """A seed a caller may randomise: named seed/noise_seed, or an input with control_after_generate."""
    return name in SEED_INPUTS or (spec is not None and has_control_after_generate(name, spec))


def input_default(spec: Any) -> Any:
    """Value the frontend gives a widget that has no stored value (MISSING when it has none)."""
    opts = spec_opts(spec)
    if "default" in opts:
        return opts["default"]
    kind = spec[0]
    options = kind if isinstance(kind, list) else opts.get("options")
    if isinstance(options, list):
        return options[0] if options else MISSING
    if kind in ("INT", "FLOAT"):
        return opts.get("min", 0)
    if kind == "BOOLEAN":
        return False
    if kind in ("STRING", "MARKDOWN"):
        return ""
    return MISSING


# --------------------------------------------------------------------------------------------------
# one class definition


def ordered_inputs(class_def: ClassDef | None) -> Iterator[tuple[str, str, Any]]:
    """Yield (section, name, spec) for required then optional inputs, in `input_order`."""
    if not class_def:
        return
    inputs = class_def.get("input") or {}
    order = class_def.get("input_order") or {}
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = list(order.get(section) or specs.keys())
        names += [n for n in specs if n not in names]
        for name in names:
            if name in specs:
                yield section, name, specs[name]


def input_specs(class_def: ClassDef | None) -> dict[str, Any]:
    """Input name → spec, in the order the frontend lists them (empty for an unknown class)."""
    return {name: spec for _, name, spec in ordered_inputs(class_def)}


def widget_names(class_def: ClassDef | None) -> set[str]:
    """Inputs drawn as widgets (the rest are sockets that only take links)."""
    return {name for _, name, spec in ordered_inputs(class_def) if is_widget_spec(spec)}


def widget_slots(class_def: ClassDef | None) -> list[str | None]:
    """Names of the inputs behind each widgets_values slot; None marks a frontend-only slot."""
    slots: list[str | None] = []
    upload = False
    for section, name, spec in ordered_inputs(class_def):
        if section == "required" and has_upload_button(spec):
            upload = True
        if section == "optional" and upload:
            slots.append(None)  # the upload button is appended to the required inputs
            upload = False
        if not is_widget_spec(spec):
            continue
        slots.append(name)
        if has_control_after_generate(name, spec):
            slots.append(None)
    if upload:
        slots.append(None)
    return slots


def output_types(class_def: ClassDef | None) -> list[Any]:
    """The type of each output slot ("IMAGE", "CONDITIONING", ...)."""
    return list((class_def or {}).get("output") or [])


def output_name(class_def: ClassDef | None, slot: int) -> str | None:
    """The lower-cased name of output `slot`, None when the spec names none."""
    names = (class_def or {}).get("output_name") or []
    return str(names[slot]).lower() if 0 <= slot < len(names) else None


def display_name(class_def: ClassDef | None) -> str | None:
    name = (class_def or {}).get("display_name")
    return str(name) if name else None
