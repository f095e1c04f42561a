"""Workflow formats: tell API from UI format and convert UI workflows exactly as ComfyUI's frontend does.

Pure functions, no I/O: the server, the CLI and the tests all share them. The conversion rules follow
`ui-workflow-format.md` (observed from frontend 1.27.10's `graphToPrompt`), so a UI workflow submitted to
ComfyGate runs the same prompt the ComfyUI page would have queued.

Decisions:
- A POST /prompt style wrapper `{"prompt": {...}, ...}` is accepted: `detect_format` reports the format
  of the wrapped workflow and `to_api` unwraps it (clients often paste the request body they already have).
- Unknown node classes raise `UnknownNodeClass` (the frontend silently emits an entry without
  class_type). Muted or bypassed nodes never reach the prompt, so their class is not checked.
- Which inputs are widgets, their slots and defaults come from `workflow.node_specs` (INT, FLOAT, STRING,
  BOOLEAN, COMBO and MARKDOWN unless `forceInput`; WEBCAM, LOAD_3D are not modelled).
- Legacy group nodes (`workflow>Name`) are expanded on a best-effort basis (they predate subgraphs and
  are rare in the wild).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import UnknownNodeClass, WorkflowFormatError
from workflow.node_specs import (
    MISSING,
    display_name,
    input_default,
    input_specs,
    output_types,
    widget_names,
    widget_slots,
)

VIRTUAL_CLASSES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
LEGACY_RENAMES = {"T2IAdapterLoader": "ControlNetLoader", "SDV_img2vid": "SVD_img2vid"}
ALWAYS_WRITTEN = {"PreviewAny": {"preview": ""}}
SUBGRAPH_INPUT_NODE = "-10"
SUBGRAPH_OUTPUT_NODE = "-20"
MODE_MUTED = 2
MODE_BYPASS = 4
MAX_NESTING = 32
# Reroutes, bypassed nodes and subgraph borders one link may pass through (each is a recursion step).
MAX_LINK_HOPS = 200

_EXPECTED = (
    "expected either an API-format workflow (an object mapping node ids to {class_type, inputs}, as "
    "saved by 'Export (API)') or a UI-format workflow (an object with 'nodes' and 'links', as saved by "
    "ComfyUI's 'Save')"
)

_Resolved = tuple[str, Any, int] | None  # ("link", api_id, slot) | ("value", value, 0) | None


# --------------------------------------------------------------------------------------------------
# detection


def unwrap_prompt(data: Any) -> Any:
    """Return the workflow inside a `{"prompt": {...}}` request body, else `data` unchanged."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "nodes" not in data:
        inner = data["prompt"]
        if "class_type" not in inner:
            return inner
    return data


def detect_format(data: Any) -> Literal["api", "ui"]:
    """Say which format `data` is in, or raise WorkflowFormatError explaining what it looks like."""
    data = unwrap_prompt(data)
    if isinstance(data, list):
        raise WorkflowFormatError(f"this looks like a JSON list of {len(data)} items; {_EXPECTED}")
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"this looks like a JSON {type(data).__name__}; {_EXPECTED}")
    if not data:
        raise WorkflowFormatError(f"this workflow is an empty object; {_EXPECTED}")
    if "nodes" in data:
        if not isinstance(data["nodes"], list):
            raise WorkflowFormatError(
                f"this looks like a UI-format workflow but 'nodes' is a {type(data['nodes']).__name__}, "
                f"not a list; {_EXPECTED}"
            )
        return "ui"
    for node_id, node in data.items():
        if not isinstance(node, dict):
            raise WorkflowFormatError(
                f"this looks like an API-format workflow but node {node_id!r} is a "
                f"{type(node).__name__}, not an object with class_type and inputs; {_EXPECTED}"
            )
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise WorkflowFormatError(
                f"this looks like an API-format workflow but node {node_id!r} has no class_type; {_EXPECTED}"
            )
    return "api"


