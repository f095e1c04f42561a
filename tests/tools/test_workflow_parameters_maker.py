"""The ViewComfy-style parameters file maker, for API and UI workflow files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.workflow_parameters_maker import main

ROOT = Path(__file__).resolve().parents[2]

EXPECTED_START = {
    "_3-node-class_type-info": "KSampler",
    "3-inputs-seed": 42,
    "3-inputs-steps": 20,
    "3-inputs-cfg": 8,
    "3-inputs-sampler_name": "euler",
    "3-inputs-scheduler": "normal",
    "3-inputs-denoise": 1,
    "3-inputs-model": ["4", 0],
    "3-inputs-positive": ["6", 0],
    "3-inputs-negative": ["7", 0],
    "3-inputs-latent_image": ["5", 0],
    "_4-node-class_type-info": "Load Checkpoint",
    "4-inputs-ckpt_name": "v1-5-pruned-emaonly.safetensors",
}


@pytest.mark.parametrize("name", ["sd_txt2img_api.json", "sd_txt2img_ui.json"])
def test_writes_flattened_params_for_api_and_ui(name: str, tmp_path: Path) -> None:
    output = tmp_path / "params.json"
    assert main(["--workflow_api_path", str(ROOT / "workflows" / name), "--output", str(output)]) == 0
    flat = json.loads(output.read_text())
    assert list(flat.items())[: len(EXPECTED_START)] == list(EXPECTED_START.items())
    assert flat["_6-node-class_type-info"] == "Positive Prompt"
    assert flat["9-inputs-images"] == ["8", 0]
    assert len([k for k in flat if k.startswith("_")]) == 7
    assert len(flat) == 7 + 22


def test_class_type_used_when_no_title_and_default_output_path(tmp_path: Path) -> None:
    workflow = tmp_path / "workflow_api.json"
    workflow.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}))
    assert main(["--workflow_api_path", str(workflow)]) == 0
    flat = json.loads((tmp_path / "workflow_api_parameters.json").read_text())
    assert flat == {"_1-node-class_type-info": "EmptyImage", "1-inputs-width": 8, "1-inputs-height": 8}


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["--workflow_api_path", str(bad), "--output", str(tmp_path / "o.json")]) == 2
    assert "JSON list" in capsys.readouterr().err
    assert main(["--workflow_api_path", str(tmp_path / "missing.json")]) == 2
    assert not (tmp_path / "o.json").exists()


def test_runs_as_a_script(tmp_path: Path) -> None:
    output = tmp_path / "p.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.workflow_parameters_maker",
            "--workflow_api_path",
            str(ROOT / "workflows" / "image_invert_blur_api.json"),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(output.read_text())["3-inputs-blur_radius"] == 4
