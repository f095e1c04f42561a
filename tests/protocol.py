"""Where the recorded ComfyUI protocol lives, and workflows to test with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.protocol_transcripts import PROTOCOL_DIR

PROJECT = Path(__file__).resolve().parent.parent


def load_workflow(name: str) -> dict[str, Any]:
    """A workflow recorded against real ComfyUI (shared/), else one in tests/data or the library."""
    for folder in (PROTOCOL_DIR / "workflows", PROJECT / "tests" / "data", PROJECT / "workflows"):
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text())
    raise FileNotFoundError(name)


def sd_workflow(steps: int = 4, seed: int = 42) -> dict[str, Any]:
    """The recorded SD txt2img workflow with its KSampler's steps and seed set."""
    wf = load_workflow("sd_txt2img_api.json")
    wf["3"]["inputs"]["steps"] = steps
    wf["3"]["inputs"]["seed"] = seed
    return wf
