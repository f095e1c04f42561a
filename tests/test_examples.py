"""The user's toolbox stays true: examples and the Postman collection run against `start.py --demo`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `python start.py --demo` process, with its data folders in a temp dir."""
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(PROJECT / "workflows", root / "workflows")
    port = free_port()
    env = {
        **os.environ,
        "COMFYUI_WORKFLOWS_DIR": str(root / "workflows"),
        "COMFYUI_OUTPUTS_DIR": str(root / "outputs"),
        "COMFYUI_UPLOADS_DIR": str(root / "uploads"),
        "COMFYUI_DATA_DIR": str(root / "data"),
    }
    env.pop("COMFYUI_API_KEYS", None)
    log = (root / "demo.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "start.py",
            "--demo",
            "--port",
            str(port),
            "--demo-step-delay",
            "0.02",
            "--log-level",
            "warning",
        ],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"start.py --demo did not come up:\n{(root / 'demo.log').read_text()}")
            time.sleep(0.1)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_example(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMFYGATE_URL": url, "STEPS": "3"}
    return subprocess.run(
        [sys.executable, str(PROJECT / "examples" / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_basic_usage(demo: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = demo
    result = run_example(url, tmp_path, "basic_usage.py", "a lighthouse at dawn")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "saved" in result.stdout
    images = list(tmp_path.glob("*.png"))
    assert images and images[0].read_bytes().startswith(b"\x89PNG")


def test_batch_generate(demo: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = demo
    result = run_example(url, tmp_path, "batch_generate.py", "--concurrency", "2", "--steps", "2", "--out", "batch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 completed" in result.stdout
    assert len(list((tmp_path / "batch").glob("*.png"))) == 4


def test_advanced_usage(demo: tuple[str, Path], tmp_path: Path) -> None:
    url, root = demo
    result = run_example(url, tmp_path, "advanced_usage.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended interrupted" in result.stdout and "done" in result.stdout
    assert not (root / "workflows" / "example_invert.json").exists()  # it cleaned up after itself


def newman_binary() -> str | None:
    local = PROJECT / ".ci" / "node" / "node_modules" / ".bin" / "newman"
    return str(local) if local.exists() else shutil.which("newman")


def test_postman_collection_with_newman(demo: tuple[str, Path]) -> None:
    url, _ = demo
    newman = newman_binary()
    if newman is None:
        if os.environ.get("CI"):
            pytest.fail("newman is not installed: .ci/run installs it with npm")
        pytest.skip("newman not installed (npm install --prefix .ci/node newman)")
    result = subprocess.run(
        [newman, "run", "ComfyUI_API.postman_collection.json", "--env-var", f"baseUrl={url}",
         "--working-dir", str(PROJECT), "--reporters", "cli", "--color", "off"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "AssertionError" not in result.stdout


def readme_curl_commands() -> list[str]:
    """The commands of README's "Try it with curl" block, continuation lines joined."""
    text = (PROJECT / "README.md").read_text()
    block = text.split("## Try it with curl", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append(pending.strip())
            pending = ""
    return commands


def test_readme_curl_commands_work_as_written(demo: tuple[str, Path], tmp_path: Path) -> None:
    import json

    url, _ = demo
    host = url.removeprefix("http://")
    commands = readme_curl_commands()
    assert len(commands) >= 4 and all(c.startswith("curl ") for c in commands)
    found: dict[str, str] = {}
    for command in commands:
        for placeholder, value in found.items():
            command = command.replace(placeholder, value)
        assert "TASK_ID" not in command and "FILENAME" not in command, f"no value yet for {command}"
        result = subprocess.run(
            ["bash", "-c", command.replace("localhost:8000", host)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        if "-o " in command:
            continue
        body = json.loads(result.stdout)
        assert not body.get("error"), f"{command} → {body}"
        if "task_id" in body:
            found["TASK_ID"] = body["task_id"]
        if body.get("outputs"):
            found["FILENAME"] = body["outputs"][0]["filename"]
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
