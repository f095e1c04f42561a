"""Access to the recorded ComfyUI protocol (transcripts + workflows) for contract tests.

Tests that need recordings use ``requires_protocol``: where ``shared/`` is absent they skip, or fail
with ``CI=true`` (``tests/equipment.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

PROTOCOL_DIR = Path(
    os.environ.get("COMFYGATE_PROTOCOL_DIR")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "comfyui-protocol"
)
PROTOCOL_MISSING = f"protocol recordings not found in {PROTOCOL_DIR} (set COMFYGATE_PROTOCOL_DIR)"
# The fixture (tests/conftest.py) skips, or fails in CI, when the recordings are not there.
requires_protocol = pytest.mark.usefixtures("protocol_recordings")


def protocol_available() -> bool:
    return (PROTOCOL_DIR / "transcripts").is_dir()


def transcript(name: str) -> Any:
    """One transcript file by its stem, e.g. ``transcript("10_run_success")``."""
    return json.loads((PROTOCOL_DIR / "transcripts" / f"{name}.json").read_text(encoding="utf-8"))


def workflow(name: str) -> dict[str, Any]:
    """One API-format workflow by its stem, e.g. ``workflow("invert_save")``."""
    return json.loads((PROTOCOL_DIR / "workflows" / f"{name}.json").read_text(encoding="utf-8"))


def ws_types(records: list[dict[str, Any]]) -> list[str]:
    """A recorded WS stream as message types; binary frames become ``BIN<event_type>``."""
    return [r["msg"]["type"] if r["frame"] == "text" else f"BIN{r['bin']['event_type']}" for r in records]


def ws_messages(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The ``data`` of every recorded text message of one type."""
    return [r["msg"]["data"] for r in records if r["frame"] == "text" and r["msg"]["type"] == kind]
