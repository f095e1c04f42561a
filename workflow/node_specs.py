"""ComfyUI's node specs: every question about an `object_info` entry is answered here, and only here.

An `object_info` class definition describes a node's inputs as `[type, {options}]` specs. Conversion
(UI → API, `workflow.format`), parameter detection and validation (`workflow.params`) all need the same
answers about them — input order, widget or link, type, options, default, min/max/step, seeds,
`control_after_generate`, upload buttons — so they ask this module instead of each other.

The second half is the frontend's widget layout: a UI workflow stores a node's widget values by position,
and the frontend adds widgets the server never declared (a `control_after_generate` combo after seeds,
upload buttons, SaveGLB's 3D view). These rules are read from the frontend's source (1.58:
getOrderedInputSpecs, useIntWidget/useFloatWidget/useComboWidget, valueControlWidgets, the
uploadImage/uploadAudio/saveMesh extensions, LGraphNode.configure) and checked against the real
frontend by tests/workflow/test_ui_convert.py.

Pure functions over plain JSON; no I/O. A spec that is not a non-empty list answers "nothing known".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.errors import UnsupportedWidget

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
    """Does the frontend add a control_after_generate widget after this input? The same rule as the widget
    layout below: an INT seed/noise_seed gets one unless its spec says `control_after_generate: False`
    (useIntWidget's `??`), any INT, FLOAT or COMBO whose spec asks for one gets one."""
    return bool(_control_slots(_frontend_type(spec), name, spec_opts(spec).get("control_after_generate")))


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


# --------------------------------------------------------------------------------------------------
# the frontend's widget layout

# Frontend widget types whose stored values ComfyGate does not model (buttons, camera state, editors).
UNMODELLED_WIDGET_TYPES = frozenset(
    {
        "WEBCAM",
        "LOAD_3D",
        "LOAD_3D_ANIMATION",
        "PREVIEW_3D",
        "PREVIEW_3D_ANIMATION",
        "IMAGECOMPARE",
        "BOUNDING_BOX",
        "BOUNDING_BOXES",
        "CHART",
        "GALLERIA",
        "PAINTER",
        "COMPOSITOR",
        "TEXTAREA",
        "CURVE",
        "RANGE",
        "VIDEO_EDIT",
        "RESOLUTION_PREVIEW",
        "LIGHT_INFO_PREVIEW",
        "COLORS",
        "COLOR",
        "AUDIO_RECORD",
    }
)
AUDIO_UI_CLASSES = frozenset(
    {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced"}
)


def _frontend_type(spec: Any) -> Any:
    """The input's type as the frontend reads it: an inline option list is a COMBO, a bare string is a type."""
    if isinstance(spec, list | tuple) and spec:
        return "COMBO" if isinstance(spec[0], list) else spec[0]
    return spec if isinstance(spec, str) else None


def frontend_inputs(class_type: str, class_def: dict[str, Any]) -> dict[str, Any]:
    """The class's inputs after the frontend's core extensions added theirs (beforeRegisterNodeDef)."""
    inputs = copy.deepcopy(class_def.get("input") or {})
    required = inputs.setdefault("required", {})
    if class_type in AUDIO_UI_CLASSES:
        required["audioUI"] = ["AUDIO_UI", {}]
    if any(
        _frontend_type(spec) == "COMBO" and any(spec_opts(spec).get(flag) is True for flag in UPLOAD_FLAGS)
        for spec in required.values()
    ):
        required["upload"] = ["IMAGEUPLOAD", {}]
    if spec_opts(required.get("audio")).get("audio_upload") is True:
        required["upload"] = ["AUDIOUPLOAD", {}]
    if class_type == "SaveGLB":
        required["image"] = ["PREVIEW_3D"]
    return inputs


def frontend_ordered_inputs(inputs: dict[str, Any], order: dict[str, Any] | None) -> Iterator[tuple[str, Any]]:
    """(name, spec) in widget creation order: input_order's required, its optional, then the rest."""
    required = dict(inputs.get("required") or {})
    optional = {n: s for n, s in (inputs.get("optional") or {}).items() if n not in required}
    seen: set[str] = set()
    if order:
        for section, specs in (("required", required), ("optional", optional)):
            for name in order.get(section) or []:
                if name in specs and name not in seen:
                    seen.add(name)
                    yield name, specs[name]
    for name, spec in [*required.items(), *optional.items()]:
        if name not in seen:
            seen.add(name)
            yield name, spec


@dataclass(frozen=True)
class Slot:
    """One widget: `stored` takes a widgets_values position, `sent` reaches the API prompt."""

    name: str
    stored: bool
    sent: bool
    default: Any = MISSING
    textarea: bool = False  # a multiline STRING is a DOM textarea: its value is always a string


def widget_default(spec: Any) -> Any:
    """The value a widget has before any stored value is applied (MISSING: it has none)."""
    opts = spec_opts(spec)
    kind = _frontend_type(spec)
    if kind == "COMBO":
        if opts.get("default"):
            return opts["default"]
        options = spec[0] if isinstance(spec[0], list) else opts.get("options")
        if isinstance(options, list) and options:
            return options[0]
        return "Loading..." if opts.get("remote") else MISSING
    if opts.get("default") is not None:
        return opts["default"]
    return {"INT": 0, "FLOAT": 0, "BOOLEAN": False, "STRING": "", "MARKDOWN": ""}.get(kind, MISSING)


def _control_slots(kind: Any, name: str, control: Any) -> list[Slot]:
    """The frontend-only value-control widgets after a widget (never sent)."""
    if kind == "INT" and (control if control is not None else name in SEED_INPUTS):
        return [Slot("control_after_generate", stored=True, sent=False)]
    if kind == "FLOAT" and control:
        return [Slot("control_after_generate", stored=True, sent=False)]
    if kind == "COMBO" and control:
        return [
            Slot("control_after_generate", stored=True, sent=False),
            Slot("control_filter_list", stored=True, sent=False),
        ]
    return []


def widget_layout(node_id: str, class_type: str, class_def: dict[str, Any]) -> list[Slot]:
    """The node's widgets in creation order, frontend-only ones included; raises UnsupportedWidget."""
    slots: list[Slot] = []
    inputs = frontend_inputs(class_type, class_def)
    for name, spec in frontend_ordered_inputs(inputs, class_def.get("input_order")):
        opts = spec_opts(spec)
        kind = _frontend_type(spec)
        if opts.get("forceInput") or kind == "AUDIO_UI":  # AUDIO_UI: widget.serialize = false
            continue
        if kind in ("IMAGEUPLOAD", "AUDIOUPLOAD"):
            slots.append(Slot(name, stored=True, sent=False))  # a button: options.serialize = false
        elif kind == "PREVIEW_3D" and class_type == "SaveGLB":
            slots.append(Slot(name, stored=True, sent=True))
        elif kind in UNMODELLED_WIDGET_TYPES:
            raise UnsupportedWidget(node_id, class_type, f"input {name!r} is a {kind} widget")
        elif kind in WIDGET_TYPES:
            remote = opts.get("remote")
            if isinstance(remote, dict) and remote.get("refresh_button"):
                raise UnsupportedWidget(node_id, class_type, f"input {name!r} is a remote list with a refresh button")
            if kind == "COMBO" and opts.get("multiselect"):
                raise UnsupportedWidget(node_id, class_type, f"input {name!r} is a multi-select list")
            textarea = kind == "STRING" and bool(opts.get("multiline"))
            slots.append(Slot(name, stored=True, sent=True, default=widget_default(spec), textarea=textarea))
            slots += _control_slots(kind, name, opts.get("control_after_generate"))
    return slots


def stored_widget_values(node: dict[str, Any], slot_count: int | None = None) -> list[Any]:
    """`widgets_values` as the frontend restores them (widgets_values_named is ignored, as by default).

    A list is positional; null gives nothing. A dict is used positionally, in its key order, only when it
    has exactly one entry per stored widget; otherwise every widget keeps its default (frontend 1.58).
    """
    values = node.get("widgets_values")
    if isinstance(values, list):
        return list(values)
    if isinstance(values, dict) and slot_count is not None and len(values) == slot_count:
        return list(values.values())
    return []


def js_string(value: Any) -> str:
    """JavaScript's String(value): what a textarea holds once the frontend assigned `value` to it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list):
        return ",".join(js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def slot_value(slot: Slot, value: Any) -> Any:
    """A stored value as the widget holds it (MISSING: the widget's default)."""
    if value is MISSING:
        value = slot.default
    if slot.textarea and value is not MISSING:
        return js_string(value)
    return value


def api_value(value: Any) -> Any:
    """A widget value as graphToPrompt writes it: a list is wrapped so it is not read as a link."""
    return {"__value__": value} if isinstance(value, list) else value
