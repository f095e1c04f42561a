"""Workflows that loop back on themselves (workflow.format's Reroutes, workflow.params' API links) are
refused with a 422 that names the nodes, on every route that takes a workflow; never a RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import WorkflowFormatError
from emulator.server import EmulatorThread
from tests.conftest import Gate, history_of, submit_ok
from tests.protocol import PROJECT, sd_workflow
from workflow.format import MAX_LINK_HOPS, to_api
from workflow.params import find_cycle, validate_workflow

INFO = json.loads((PROJECT / "emulator" / "data" / "object_info.json").read_text())


def reroute(node_id: int, link_in: int | None, links_out: list[int]) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "Reroute",
        "mode": 0,
        "inputs": [{"name": "", "type": "*", "link": link_in}],
        "outputs": [{"name": "", "type": "IMAGE", "links": links_out}],
    }


def preview(node_id: int, link_in: int) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "PreviewImage",
        "mode": 0,
        "inputs": [{"name": "images", "type": "IMAGE", "link": link_in}],
        "outputs": [],
        "widgets_values": [],
    }


def reroute_loop() -> dict[str, Any]:
    """Two Reroutes feeding each other, and a PreviewImage reading from them."""
    return {
        "nodes": [reroute(10, 2, [1, 3]), reroute(11, 1, [2]), preview(12, 3)],
        "links": [[1, 10, 0, 11, 0, "IMAGE"], [2, 11, 0, 10, 0, "IMAGE"], [3, 10, 0, 12, 0, "IMAGE"]],
        "version": 0.4,
    }


def reroute_chain(length: int) -> dict[str, Any]:
    """``length`` Reroutes in a row, the first fed by nothing (no loop, just long)."""
    nodes = [reroute(1, None, [1])]
    links = []
    for i in range(2, length + 1):
        nodes.append(reroute(i, i - 1, [i]))
        links.append([i - 1, i - 1, 0, i, 0, "IMAGE"])
    nodes.append(preview(length + 1, length))
    links.append([length, length, 0, length + 1, 0, "IMAGE"])
    return {"nodes": nodes, "links": links, "version": 0.4}


def api_cycle() -> dict[str, Any]:
    """The SD workflow with its VAE decode feeding its own sampler's latent: 3 → 8 → 3."""
    workflow = sd_workflow()
    workflow["3"]["inputs"]["latent_image"] = ["8", 0]
    workflow["8"]["inputs"]["samples"] = ["3", 0]
    return workflow


def test_reroute_loop_and_overlong_chain_are_format_errors() -> None:
    with pytest.raises(WorkflowFormatError, match=r"nodes 10 → 11 → 10 link back to themselves"):
        to_api(reroute_loop(), INFO)
    with pytest.raises(WorkflowFormatError, match=f"more than {MAX_LINK_HOPS}"):
        to_api(reroute_chain(MAX_LINK_HOPS + 50), INFO)
    assert to_api(reroute_chain(20), INFO)["21"]["inputs"] == {}  # a chain fed by nothing: no error


def test_find_cycle_on_api_workflows() -> None:
    assert find_cycle(sd_workflow()) is None
    assert find_cycle(api_cycle()) in (["3", "8", "3"], ["8", "3", "8"])
    assert find_cycle({"1": {"class_type": "X", "inputs": {"a": ["1", 0]}}}) == ["1", "1"]
    chain = {str(i): {"class_type": "X", "inputs": {"a": [str(i + 1), 0]}} for i in range(50_000)}
    assert find_cycle(chain) is None  # iterative: a long chain is fine
    chain["50000"] = {"class_type": "X", "inputs": {"a": ["0", 0]}}
    assert find_cycle(chain) is not None
    problems = validate_workflow(api_cycle(), INFO)
    assert any("cycle" in p["message"] for p in problems)


def test_routes_refuse_cycles(gate: Gate, emulator: EmulatorThread) -> None:
    saved = gate.client.post(
        "/api/workflow/upload", files={"file": ("sd.json", json.dumps(sd_workflow()).encode(), "application/json")}
    )
    assert saved.status_code == 200, saved.text
    stored = (gate.settings.workflows_dir / "sd.json").read_bytes()
    for path, body in (
        ("/api/workflow/submit", {"workflow": reroute_loop()}),
        ("/api/workflow/convert", reroute_loop()),
        ("/api/workflow/params", {"workflow": reroute_loop()}),
        ("/api/workflow/submit", {"workflow": reroute_chain(MAX_LINK_HOPS + 50)}),
        ("/api/workflow/submit", {"workflow": api_cycle()}),
        ("/api/workflow/update", {"name": "sd", "workflow": api_cycle()}),
        ("/api/workflow/update", {"name": "sd", "workflow": reroute_loop()}),
    ):
        response = gate.client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert "cycle" in response.json()["message"] or "link" in response.json()["message"], response.text
    upload = gate.client.post(
        "/api/workflow/upload", files={"file": ("loop.json", json.dumps(api_cycle()).encode(), "application/json")}
    )
    assert upload.status_code == 422 and "cycle" in upload.json()["message"], upload.text
    assert (gate.settings.workflows_dir / "sd.json").read_bytes() == stored  # the saved one is untouched
    assert not (gate.settings.workflows_dir / "loop.json").exists()
    assert gate.client.get("/api/tasks").json()["total"] == 0 and history_of(emulator) == {}
    task = submit_ok(gate, sd_workflow(steps=1))
    assert gate.wait(task["task_id"])["status"] == "completed"
