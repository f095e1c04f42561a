"""How big a workflow is, and the bound on it: conversion, validation and params cost time in
proportion to the node count, so a caller cannot make ComfyGate spend seconds of CPU on one request."""

from __future__ import annotations

from typing import Any

from core.errors import WorkflowFormatError


def node_count(workflow: Any) -> int:
    """Nodes of an API workflow, or of a UI workflow with every subgraph definition's nodes."""
    if not isinstance(workflow, dict):
        return 0
    nodes = workflow.get("nodes")
    if not isinstance(nodes, list):  # API format: node id → node
        return len(workflow)
    count = len(nodes)
    definitions = workflow.get("definitions")
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    for subgraph in subgraphs if isinstance(subgraphs, list) else ():
        inner = subgraph.get("nodes") if isinstance(subgraph, dict) else None
        count += len(inner) if isinstance(inner, list) else 0
    return count


def check_node_count(workflow: Any, limit: int, what: str = "the workflow") -> None:
    """422 when ``workflow`` has more than ``limit`` nodes (COMFYUI_MAX_WORKFLOW_NODES)."""
    count = node_count(workflow)
    if count > limit:
        raise WorkflowFormatError(
            f"{what} has {count} nodes, more than the limit of {limit} (COMFYUI_MAX_WORKFLOW_NODES)",
            nodes=count,
            limit=limit,
        )