def _check_api_shape(api: dict[str, Any], object_info: dict[str, Any] | None) -> None:
    """Raise on an API workflow whose nodes could not be sent as they are."""
    for node_id, node in api.items():
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowFormatError(
                f"node {node_id} ({node['class_type']}): 'inputs' must be an object of input name → "
                f"value or link, got {type(inputs).__name__}"
            )
        if object_info is not None and node["class_type"] not in object_info:
            raise UnknownNodeClass(str(node_id), node["class_type"])


def to_api(data: Any, object_info: dict[str, Any] | None) -> dict[str, Any]:
    """Return an API-format copy of `data` whatever format it came in (needed before any submission)."""
    data = unwrap_prompt(data)
    if detect_format(data) == "ui":
        if object_info is None:
            raise WorkflowFormatError("converting a UI-format workflow needs the backend's object_info")
        return ui_to_api(data, object_info)
    api = {str(k): copy.deepcopy(v) for k, v in data.items()}
    for node in api.values():
        node.setdefault("inputs", {})
    _check_api_shape(api, object_info)
    return api


def workflow_node_classes(api: dict[str, Any]) -> set[str]:
    """Node classes an API workflow needs (to pick a backend that has them all)."""
    return {node["class_type"] for node in api.values() if isinstance(node, dict) and "class_type" in node}


