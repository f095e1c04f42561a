"""GET /api/v2/jobs/{id}/events: live frames through the SDK's ``events()`` and raw SSE."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from comfy_low import models as contract
from comfy_sdk import AsyncComfy, Comfy, ComfyError, OutputReady, Progress, StatusChange, Workflow

from tests.api.v2.conftest import V2, conform_error
from tests.protocol import load_workflow, sd_workflow


def raw_events(url: str, timeout: float = 15.0) -> list[tuple[str, Any]]:
    """(event, data) of a whole stream; comments as ("comment", text)."""
    frames: list[tuple[str, Any]] = []
    event = None
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                frames.append(("comment", line))
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                frames.append((event or "message", json.loads(line[6:])))
    return frames


@pytest.mark.both_generations
def test_sdk_events_bring_progress_then_outputs_before_the_end(v2: V2) -> None:
    v2.emulator.set_delays(step_delay=0.05)
    with Comfy() as client:
        job = client.submit(Workflow(sd_workflow(steps=12)))
        events = list(job.events())
        first_png = next(e for e in events if isinstance(e, OutputReady)).output.to_bytes()
    kinds = [type(e).__name__ for e in events]
    assert isinstance(events[-1], StatusChange) and events[-1].status == "succeeded"
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(progress) >= 2 and all(0.0 <= p.value <= 1.0 for p in progress)
    assert any(p.steps == 12 for p in progress)
    outputs = [e for e in events if isinstance(e, OutputReady)]
    assert outputs, kinds  # the SDK stops at the terminal status: outputs must come first
    assert first_png.startswith(b"\x89PNG")
    running = [e for e in events if isinstance(e, StatusChange) and e.status == "running"]
    assert running and kinds.index("OutputReady") < len(kinds) - 1


def test_async_sdk_events(v2: V2) -> None:
    async def scenario() -> list[Any]:
        async with AsyncComfy() as client:
            job = await client.submit(Workflow(load_workflow("trivial_save.json")))
            return [event async for event in job.events()]

    events = asyncio.run(scenario())
    assert events[-1].status == "succeeded"
    assert any(isinstance(e, OutputReady) for e in events)


def test_raw_frames_fit_the_contract_and_end_with_the_terminal_status(v2: V2) -> None:
    v2.emulator.set_delays(step_delay=0.03)
    job = v2.submit(sd_workflow(steps=6)).json()
    frames = raw_events(job["urls"]["events"])
    data = [(e, d) for e, d in frames if e != "comment"]
    assert data[0][0] == "status"
    for event, body in data:
        {
            "status": contract.StatusEvent,
            "progress": contract.Progress,
            "output": contract.Output,
            "preview": contract.PreviewEvent,
        }[event].model_validate(body)
    assert data[-1] == ("status", {"status": "succeeded"})
    assert [e for e, _ in data].count("output") == 1
    # A late client gets the ending at once: outputs, then the terminal status.
    late = [(e, d) for e, d in raw_events(job["urls"]["events"]) if e != "comment"]
    assert [e for e, _ in late] == ["output", "status"]


def test_keepalive_comments_while_nothing_happens(v2_factory: Any) -> None:
    v2 = v2_factory(sse_keepalive=0.2)
    v2.emulator.set_delays(step_delay=0.3)
    job = v2.submit(sd_workflow(steps=4)).json()
    frames = raw_events(job["urls"]["events"])
    assert ("comment", ": keepalive") in frames
    assert frames[-1] == ("status", {"status": "succeeded"})


def test_the_stream_limit_is_a_setting_and_answers_429(v2_factory: Any) -> None:
    v2 = v2_factory(v2_max_event_streams=2)
    v2.emulator.set_delays(step_delay=0.05)
    job = v2.submit(sd_workflow(steps=40)).json()
    url = job["urls"]["events"]
    with httpx.Client(timeout=15) as a, httpx.Client(timeout=15) as b:
        with a.stream("GET", url) as first, b.stream("GET", url) as second:
            assert first.status_code == second.status_code == 200
            lines = [first.iter_lines(), second.iter_lines()]  # held: a dropped iterator closes its stream
            assert [next(it) for it in lines] == ["event: status", "event: status"]
            refused = httpx.get(url, timeout=15)
            conform_error(refused, 429, "too_many_streams")
            assert int(refused.headers["retry-after"]) >= 1
            with Comfy() as client, pytest.raises(ComfyError) as raised:
                next(iter(client.jobs.get(job["id"]).events()))
            assert raised.value.code == "too_many_streams"
    v2.http.post(f"/api/v2/jobs/{job['id']}/cancel")
    v2.wait(job["id"])
    deadline = time.monotonic() + 5
    while httpx.get(url, timeout=15).status_code == 429:
        assert time.monotonic() < deadline  # closed streams free their places
        time.sleep(0.05)
