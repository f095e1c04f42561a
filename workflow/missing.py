"""Node classes a workflow uses that the backend does not have: all of them listed, and a copy without them.

Used to show such a workflow for viewing (the debugger's "partial" describe) instead of refusing it at the
first unknown class: the user sees every class to install at once.
"""

from __future__ import annotations

import copy
from typing import Any

from core.errors import UnknownNodeClass
from workflow.format import detect_format, unwrap_prompt
from workflow.params import is_link
from workflow.ui_convert import LEGACY_RENAMES, MODE_MUTED, VIRTUAL_CLASSES


def _ui_graphs(workflow: dict[str, Any]) -> tuple[list[tuple[str | None, list[Any]]], set[str], set[str]]:
    """[(subgraph name or None, nodes)], the subgraph ids, the legacy group-node names."""
    definitions = workflow.get("definitions") or {}
    subgraphs = [sg for sg in definitions.get("subgraphs") or [] if isinstance(sg, dict)]
    graphs: list[tuple[str | None, list[Any]]] = [(None, workflow.get("nodes") or [])]
    graphs += [(str(sg.get("name") or sg.get("id")), sg.get("nodes") or []) for sg in subgraphs]
    groups = set(((workflow.get("extra") or {}).get("groupNodes") or {}).keys())
    return graphs, {str(sg.get("id")) for sg in subgraphs}, groups


def _known(node_type: str, info: dict[str, Any], subgraph_ids: set[str], groups: set[str]) -> bool:
    if node_type in VIRTUAL_CLASSES or node_type in subgraph_ids:
        return True
    if LEGACY_RENAMES.get(node_type, node_type) in info:
        return True
    return any(node_type.startswith("workflow" + sep) and node_type[9:] in groups for sep in (">", "/"))


def missing_classes(workflow: Any, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node whose class is not installed: [{node_id, class_type, subgraph?}], in workflow order."""
    workflow = unwrap_prompt(workflow)
    missing: list[dict[str, Any]] = []
    if detect_format(workflow) == "api":
        for node_id, node in workflow.items():
            if node["class_type"] not in info:
                missing.append({"node_id": str(node_id), "class_type": node["class_type"]})
        return missing
    graphs, subgraph_ids, groups = _ui_graphs(workflow)
    for subgraph, nodes in graphs:
        for node in nodes:
            if not isinstance(node, dict) or not isinstance(node.get("type"), str):
                continue
            if node.get("mode") == MODE_MUTED or _known(node["type"], info, subgraph_ids, groups):
                continue
            entry = {"node_id": str(node.get("id")), "class_type": node["type"]}
            if subgraph is not None:
                entry["subgraph"] = subgraph
            missing.append(entry)
    return missing


def without_classes(workflow: Any, classes: set[str]) -> dict[str, Any]:
    """A copy that leaves out every node of ``classes``: API nodes removed (with the links to them), UI
    nodes muted, which the conversion leaves out and unlinks exactly as the frontend does."""
    workflow = unwrap_prompt(workflow)
    if detect_format(workflow) == "api":
        kept = {k: copy.deepcopy(v) for k, v in workflow.items() if v["class_type"] not in classes}
        for node in kept.values():
            inputs = node.get("inputs")
            if isinstance(inputs, dict):
                for name, value in list(inputs.items()):
                    if is_link(value) and str(value[0]) not in kept:
                        del inputs[name]
        return kept
    result = copy.deepcopy(workflow)
    graphs, _, _ = _ui_graphs(result)
    for _, nodes in graphs:
        for node in nodes:
            if isinstance(node, dict) and node.get("type") in classes:
                node["mode"] = MODE_MUTED
    return result


def unknown_classes_error(missing: list[dict[str, Any]]) -> UnknownNodeClass:
    """One 422 that names every class to install, not only the first one met."""
    error = UnknownNodeClass(missing[0]["node_id"], missing[0]["class_type"])
    if len(missing) > 1:
        names = ", ".join(sorted({m["class_type"] for m in missing}))
        error.message = f"{len(missing)} nodes use classes that are not installed: {names}"
        error.args = (error.message,)
    error.detail["missing_classes"] = missing
    return error
