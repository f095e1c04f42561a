"""Missing test equipment skips on a developer's machine and FAILS with CI=true (recordings, browsers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import PROJECT_DIR

# One small test per kind of equipment; each run is a fresh pytest in a subprocess.
CASES = {
    "recordings (marker)": ["tests/test_comfyui_client.py::test_server_addresses_are_normalised"],
    "recordings (helper)": [
        "tests/backends/test_comfyui_events.py::test_every_recorded_text_frame_parses_with_its_prompt_id"
    ],
    "chromium": ["tests/static/test_debugger_chromium.py"],
    "firefox": ["tests/static/test_debugger_firefox.py"],
}


def run_without_equipment(args: list[str], ci: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    env |= {
        "COMFYGATE_PROTOCOL_DIR": str(tmp_path / "no-recordings"),
        "COMFYGATE_CHROMIUM": str(tmp_path / "no-chromium"),
        "PATH": str(Path(sys.executable).parent),  # no firefox-esr on it
    }
    if ci:
        env["CI"] = "true"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args]
    return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", list(CASES))
def test_missing_equipment_skips_locally_and_fails_in_ci(case: str, tmp_path: Path) -> None:
    local = run_without_equipment(CASES[case], ci=False, tmp_path=tmp_path)
    # 5: a whole module skipped leaves nothing collected, which pytest reports as its own code
    assert local.returncode in (0, 5) and "SKIPPED" in local.stdout, local.stdout[-2000:]
    in_ci = run_without_equipment(CASES[case], ci=True, tmp_path=tmp_path)
    assert in_ci.returncode != 0, in_ci.stdout[-2000:]
    assert "CI=true" in in_ci.stdout and "SKIPPED" not in in_ci.stdout, in_ci.stdout[-2000:]
