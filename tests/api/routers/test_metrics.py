"""/metrics in Prometheus format, from a registry of the app's own, plus non-image outputs end to end."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gate
from tests.protocol import load_workflow


def samples(gate: Gate) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = gate.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_tasks_backends_and_listeners(gate: Gate) -> None:
    gate.wait(gate.submit(load_workflow("invert_save.json")).json()["task_id"])
    gate.wait(gate.submit(load_workflow("runtime_error_save_outside.json")).json()["task_id"])
    found = samples(gate)
    assert found[("comfygate_tasks_submitted_total", ())] == 2
    assert found[("comfygate_tasks_finished_total", (("status", "completed"),))] == 1
    assert found[("comfygate_tasks_finished_total", (("status", "failed"),))] == 1
    assert found[("comfygate_tasks", (("status", "completed"),))] == 1
    assert found[("comfygate_task_duration_seconds_count", (("status", "completed"),))] == 1
    assert found[("comfygate_backend_up", (("backend", "comfyui-1"), ("kind", "comfyui")))] == 1
    assert ("comfygate_backend_queue_remaining", (("backend", "comfyui-1"),)) in found
    assert found[("comfygate_ws_listeners", ())] == 0
    assert found[("comfygate_sse_listeners", ())] == 0


def test_two_apps_in_one_process_keep_their_own_registries(
    emulator: Any, gate: Gate, gate_factory: Callable[..., Gate]
) -> None:
    other = gate_factory([emulator.url])
    gate.wait(gate.submit(load_workflow("invert_save.json")).json()["task_id"])
    assert samples(gate)[("comfygate_tasks_submitted_total", ())] == 1
    assert samples(other)[("comfygate_tasks_submitted_total", ())] == 0


def test_animated_and_non_image_outputs_are_listed_and_served(gate: Gate) -> None:
    wf = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 3, "color": 255}},
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "anim",
                "fps": 8.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },  # fmt: skip
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/test"}},
    }
    task = gate.submit(wf, wait=True).json()
    assert task["status"] == "completed", task
    by_node = {o["node_id"]: o for o in task["outputs"]}
    webp, latent = by_node["2"], by_node["4"]
    assert webp["content_type"] == "image/webp" and webp["type"] == "output"
    assert latent["content_type"] == "application/octet-stream" and latent["filename"].endswith(".latent")
    assert task["node_outputs"]["2"]["animated"] == [True]
    with Image.open(BytesIO(gate.client.get(webp["url"]).content)) as img:
        assert img.format == "WEBP" and img.size == (24, 16)  # libwebp merges identical frames
    raw = gate.client.get(latent["url"]).content
    assert len(raw) == latent["size"] and b"latent_tensor" in raw[:200]
