"""UI workflow -> API prompt: node for node and input for input what ComfyUI's frontend (1.5x) queues.

The walk follows the frontend's source (`graphToPrompt` in executionUtil.ts, ExecutableNodeDTO's
resolveInput/resolveOutput, SubgraphNode's promoted widgets, the id de-duplication of
subgraphDeduplication.ts, the group-node migration) and is checked against the real frontend run headless on
the current workflow templates (tests/workflow/test_ui_convert.py). Widgets: `workflow.widgets`.

Decisions:
- A node class the server does not know, or a widget ComfyGate cannot lay out, is a 422 naming the node.
- `_meta.title` of an untitled node is the server's display_name (the frontend shows its own English
  translation, which may differ; titles are not inputs and ComfyUI ignores them).
- Dynamic prompts (`{a|b}` in a STRING) are sent as written: the page picks one at random when it
  queues; here that choice is the caller's, like randomising a seed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import UnknownNodeClass, UnsupportedWidget, WorkflowFormatError
from workflow.widgets import MISSING, Slot, api_value, slot_value, stored_widget_values, widget_layout

VIRTUAL_CLASSES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
LEGACY_RENAMES = {"T2IAdapterLoader": "ControlNetLoader", "SDV_img2vid": "SVD_img2vid"}
SUBGRAPH_INPUT_NODE = "-10"
SUBGRAPH_OUTPUT_NODE = "-20"
MODE_MUTED = 2
MODE_BYPASS = 4
MAX_NESTING = 32
MAX_LINK_HOPS = 10_000

_REPO_ID = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]*[a-zA-Z0-9])?$")
_GITHUB_USER = re.compile(r"^(?!-)(?!.*--)[a-zA-Z0-9-]+(?<!-)$")
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([\da-z-]+(?:\.[\da-z-]+)*))?(?:\+([\da-z-]+(?:\.[\da-z-]+)*))?$"
)
_GIT_HASH = re.compile(r"^[0-9a-f]{4,40}$", re.IGNORECASE)


def pack_meta(properties: Any) -> dict[str, str]:
    """cnr_id / aux_id / ver from node.properties, kept only when valid (zNodePackMetadata)."""
    if not isinstance(properties, dict):
        return {}
    meta: dict[str, str] = {}
    cnr = properties.get("cnr_id")
    if isinstance(cnr, str) and 0 < len(cnr) <= 100 and _REPO_ID.match(cnr) and not re.search(r"^[_\-.]|[_\-.]$", cnr):
        meta["cnr_id"] = cnr
    aux = properties.get("aux_id")
    if isinstance(aux, str) and aux.count("/") == 1:
        user, repo = aux.split("/")
        if (
            0 < len(user) <= 39
            and _GITHUB_USER.match(user)
            and 0 < len(repo) <= 100
            and _REPO_ID.match(repo)
            and not re.search(r"^[_\-.]|[_\-.]$", repo)
        ):
            meta["aux_id"] = aux
    ver = properties.get("ver")
    if isinstance(ver, str):
        if ver == "unknown":
            meta["ver"] = ver
        else:
            stripped = ver[1:] if ver.startswith("v") else ver
            if _SEMVER.match(stripped) or _GIT_HASH.match(stripped):
                meta["ver"] = stripped
    return meta


def types_compatible(a: Any, b: Any) -> bool:
    """LiteGraph.isValidConnection: '*'/empty match anything, comma lists match on any member."""
    if not a or not b or a == "*" or b == "*" or a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    left = {t.strip().lower() for t in a.split(",")}
    right = {t.strip().lower() for t in b.split(",")}
    return bool(left & right)


# --------------------------------------------------------------------------------------------------
# loading: what the frontend does to the file before any node exists


def _link_tuple(link: Any) -> tuple[str, str, int, str, int, Any] | None:
    """Normalise a link (array or object form) to (id, origin, origin_slot, target, target_slot, type)."""
    try:
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
    except (TypeError, ValueError):
        return None
    return None


def _flatten_definitions(subgraphs: list[Any]) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for sg in subgraphs:
        if not isinstance(sg, dict):
            continue
        flat.append(sg)
        nested = (sg.get("definitions") or {}).get("subgraphs") or []
        if nested:
            flat.extend(_flatten_definitions(nested))
    return flat


def _numeric_id(value: Any) -> int | None:
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if str(number) == str(value) and number >= 0 else None


def dedupe_subgraph_node_ids(ui: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Subgraph definitions with node ids made unique across the whole file, as the frontend does on load.

    A node inside a definition whose id is already used (by a root node or an earlier definition) gets
    the next free id after the graph's lastNodeId (subgraphDeduplication.ts), and so does its API id.
    """
    definitions = copy.deepcopy(_flatten_definitions((ui.get("definitions") or {}).get("subgraphs") or []))
    state = ui.get("state")
    state = state if isinstance(state, dict) else {}
    candidates = [_numeric_id(ui.get("last_node_id")), _numeric_id(state.get("lastNodeId"))]
    last = max([c for c in candidates if c is not None], default=0)
    used_keys = {str(n.get("id")) for n in ui.get("nodes") or [] if isinstance(n, dict)}
    used_numbers = {k for k in (_numeric_id(x) for x in used_keys) if k is not None}
    for sg in definitions:
        remap: dict[str, int] = {}
        for node in sg.get("nodes") or []:
            if not isinstance(node, dict):
                continue
            key = str(node.get("id"))
            if key in used_keys:
                new = last + 1
                while new in used_numbers:
                    new += 1
                last = new
                remap[key] = new
                node["id"] = new
                used_numbers.add(new)
                used_keys.add(str(new))
            else:
                used_keys.add(key)
                number = _numeric_id(key)
                if number is not None:
                    used_numbers.add(number)
                    last = max(last, number)
        if remap:
            for link in sg.get("links") or []:
                if isinstance(link, dict):
                    for end in ("origin_id", "target_id"):
                        if str(link.get(end)) in remap:
                            link[end] = remap[str(link[end])]
                elif isinstance(link, list) and len(link) >= 5:
                    for index in (1, 3):
                        if str(link[index]) in remap:
                            link[index] = remap[str(link[index])]
    return definitions, last