def _types_compatible(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: '*'/empty match anything, comma lists match on any member."""
    if not a or not b or a == "*" or b == "*" or a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    left = {t.strip().lower() for t in a.split(",")}
    right = {t.strip().lower() for t in b.split(",")}
    return bool(left & right)


# --------------------------------------------------------------------------------------------------
# graphs


def _link_tuple(link: Any) -> tuple[str, str, int, str, int, Any] | None:
    """Normalise a link (array or object form) to (id, origin, origin_slot, target, target_slot, type)."""
    if isinstance(link, list) and len(link) >= 5:
        kind = link[5] if len(link) > 5 else None
        return str(link[0]), str(link[1]), int(link[2]), str(link[3]), int(link[4]), kind
    if isinstance(link, dict) and "origin_id" in link:
        return (
            str(link["id"]),
            str(link["origin_id"]),
            int(link["origin_slot"]),
            str(link["target_id"]),
            int(link["target_slot"]),
            link.get("type"),
        )
    return None


@dataclass
class _Graph:
    """One graph level: the root workflow, or one instance of a subgraph / legacy group node."""

    nodes: dict[str, dict[str, Any]]
    links: dict[str, tuple[str, str, int, str, int, Any]]
    prefix: str = ""
    parent: _Graph | None = None
    instance: dict[str, Any] | None = None
    sg_inputs: list[dict[str, Any]] = field(default_factory=list)
    widget_values: dict[int, Any] = field(default_factory=dict)
    mode: int = 0
    depth: int = 0
    children: dict[str, _Graph] = field(default_factory=dict)

    @classmethod
    def build(cls, nodes: list[Any], links: list[Any], **kw: Any) -> _Graph:
        node_map: dict[str, dict[str, Any]] = {}
        for node in nodes:
            if not isinstance(node, dict) or "id" not in node or "type" not in node:
                raise WorkflowFormatError(f"UI workflow node without id or type: {str(node)[:120]}")
            node_map[str(node["id"])] = node
        link_map = {}
        for link in links or []:
            t = _link_tuple(link)
            if t is not None:
                link_map[t[0]] = t
        return cls(nodes=node_map, links=link_map, **kw)


def _find_input(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    for inp in node.get("inputs") or []:
        widget = inp.get("widget") or {}
        if inp.get("name") == name or widget.get("name") == name:
            return inp
    return None


def _stored_value(stored: Any, name: str, index: int) -> Any:
    """A widget's value in ``widgets_values`` (a list by slot, or an object by name); MISSING if absent."""
    if isinstance(stored, dict):
        return stored.get(name, MISSING)
    if isinstance(stored, list) and index < len(stored):
        return stored[index]
    return MISSING


class _Converter:
    """Walks a UI workflow (and its subgraphs) the way `graphToPrompt` does."""

    def __init__(self, ui: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.ui = ui
        self.object_info = object_info
        definitions = ui.get("definitions") or {}
        self.subgraphs = {
            str(sg["id"]): sg for sg in definitions.get("subgraphs") or [] if isinstance(sg, dict) and "id" in sg
        }
        self.group_nodes: dict[str, Any] = (ui.get("extra") or {}).get("groupNodes") or {}
        self.root = _Graph.build(ui["nodes"], ui.get("links") or [])
        self.output: dict[str, Any] = {}
        self.following: dict[tuple[int, str, int], None] = {}  # outputs being resolved, in order

    # ---- helpers -----------------------------------------------------------------------------------

    def class_def(self, node_type: str) -> dict[str, Any] | None:
        return self.object_info.get(LEGACY_RENAMES.get(node_type, node_type))

    def group_name(self, node_type: str) -> str | None:
        for sep in (">", "/"):
            name = node_type[len("workflow") + 1 :]
            if node_type.startswith("workflow" + sep) and name in self.group_nodes:
                return name
        return None

    def is_container(self, node: dict[str, Any]) -> bool:
        return str(node["type"]) in self.subgraphs or self.group_name(str(node["type"])) is not None

    @staticmethod
    def mode_of(g: _Graph, node: dict[str, Any]) -> int:
        own = node.get("mode") or 0
        if MODE_MUTED in (own, g.mode):
            return MODE_MUTED
        if MODE_BYPASS in (own, g.mode):
            return MODE_BYPASS
        return 0

    def child(self, g: _Graph, node: dict[str, Any]) -> _Graph:
        """The graph inside a subgraph or group-node instance, with this instance's widget values."""
        key = str(node["id"])
        if key in g.children:
            return g.children[key]
        if g.depth >= MAX_NESTING:
            raise WorkflowFormatError(f"subgraphs nested deeper than {MAX_NESTING} levels (a cycle?)")
        node_type = str(node["type"])
        group = self.group_name(node_type)
        if group is not None:
            nodes, links, sg_inputs = self.expand_group_node(node, self.group_nodes[group])
        else:
            sg = self.subgraphs[node_type]
            nodes, links, sg_inputs = sg.get("nodes") or [], sg.get("links") or [], sg.get("inputs") or []
        sub = _Graph.build(
            nodes,
            links,
            prefix=f"{g.prefix}{key}:",
            parent=g,
            instance=node,
            sg_inputs=list(sg_inputs),
            mode=self.mode_of(g, node),
            depth=g.depth + 1,
        )
        if group is None:
            sub.widget_values = self.promoted_widget_values(sub, node)
        g.children[key] = sub
        return sub

    @staticmethod
    def promoted_widget_values(sub: _Graph, instance: dict[str, Any]) -> dict[int, Any]:
        """Map subgraph input index → the instance's widget value, for inputs that feed widgets."""
        values = instance.get("widgets_values") or []
        result: dict[int, Any] = {}
        position = 0
        for index, sg_input in enumerate(sub.sg_inputs):
            feeds_widget = False
            for link_id in sg_input.get("linkIds") or []:
                link = sub.links.get(str(link_id))
                if link is None:
                    continue
                target = sub.nodes.get(link[3])
                if target is None:
                    continue
                inputs = target.get("inputs") or []
                by_slot = inputs[link[4]] if link[4] < len(inputs) else None
                if by_slot is not None and by_slot.get("widget"):
                    feeds_widget = True
            if feeds_widget:
                if isinstance(values, list) and position < len(values):
                    result[index] = values[position]
                position += 1
        return result

    # ---- resolution --------------------------------------------------------------------------------

    def resolve_link(self, g: _Graph, link_id: Any, want: Any) -> _Resolved:
        if link_id is None:
            return None
        link = g.links.get(str(link_id))
        if link is None:
            return None
        return self.resolve_output(g, link[1], link[2], want)

    def resolve_output(self, g: _Graph, node_id: str, slot: int, want: Any) -> _Resolved:
        """:meth:`follow_output`, refusing a loop of pass-through nodes (Reroutes linked to each other)
        and chains too long to follow, which would otherwise end in a RecursionError."""
        key = (id(g), node_id, slot)
        if key in self.following:
            loop = [n for graph, n, _ in self.following if graph == key[0]]
            loop = loop[loop.index(node_id) :] + [node_id]
            raise WorkflowFormatError(
                f"nodes {' → '.join(g.prefix + n for n in loop)} link back to themselves (Reroute or bypassed "
                "nodes in a loop): reconnect them to a real output in ComfyUI's editor",
                nodes=[g.prefix + n for n in loop],
            )
        if len(self.following) >= MAX_LINK_HOPS:
            raise WorkflowFormatError(
                f"a link passes through more than {MAX_LINK_HOPS} Reroute, bypassed or subgraph nodes (at node "
                f"{g.prefix + node_id}); connect it more directly"
            )
        self.following[key] = None
        try:
            return self.follow_output(g, node_id, slot, want)
        finally:
            del self.following[key]

    def follow_output(self, g: _Graph, node_id: str, slot: int, want: Any) -> _Resolved:
        """What a consumer of output `slot` of `node_id` really gets: a link, a value, or nothing."""
        if node_id == SUBGRAPH_INPUT_NODE:
            return self.resolve_subgraph_input(g, slot, want)
        node = g.nodes.get(node_id)
        if node is None:
            return ("link", g.prefix + node_id, slot)  # dangling: removed at the end
        node_type = str(node["type"])
        if node_type == "Reroute":
            inputs = node.get("inputs") or []
            return self.resolve_link(g, inputs[0].get("link") if inputs else None, want)
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values") or []
            return ("value", values[0], 0) if isinstance(values, list) and values else None
        if node_type in VIRTUAL_CLASSES:
            return None
        mode = self.mode_of(g, node)
        if mode == MODE_MUTED:
            return ("link", g.prefix + node_id, slot)  # removed at the end with the muted node
        if mode == MODE_BYPASS:
            index = self.bypass_input(node, slot, want)
            if index is None:
                return None
            return self.resolve_link(g, (node.get("inputs") or [])[index].get("link"), want)
        if self.is_container(node):
            sub = self.child(g, node)
            for link in sub.links.values():
                if link[3] == SUBGRAPH_OUTPUT_NODE and link[4] == slot:
                    return self.resolve_output(sub, link[1], link[2], want)
            return None
        return ("link", g.prefix + node_id, slot)

    def resolve_subgraph_input(self, g: _Graph, index: int, want: Any) -> _Resolved:
        if g.instance is None or g.parent is None or index >= len(g.sg_inputs):
            return None
        name = g.sg_inputs[index].get("name")
        outer = _find_input(g.instance, name) if name is not None else None
        if outer is not None and outer.get("link") is not None:
            return self.resolve_link(g.parent, outer["link"], want)
        if index in g.widget_values:
            return ("value", g.widget_values[index], 0)
        return None

    @staticmethod
    def bypass_input(node: dict[str, Any], slot: int, want: Any) -> int | None:
        """Which input a bypassed node passes to its output `slot` (the frontend's three strategies)."""
        inputs = node.get("inputs") or []
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if slot < len(outputs) else None
        if slot < len(inputs):
            in_type = inputs[slot].get("type")
            if want in ("*", "", None) or (_types_compatible(in_type, out_type) and _types_compatible(in_type, want)):
                return slot
        for index, inp in enumerate(inputs):
            if inp.get("type") == want:
                return index
        for index, inp in enumerate(inputs):
            if _types_compatible(inp.get("type"), want):
                return index
        return None

    # ---- emission ----------------------------------------------------------------------------------

    def emit_graph(self, g: _Graph) -> None:
        for node_id, node in g.nodes.items():
            node_type = str(node["type"])
            if node_type in VIRTUAL_CLASSES:
                continue
            mode = self.mode_of(g, node)
            if self.is_container(node):
                if mode == 0:
                    self.emit_graph(self.child(g, node))
                continue
            if mode in (MODE_MUTED, MODE_BYPASS):
                continue
            self.emit_node(g, node_id, node)

    def emit_node(self, g: _Graph, node_id: str, node: dict[str, Any]) -> None:
        api_id = g.prefix + node_id
        node_type = str(node["type"])
        class_def = self.class_def(node_type)
        if class_def is None:
            raise UnknownNodeClass(api_id, node_type)
        class_type = LEGACY_RENAMES.get(node_type, node_type)
        specs = input_specs(class_def)
        inputs: dict[str, Any] = dict(ALWAYS_WRITTEN.get(class_type, {}))
        stored = node.get("widgets_values")
        handled: set[str] = set()
        for index, name in enumerate(widget_slots(class_def)):
            if name is None:
                continue
            handled.add(name)
            value = self.widget_value(g, node, name, _stored_value(stored, name, index), specs[name])
            if value is not MISSING:
                inputs[name] = value
        for socket in node.get("inputs") or []:
            name = socket.get("name")
            if name is None or name in handled or socket.get("link") is None:
                continue
            resolved = self.resolve_link(g, socket["link"], socket.get("type"))
            if resolved is not None:
                inputs[name] = self.api_value(resolved)
        title = node.get("title") or display_name(class_def) or class_type
        self.output[api_id] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    def widget_value(self, g: _Graph, node: dict[str, Any], name: str, value: Any, spec: Any) -> Any:
        """What the prompt gets for one widget: its stored value (or default), or what a link into it brings."""
        if value is MISSING:
            value = input_default(spec)
        if name == "sampler_name" and isinstance(value, str) and value.startswith("sample_"):
            value = value[len("sample_") :]
        if isinstance(value, list):
            value = {"__value__": value}
        socket = _find_input(node, name)
        if socket is not None and socket.get("link") is not None:
            resolved = self.resolve_link(g, socket["link"], socket.get("type"))
            if resolved is not None:
                value = self.api_value(resolved)
        return value

    @staticmethod
    def api_value(resolved: tuple[str, Any, int]) -> Any:
        kind, payload, slot = resolved
        if kind == "link":
            return [payload, slot]
        return {"__value__": payload} if isinstance(payload, list) else payload

    def convert(self) -> dict[str, Any]:
        self.emit_graph(self.root)
        for node in self.output.values():
            for name, value in list(node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in self.output:
                    del node["inputs"][name]
        return self.output

    # ---- legacy group nodes ------------------------------------------------------------------------

    def expand_group_node(
        self, instance: dict[str, Any], config: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Turn a legacy group node into subgraph-shaped (nodes, links, inputs) for one instance."""
        inner_nodes = [copy.deepcopy(n) for n in config.get("nodes") or []]
        for position, inner in enumerate(inner_nodes):
            inner["id"] = inner.get("index", position)
            inner.setdefault("mode", 0)
        links, internal, linked_from = _group_internal_links(config)
        external = {(e[0], e[1]) for e in config.get("external") or []}

        # Inner inputs: internal links, or group inputs fed through the subgraph input point (-10).
        outer_inputs = [i for i in instance.get("inputs") or [] if not i.get("widget")]
        outer_widgets = {
            (i.get("widget") or {}).get("name"): i for i in instance.get("inputs") or [] if i.get("widget")
        }
        sg_inputs: list[dict[str, Any]] = []
        values = list(instance.get("widgets_values") or [])
        cursor = 0
        for inner in inner_nodes:
            class_def = self.class_def(str(inner["type"])) or {}
            self.link_group_inputs(inner, class_def, internal, links, sg_inputs, outer_inputs)
            cursor = self.fill_group_widgets(
                inner, class_def, internal, links, sg_inputs, outer_widgets, values, cursor
            )
        self.link_group_outputs(inner_nodes, linked_from, external, links)
        return inner_nodes, links, sg_inputs

    def link_group_inputs(
        self,
        inner: dict[str, Any],
        class_def: dict[str, Any],
        internal: dict[tuple[Any, Any], Any],
        links: list[dict[str, Any]],
        sg_inputs: list[dict[str, Any]],
        outer_inputs: list[dict[str, Any]],
    ) -> None:
        """Link an inner node's sockets: to the group's internal links, else to the next group input."""
        sockets = inner.setdefault("inputs", [])
        widgets = widget_names(class_def)
        for slot, socket in enumerate(sockets):
            key = (inner["id"], slot)
            if key in internal:
                socket["link"] = internal[key]
                continue
            if socket.get("widget") or socket.get("name") in widgets:
                continue
            position = sum(1 for s in sg_inputs if not s.get("widget"))
            outer = outer_inputs[position] if position < len(outer_inputs) else {}
            sg_inputs.append({"name": outer.get("name", f"in{len(sg_inputs)}")})
            socket["link"] = self.group_input_link(links, len(sg_inputs) - 1, inner["id"], slot)

    def fill_group_widgets(
        self,
        inner: dict[str, Any],
        class_def: dict[str, Any],
        internal: dict[tuple[Any, Any], Any],
        links: list[dict[str, Any]],
        sg_inputs: list[dict[str, Any]],
        outer_widgets: dict[Any, dict[str, Any]],
        values: list[Any],
        cursor: int,
    ) -> int:
        """Give an inner node its widget values: the group node's widgets_values hold each inner node's
        widgets in turn. Returns where the next inner node's values start."""
        sockets = inner["inputs"]
        slots = widget_slots(class_def)
        own = list(inner.get("widgets_values") or [])
        own += [MISSING] * (len(slots) - len(own))
        for index, name in enumerate(slots):
            linked = name is not None and any(
                internal.get((inner["id"], s)) for s, sock in enumerate(sockets) if sock.get("name") == name
            )
            if linked:
                continue
            if cursor < len(values):
                own[index] = values[cursor]
            cursor += 1
            if name is not None and name in outer_widgets and outer_widgets[name].get("link") is not None:
                sg_inputs.append({"name": name, "widget": True})
                socket = _find_input(inner, name)
                if socket is None:
                    socket = {"name": name, "widget": {"name": name}}
                    sockets.append(socket)
                socket["link"] = self.group_input_link(links, len(sg_inputs) - 1, inner["id"], sockets.index(socket))
                outer_widgets.pop(name)
        inner["widgets_values"] = own  # MISSING slots fall back to defaults in emit_node
        return cursor

    def link_group_outputs(
        self,
        inner_nodes: list[dict[str, Any]],
        linked_from: set[tuple[Any, Any]],
        external: set[tuple[Any, Any]],
        links: list[dict[str, Any]],
    ) -> None:
        """Outputs: every inner output not only used inside the group, in order."""
        output_index = 0
        for inner in inner_nodes:
            class_def = self.class_def(str(inner["type"])) or {}
            for slot in range(len(output_types(class_def))):
                key = (inner["id"], slot)
                if key in linked_from and key not in external:
                    continue
                links.append(
                    {
                        "id": f"out{output_index}",
                        "origin_id": inner["id"],
                        "origin_slot": slot,
                        "target_id": SUBGRAPH_OUTPUT_NODE,
                        "target_slot": output_index,
                        "type": None,
                    }
                )
                output_index += 1

    @staticmethod
    def group_input_link(links: list[dict[str, Any]], index: int, target: Any, slot: int) -> str:
        link_id = f"in{index}"
        links.append(
            {
                "id": link_id,
                "origin_id": SUBGRAPH_INPUT_NODE,
                "origin_slot": index,
                "target_id": target,
                "target_slot": slot,
                "type": None,
            }
        )
        return link_id


def _group_internal_links(
    config: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[tuple[Any, Any], Any], set[tuple[Any, Any]]]:
    """A legacy group's own links as subgraph links, which input each feeds, and which outputs they use."""
    internal: dict[tuple[Any, Any], Any] = {}
    linked_from: set[tuple[Any, Any]] = set()
    links: list[dict[str, Any]] = []
    for number, raw in enumerate(config.get("links") or []):
        origin, origin_slot, target, target_slot = raw[0], raw[1], raw[2], raw[3]
        link_id = f"internal{number}"
        links.append(
            {
                "id": link_id,
                "origin_id": origin,
                "origin_slot": origin_slot,
                "target_id": target,
                "target_slot": target_slot,
                "type": raw[5] if len(raw) > 5 else None,
            }
        )
        internal[(target, target_slot)] = link_id
        linked_from.add((origin, origin_slot))
    return links, internal, linked_from


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to the API prompt ComfyUI's frontend would queue for it."""
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        raise WorkflowFormatError(f"not a UI-format workflow (no 'nodes' list); {_EXPECTED}")
    return _Converter(ui, object_info).convert()
