"""README's "Comfy API v2" quickstart, run as written (a subprocess with COMFY_BASE_URL) against ComfyGate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.api.v2.conftest import V2, load_image_workflow, png

PROJECT = Path(__file__).resolve().parents[3]


def quickstart() -> str:
    readme = (PROJECT / "README.md").read_text()
    section = readme[readme.index("## Comfy API v2") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Comfy API v2 section has no python block"
    return match.group(1)


def test_the_readme_quickstart_runs_as_written(v2: V2, tmp_path: Path) -> None:
    (tmp_path / "workflow_api.json").write_text(json.dumps(load_image_workflow()))
    (tmp_path / "photo.png").write_bytes(png((90, 10, 200)))
    (tmp_path / "quickstart.py").write_text(quickstart())
    env = {**os.environ, "COMFY_BASE_URL": v2.url}
    env.pop("COMFY_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "quickstart.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == (128, 96)
    printed = result.stdout.splitlines()
    assert any("OutputReady" in line for line in printed)
    assert printed[-1] == "StatusChange(status='succeeded', queue_position=None)"