# --------------------------------------------------------------------------------------------------
# graphs


@dataclass
class _Graph:
    """One graph level: the root workflow, or one instance of a subgraph."""

    nodes: dict[str, dict[str, Any]]
    links: dict[str, tuple[str, str, int, str, int, Any]]
    prefix: str = ""
    parent: _Graph | None = None
    instance: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None
    depth: int = 0
    children: dict[str, _Graph] = field(default_factory=dict)
    promoted: dict[int, Any] | None = None  # subgraph input index -> host widget value

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


def _find_input(node: dict[str, Any], name: str) -> tuple[int, dict[str, Any]] | None:
    for index, inp in enumerate(node.get("inputs") or []):
        if not isinstance(inp, dict):
            continue
        widget = inp.get("widget") or {}
        if inp.get("name") == name or (isinstance(widget, dict) and widget.get("name") == name):
            return index, inp
    return None


_Resolved = tuple[str, Any, int] | None  # ("link", api_id, slot) | ("value", value, 0) | None


class _Converter:
    """Walks a UI workflow (and its subgraphs) the way graphToPrompt and ExecutableNodeDTO do."""

    def __init__(self, ui: dict[str, Any], object_info: dict[str, Any]) -> None:
        self.object_info = object_info
        self._allocated: list[int] = []
        self._layouts: dict[str, list[Slot]] = {}
        definitions, last_id = dedupe_subgraph_node_ids(ui)
        self.subgraphs = {str(sg["id"]): sg for sg in definitions if "id" in sg}
        self.group_nodes: dict[str, Any] = (ui.get("extra") or {}).get("groupNodes") or {}
        nodes = [self.legacy_group_as_subgraph(n, last_id) if self.group_name(n) else n for n in ui["nodes"]]
        self.root = _Graph.build(nodes, ui.get("links") or [])
        self.output: dict[str, Any] = {}
        self.titles: dict[str, str] = {}  # API id of each subgraph instance -> the title the user sees

    # ---- helpers -----------------------------------------------------------------------------------

    def class_def(self, node_type: str) -> dict[str, Any] | None:
        return self.object_info.get(LEGACY_RENAMES.get(node_type, node_type))

    # ---- legacy group nodes ------------------------------------------------------------------------

    def group_name(self, node: Any) -> str | None:
        """The groupNodes entry a legacy group node (`workflow>Name`) instantiates."""
        node_type = str(node.get("type")) if isinstance(node, dict) else ""
        for sep in (">", "/"):
            name = node_type[len("workflow") + 1 :]
            if node_type.startswith("workflow" + sep) and name in self.group_nodes:
                return name
        return None

    def legacy_group_as_subgraph(self, instance: dict[str, Any], last_id: int) -> dict[str, Any]:
        """Turn a legacy group node into a subgraph instance, with the ids the frontend gives it on load.

        After loading, the frontend unpacks each group node (in node order) into new nodes numbered
        from lastNodeId + 1, then wraps them in a subgraph whose instance takes the next id: the API ids
        are `<instance>:<inner>` (observed on frontend 1.58.1).
        """
        config = self.group_nodes[self.group_name(instance) or ""]
        start = max([last_id, *self._allocated]) if self._allocated else last_id
        count = len(config.get("nodes") or [])
        inner_ids = list(range(start + 1, start + 1 + count))
        new_id = start + count + 1
        self._allocated.append(new_id)
        nodes, links, sg_inputs, outputs = self.expand_group_node(instance, config, inner_ids)
        key = f"legacy-group:{new_id}"
        self.subgraphs[key] = {"id": key, "nodes": nodes, "links": links, "inputs": sg_inputs, "outputs": outputs}
        return {**instance, "type": key, "widgets_values": [], "_api_id": new_id}

    def expand_group_node(
        self, instance: dict[str, Any], config: dict[str, Any], inner_ids: list[int]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """A legacy group node as subgraph-shaped (nodes, links, inputs, outputs) for one instance."""
        inner_nodes = [copy.deepcopy(n) for n in config.get("nodes") or [] if isinstance(n, dict)]
        id_of: dict[Any, int] = {}
        for position, inner in enumerate(inner_nodes):
            id_of[inner.get("index", position)] = inner_ids[position]
            inner["id"] = inner_ids[position]
            inner.setdefault("mode", 0)
        internal: dict[tuple[int, int], str] = {}
        linked_from: set[tuple[int, int]] = set()
        links: list[dict[str, Any]] = []
        for number, raw in enumerate(config.get("links") or []):
            if not isinstance(raw, list) or len(raw) < 4 or raw[0] not in id_of or raw[2] not in id_of:
                continue
            origin, target = id_of[raw[0]], id_of[raw[2]]
            link_id = f"internal{number}"
            links.append(
                {
                    "id": link_id,
                    "origin_id": origin,
                    "origin_slot": raw[1],
                    "target_id": target,
                    "target_slot": raw[3],
                    "type": raw[5] if len(raw) > 5 else None,
                }
            )
            internal[(target, raw[3])] = link_id
            linked_from.add((origin, raw[1]))
        external = {(id_of.get(e[0]), e[1]) for e in config.get("external") or [] if isinstance(e, list) and len(e) > 1}

        # Inner inputs: internal links, or group inputs fed through the subgraph input point (-10).
        outer_inputs = [i for i in instance.get("inputs") or [] if isinstance(i, dict) and not i.get("widget")]
        outer_widgets = {
            (i.get("widget") or {}).get("name"): i
            for i in instance.get("inputs") or []
            if isinstance(i, dict) and i.get("widget")
        }
        sg_inputs: list[dict[str, Any]] = []
        values = stored_widget_values(instance)
        cursor = 0
        for inner in inner_nodes:
            class_def = self.class_def(str(inner["type"])) or {}
            layout = self.layout(str(inner["id"]), str(inner["type"]), class_def) if class_def else []
            sockets = inner.setdefault("inputs", [])
            widget_names = {slot.name for slot in layout if slot.sent}
            for slot_index, socket in enumerate(sockets):
                key = (inner["id"], slot_index)
                if key in internal:
                    socket["link"] = internal[key]
                    continue
                if socket.get("widget") or socket.get("name") in widget_names:
                    continue
                position = sum(1 for i in sg_inputs if not i.get("widget"))
                outer = outer_inputs[position] if position < len(outer_inputs) else {}
                sg_inputs.append({"name": outer.get("name", f"in{len(sg_inputs)}"), "linkIds": []})
                socket["link"] = self.group_input_link(links, sg_inputs, inner["id"], slot_index)
            # The group node's widgets_values hold each inner node's stored widgets in turn.
            own = list(stored_widget_values(inner))
            stored_slots = [slot for slot in layout if slot.stored]
            own += [MISSING] * (len(stored_slots) - len(own))
            for index, slot in enumerate(stored_slots):
                linked = any(
                    internal.get((inner["id"], k)) for k, sock in enumerate(sockets) if sock.get("name") == slot.name
                )
                if linked:
                    continue
                if cursor < len(values):
                    own[index] = values[cursor]
                cursor += 1
                outer_widget = outer_widgets.get(slot.name) if slot.sent else None
                if outer_widget is not None and outer_widget.get("link") is not None:
                    sg_inputs.append({"name": slot.name, "linkIds": []})
                    found = _find_input(inner, slot.name)
                    if found is None:
                        sockets.append({"name": slot.name, "widget": {"name": slot.name}})
                        found = (len(sockets) - 1, sockets[-1])
                    found[1]["link"] = self.group_input_link(links, sg_inputs, inner["id"], found[0])
                    outer_widgets.pop(slot.name)
            inner["widgets_values"] = own  # MISSING slots fall back to the widget's default
        # Outputs: every inner output not only used inside the group, in order.
        outputs: list[dict[str, Any]] = []
        for inner in inner_nodes:
            class_def = self.class_def(str(inner["type"])) or {}
            for slot_index, out_type in enumerate(class_def.get("output") or []):
                key = (inner["id"], slot_index)
                if key in linked_from and key not in external:
                    continue
                links.append(
                    {
                        "id": f"out{len(outputs)}",
                        "origin_id": inner["id"],
                        "origin_slot": slot_index,
                        "target_id": SUBGRAPH_OUTPUT_NODE,
                        "target_slot": len(outputs),
                        "type": out_type,
                    }
                )
                outputs.append({"name": str(out_type), "type": out_type})
        return inner_nodes, links, sg_inputs, outputs

    @staticmethod
    def group_input_link(links: list[dict[str, Any]], sg_inputs: list[dict[str, Any]], target: Any, slot: int) -> str:
        index = len(sg_inputs) - 1
        link_id = f"in{index}"
        sg_inputs[index]["linkIds"].append(link_id)
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

    def is_subgraph(self, node: dict[str, Any]) -> bool:
        return str(node["type"]) in self.subgraphs

    def child(self, g: _Graph, node: dict[str, Any]) -> _Graph:
        """The graph inside one subgraph instance."""
        key = str(node["id"])
        if key in g.children:
            return g.children[key]
        if g.depth >= MAX_NESTING:
            raise WorkflowFormatError(f"subgraphs nested deeper than {MAX_NESTING} levels (a cycle?)")
        sg = self.subgraphs[str(node["type"])]
        api_id = f"{g.prefix}{node.get('_api_id', key)}"
        self.titles[api_id] = str(node.get("title") or sg.get("name") or f"Subgraph {api_id}")
        sub = _Graph.build(
            sg.get("nodes") or [],
            sg.get("links") or [],
            prefix=f"{api_id}:",
            parent=g,
            instance=node,
            definition=sg,
            depth=g.depth + 1,
        )
        g.children[key] = sub
        return sub

    def promoted_values(self, sub: _Graph) -> dict[int, Any]:
        """Host widget value of each subgraph input that promotes a widget (SubgraphNode.configure).

        An input promotes the widget of the first of its links that lands on a widget the inner node
        really has; the instance's widgets_values are dealt out over those inputs in order, a missing
        value leaving the interior widget's own value.
        """
        if sub.promoted is not None:
            return sub.promoted
        sub.promoted = {}
        assert sub.definition is not None and sub.instance is not None
        values = stored_widget_values(sub.instance)
        position = 0
        for index, sg_input in enumerate(sub.definition.get("inputs") or []):
            interior = self.promoted_interior_value(sub, sg_input)
            if interior is None:
                continue
            sub.promoted[index] = values[position] if position < len(values) else interior[0]
            position += 1
        return sub.promoted

    def promoted_interior_value(self, sub: _Graph, sg_input: dict[str, Any]) -> tuple[Any] | None:
        for link_id in sg_input.get("linkIds") or []:
            link = sub.links.get(str(link_id))
            target = sub.nodes.get(link[3]) if link else None
            if target is None or link is None:
                continue
            inputs = target.get("inputs") or []
            socket = inputs[link[4]] if 0 <= link[4] < len(inputs) else None
            if not isinstance(socket, dict) or not socket.get("widget"):
                continue
            widget = (socket.get("widget") or {}).get("name") or socket.get("name")
            if self.is_subgraph(target):
                inner = self.child(sub, target)
                for index, inner_input in enumerate(inner.definition.get("inputs") or []):  # type: ignore[union-attr]
                    if inner_input.get("name") == socket.get("name"):
                        promoted = self.promoted_values(inner)
                        if index in promoted:
                            return (promoted[index],)
                continue
            class_def = self.class_def(str(target["type"]))
            if class_def is None:
                continue
            layout = self.layout(link[3], str(target["type"]), class_def, strict=False)
            stored = stored_widget_values(target, sum(1 for slot in layout if slot.stored))
            position = 0
            for slot in layout:
                if slot.name == widget and slot.sent:
                    value = slot_value(slot, stored[position] if position < len(stored) else MISSING)
                    return (None if value is MISSING else value,)
                if slot.stored:
                    position += 1
        return None

    def layout(self, api_id: str, class_type: str, class_def: dict[str, Any], strict: bool = True) -> list[Slot]:
        key = LEGACY_RENAMES.get(class_type, class_type)
        if key not in self._layouts:
            try:
                self._layouts[key] = widget_layout(api_id, key, class_def)
            except UnsupportedWidget:
                if strict:
                    raise
                return []
        return self._layouts[key]

    # ---- resolution (ExecutableNodeDTO.resolveInput / resolveOutput) ----------------------------------

    def resolve_link(self, g: _Graph, link_id: Any, want: Any, depth: int = 0) -> _Resolved:
        if link_id is None:
            return None
        link = g.links.get(str(link_id))
        if link is None:
            return None
        if depth > MAX_LINK_HOPS:
            raise WorkflowFormatError("circular links in the workflow")
        return self.resolve_output(g, link[1], link[2], want, depth + 1)

    def resolve_output(self, g: _Graph, node_id: str, slot: int, want: Any, depth: int) -> _Resolved:
        """What a consumer of output `slot` of `node_id` really gets: a link, a value, or nothing."""
        if node_id == SUBGRAPH_INPUT_NODE:
            return self.resolve_subgraph_input(g, slot, want, depth)
        node = g.nodes.get(node_id)
        if node is None:
            return None
        node_type = str(node["type"])
        mode = node.get("mode") or 0
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            index = self.bypass_input(g, node, slot, want)
            if index is None:
                return None
            return self.resolve_input_socket(g, node, index, want, depth)
        if self.is_subgraph(node):
            sub = self.child(g, node)
            for link in sub.links.values():
                if link[3] == SUBGRAPH_OUTPUT_NODE and link[4] == slot:
                    return self.resolve_output(sub, link[1], link[2], want, depth + 1)
            return None
        if node_type == "Reroute":
            inputs = node.get("inputs") or []
            return self.resolve_link(g, inputs[0].get("link") if inputs else None, want, depth)
        if node_type in VIRTUAL_CLASSES:
            return None  # a PrimitiveNode's value is applied to its targets' widgets instead
        return ("link", g.prefix + node_id, slot)

    def resolve_input_socket(self, g: _Graph, node: dict[str, Any], index: int, want: Any, depth: int) -> _Resolved:
        """resolveInput of a node's input socket (for bypass and subgraph instances)."""
        if self.is_subgraph(node):
            sg_inputs = self.subgraphs[str(node["type"])].get("inputs") or []
            name = sg_inputs[index].get("name") if index < len(sg_inputs) else None
            found = _find_input(node, name) if name is not None else None
            socket = found[1] if found else None
        else:
            inputs = node.get("inputs") or []
            socket = inputs[index] if index < len(inputs) else None
        if not isinstance(socket, dict):
            return None
        return self.resolve_link(g, socket.get("link"), want, depth)

    def resolve_subgraph_input(self, g: _Graph, index: int, want: Any, depth: int) -> _Resolved:
        if g.instance is None or g.parent is None or g.definition is None:
            return None
        sg_inputs = g.definition.get("inputs") or []
        if index >= len(sg_inputs):
            return None
        name = sg_inputs[index].get("name")
        found = _find_input(g.instance, name) if name is not None else None
        if found is not None and found[1].get("link") is not None:
            link = g.parent.links.get(str(found[1]["link"]))
            if link is not None:
                return self.resolve_link(g.parent, found[1]["link"], want, depth)
        promoted = self.promoted_values(g)
        if index in promoted:
            return ("value", promoted[index], 0)
        return None

    def bypass_input(self, g: _Graph, node: dict[str, Any], slot: int, want: Any) -> int | None:
        """Which input a bypassed node passes to its output `slot` (_getBypassSlotIndex)."""
        inputs = self.input_types(g, node)
        outputs = (
            self.subgraphs[str(node["type"])].get("outputs") or []
            if self.is_subgraph(node)
            else node.get("outputs") or []
        )
        out_type = outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], dict) else None
        if want in ("*", ""):
            return slot if len(inputs) > slot else (0 if inputs else None)
        if slot < len(inputs) and types_compatible(inputs[slot], out_type) and types_compatible(inputs[slot], want):
            return slot
        for index, kind in enumerate(inputs):
            if kind == want:
                return index
        for index, kind in enumerate(inputs):
            if types_compatible(kind, out_type) and types_compatible(kind, want):
                return index
        return None

    def input_types(self, g: _Graph, node: dict[str, Any]) -> list[Any]:
        if self.is_subgraph(node):
            return [i.get("type") for i in self.subgraphs[str(node["type"])].get("inputs") or []]
        return [inp.get("type") if isinstance(inp, dict) else None for inp in node.get("inputs") or []]

    # ---- emission ----------------------------------------------------------------------------------

    def emit_graph(self, g: _Graph) -> None:
        for node_id, node in g.nodes.items():
            if self.is_subgraph(node):
                # Only a root-level muted/bypassed instance hides its nodes (graphToPrompt); nested
                # instances are always expanded (SubgraphNode.getInnerNodes).
                if g.parent is None and (node.get("mode") or 0) in (MODE_MUTED, MODE_BYPASS):
                    continue
                self.emit_graph(self.child(g, node))
                continue
            if str(node["type"]) in VIRTUAL_CLASSES:
                continue
            if (node.get("mode") or 0) in (MODE_MUTED, MODE_BYPASS):
                continue
            self.emit_node(g, node_id, node)

    def primitive_value(self, g: _Graph, socket: dict[str, Any]) -> tuple[Any] | None:
        """A PrimitiveNode feeding this widget (applyToGraph copies its value into the widget)."""
        link = g.links.get(str(socket.get("link")))
        origin = g.nodes.get(link[1]) if link else None
        seen = 0
        while origin is not None and str(origin["type"]) == "Reroute" and seen < 1000:
            seen += 1
            inputs = origin.get("inputs") or []
            link = g.links.get(str(inputs[0].get("link"))) if inputs else None
            origin = g.nodes.get(link[1]) if link else None
        if origin is not None and str(origin["type"]) == "PrimitiveNode":
            values = stored_widget_values(origin)
            if values:
                return (values[0],)
        return None

    def emit_node(self, g: _Graph, node_id: str, node: dict[str, Any]) -> None:
        api_id = g.prefix + node_id
        node_type = str(node["type"])
        class_def = self.class_def(node_type)
        if class_def is None:
            raise UnknownNodeClass(api_id, node_type)
        class_type = LEGACY_RENAMES.get(node_type, node_type)
        layout = self.layout(api_id, class_type, class_def)
        stored = stored_widget_values(node, sum(1 for slot in layout if slot.stored))
        inputs: dict[str, Any] = {}
        position = 0
        for slot in layout:
            value = MISSING
            if slot.stored:
                if position < len(stored):
                    value = stored[position]
                position += 1
            if not slot.sent:
                continue
            if slot.name == "sampler_name" and isinstance(value, str) and value.startswith("sample_"):
                value = value[len("sample_") :]
            found = _find_input(node, slot.name)
            if found is not None and found[1].get("link") is not None:
                primitive = self.primitive_value(g, found[1])
                if primitive is not None:
                    value = primitive[0]
            value = slot_value(slot, value)
            if value is not MISSING:
                inputs[slot.name] = api_value(value)
        for socket in node.get("inputs") or []:
            if not isinstance(socket, dict):
                continue
            name = socket.get("name")
            if name is None or socket.get("link") is None:
                continue
            resolved = self.resolve_link(g, socket["link"], socket.get("type"))
            if resolved is None:
                continue
            kind, payload, out_slot = resolved
            inputs[name] = [payload, out_slot] if kind == "link" else api_value(payload)
        title = node.get("title") or class_def.get("display_name") or class_type
        self.output[api_id] = {
            "inputs": inputs,
            "class_type": class_type,
            "_meta": {"title": title, **pack_meta(node.get("properties"))},
        }

    def convert(self) -> dict[str, Any]:
        self.emit_graph(self.root)
        for node in self.output.values():
            for name, value in list(node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in self.output:
                    del node["inputs"][name]
        return self.output


@dataclass(frozen=True)
class UIConversion:
    """A UI workflow's API prompt, with what the user sees of it that the prompt lost."""

    api: dict[str, Any]
    subgraph_titles: dict[str, str]  # API id of each subgraph instance ("12", "12:7") -> its title
    exposed: list[tuple[str, str]]  # App Mode: the (node id, widget) the author exposed, in order


def _exposed_inputs(ui: dict[str, Any]) -> list[tuple[str, str]]:
    """extra.linearData.inputs: [[nodeId, widgetName, config?], ...] (frontend >= 1.41, App Mode)."""
    linear = (ui.get("extra") or {}).get("linearData")
    entries = linear.get("inputs") if isinstance(linear, dict) else None
    exposed = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[1], str):
            if isinstance(entry[0], str | int) and not isinstance(entry[0], bool):
                exposed.append((str(entry[0]), entry[1]))
    return exposed


def convert_ui(ui: dict[str, Any], object_info: dict[str, Any]) -> UIConversion:
    """Convert a UI-format workflow, keeping its subgraph titles and App Mode inputs."""
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        raise WorkflowFormatError("not a UI-format workflow (no 'nodes' list)")
    converter = _Converter(ui, object_info)
    api = converter.convert()
    return UIConversion(api, converter.titles, _exposed_inputs(ui))


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to the API prompt ComfyUI's frontend would queue for it."""
    return convert_ui(ui, object_info).api
