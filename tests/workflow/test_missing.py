"""Every node class a workflow needs and the backend lacks, and a copy of the workflow without them."""

from __future__ import annotations

import json
from typing import Any

from config import PROJECT_DIR
from workflow.format import to_api
from workflow.missing import missing_classes, unknown_classes_error, without_classes

INFO = json.loads((PROJECT_DIR / "emulator" / "data" / "object_info.json").read_text())


def library(name: str) -> Any:
    return json.loads((PROJECT_DIR / "workflows" / name).read_text())


def test_api_workflow_lists_every_missing_class_and_drops_their_links() -> None:
    api = library("sd_txt2img_api.json")
    api["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    api["21"] = {"class_type": "MagicSaver", "inputs": {"images": ["20", 0], "label": "x"}}
    api["9"]["inputs"]["images"] = ["20", 0]
    missing = missing_classes(api, INFO)
    assert missing == [{"node_id": "20", "class_type": "FancyUpscaler"}, {"node_id": "21", "class_type": "MagicSaver"}]
    kept = without_classes(api, {"FancyUpscaler", "MagicSaver"})
    assert set(kept) == set(library("sd_txt2img_api.json"))
    assert "images" not in kept["9"]["inputs"]  # it pointed at a node that is gone
    assert api["9"]["inputs"]["images"] == ["20", 0]  # the caller's copy is untouched
    error = unknown_classes_error(missing)
    assert error.status_code == 422 and "FancyUpscaler, MagicSaver" in error.message
    assert error.to_dict()["missing_classes"] == missing


def test_ui_workflow_unknown_nodes_are_muted_so_the_rest_converts() -> None:
    ui = library("sd_txt2img_ui.json")
    ui["nodes"].append({"id": 50, "type": "WeirdNode", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [1]})
    ui["nodes"].append({"id": 51, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hi"]})
    ui["nodes"].append({"id": 52, "type": "OldMuted", "mode": 2, "inputs": [], "outputs": []})
    assert missing_classes(ui, INFO) == [{"node_id": "50", "class_type": "WeirdNode"}]
    api = to_api(without_classes(ui, {"WeirdNode"}), INFO)
    assert "50" not in api and api["3"]["class_type"] == "KSampler"
    assert missing_classes(library("sd_txt2img_ui.json"), INFO) == []
