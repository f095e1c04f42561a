"""Detected parameters as a user sees the workflow: grouped under subgraphs, App Mode inputs first.

A node inside a subgraph has an API id like `12:5` (nested `12:7:3`); the user sees the subgraph node 12
and its title, so each of its parameters says so in `group` (ComfyUI's `display_node` names that same
visible node). A workflow saved in App Mode (`extra.linearData.inputs`, frontend >= 1.41) lists the
inputs its author exposed: those come first, in the author's order, marked `exposed`.
"""

from __future__ import annotations

from typing import Any


def display_node(node_id: str) -> str:
    """The node a user sees for an API id: the root-level subgraph instance holding it, or itself."""
    return str(node_id).split(":", 1)[0]


def _exposed_key(stored: str, widget: str, keys: set[str]) -> str | None:
    """The parameter key an App Mode entry means.

    The entry names a root node ("6"), or a node inside a subgraph by its own id, possibly prefixed with
    the graph's UUID ("<uuid>:12" or the widget id "<uuid>:12:prompt"): matched by its last node id when
    exactly one parameter fits.
    """
    parts = stored.split(":")
    if len(parts) > 1 and parts[-1] == widget:
        parts = parts[:-1]
    node = parts[-1]
    direct = f"{stored}.{widget}"
    if direct in keys:
        return direct
    matches = [k for k in keys if k == f"{node}.{widget}" or k.endswith(f":{node}.{widget}")]
    return matches[0] if len(matches) == 1 else None


def arrange_params(
    params: list[dict[str, Any]], subgraph_titles: dict[str, str], exposed: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Add `group` to parameters inside subgraphs and put the App Mode inputs first (marked `exposed`)."""
    for param in params:
        node_id = str(param["node_id"])
        if ":" in node_id:
            visible = display_node(node_id)
            param["group"] = {"node_id": visible, "title": subgraph_titles.get(visible, f"Subgraph {visible}")}
    keys = {str(p["key"]) for p in params}
    order: list[str] = []
    for stored, widget in exposed:
        key = _exposed_key(stored, widget, keys)
        if key is not None and key not in order:
            order.append(key)
    if not order:
        return params
    by_key = {str(p["key"]): p for p in params}
    first = [dict(by_key[k], exposed=True) for k in order]
    return first + [p for p in params if p["key"] not in order]
