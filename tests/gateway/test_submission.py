"""The CPU work of a submission (conversion, validation, params) is bounded by a node count and runs
off the event loop: a big workflow neither stalls health probes, WebSockets and SSE meanwhile, nor
makes ComfyGate work for seconds on one request."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok
from tests.protocol import sd_workflow


def chain(nodes: int) -> dict[str, Any]:
    """EmptyImage → ImageInvert × (nodes - 1), no output node: ComfyUI refuses it after all our checks."""
    workflow: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    }
    for i in range(2, nodes + 1):
        workflow[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    return workflow


def test_too_many_nodes_is_a_quick_422(gate: Gate, emulator: EmulatorThread) -> None:
    limit = gate.settings.max_workflow_nodes
    started = time.monotonic()
    response = gate.submit(chain(100_000))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["nodes"] == 100_000 and body["limit"] == limit and "COMFYUI_MAX_WORKFLOW_NODES" in body["message"]
    assert time.monotonic() - started < 30  # reading and parsing 7 MB, then refused before any conversion
    ui = {"nodes": [{"id": i, "type": "Note"} for i in range(limit + 1)], "links": []}
    for path, body_ in (("/api/workflow/submit", {"workflow": ui}), ("/api/workflow/convert", ui)):
        response = gate.client.post(path, json=body_)
        assert response.status_code == 422 and "nodes, more than the limit" in response.json()["message"], path
    task = submit_ok(gate, sd_workflow(steps=1))
    assert gate.wait(task["task_id"])["status"] == "completed"


def test_a_big_submission_does_not_stall_the_event_loop(gate: Gate) -> None:
    workflow = chain(gate.settings.max_workflow_nodes - 1)
    probes: list[tuple[float, float]] = []  # (sent, answered) of each health probe
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gate.url, timeout=10) as client:
            while not done.is_set():
                started = time.monotonic()
                assert client.get("/api/health").status_code == 200
                probes.append((started, time.monotonic()))
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    windows: list[tuple[float, float]] = []
    try:
        time.sleep(0.2)
        for _ in range(3):
            started = time.monotonic()
            response = gate.submit(workflow)
            windows.append((started, time.monotonic()))
            assert response.status_code == 422, response.text  # no output node: ComfyUI's own refusal
            assert response.json()["error"] == "prompt_rejected"
    finally:
        done.set()
        prober.join()
    assert len(probes) > 10
    # The longest a probe waited during each submission, as a share of that submission. Before the fix the
    # loop stalled for the whole submission (≈ 1 every time); with the body parsed on the loop ≈ 0.3; now ≈ 0.05
    # alone. The emulator runs in this process and competes for the GIL (its validation of 10,000 nodes is pure
    # Python), so a loaded machine inflates some submissions' share (a probe of the whole run, the former check,
    # saw 0.65-0.9 beside CI's other workers): the best of three is what is judged.
    shares = [
        max((end - sent for sent, end in probes if start <= sent < stop), default=stop - start) / (stop - start)
        for start, stop in windows
    ]
    assert min(shares) < 0.5, shares
