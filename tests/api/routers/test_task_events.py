"""GET /api/task/{id}/events: Server-Sent Events of one task, resumable with Last-Event-ID."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import FINAL, Gate
from tests.protocol import load_workflow, sd_workflow


def read_events(gate: Gate, task_id: str, query: str = "", headers: dict[str, str] | None = None) -> list[dict]:
    """Parse a whole SSE stream (it ends after the final event) into {id, event, data} dicts."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with httpx.stream(
        "GET", f"{gate.url}/api/task/{task_id}/events{query}", headers=headers or {}, timeout=10.0
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                events.append({"comment": line})
            else:
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
    return events


def test_stream_follows_a_task_to_its_end(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    try:
        task_id = gate.submit(sd_workflow(steps=4)).json()["task_id"]
        # Last-Event-ID 0: replay from the very first event, however late this client connects.
        events = [e for e in read_events(gate, task_id, headers={"Last-Event-ID": "0"}) if "data" in e]
    finally:
        emulator.set_delays(step_delay=0.0)
    assert all(e["event"] == e["data"]["type"] for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    statuses = [e["data"]["status"] for e in events if e["event"] == "task_update"]
    assert statuses[-1] == "completed" and "running" in statuses
    assert events[-1]["data"]["outputs"], "the final event carries the outputs"
    assert not [e for e in events if e["event"] == "preview"], "previews only when asked"
    assert int(events[0]["id"]) == 1 and events[0]["data"]["status"] == "queued"
    steps = [e["data"]["progress"].get("value") for e in events if e["data"].get("progress", {}).get("max") == 4]
    assert steps[-1] == 4 and steps == sorted(steps), steps


def test_previews_when_asked(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.1)
    try:
        task_id = gate.submit(sd_workflow(steps=4)).json()["task_id"]
        events = read_events(gate, task_id, "?previews=true", headers={"Last-Event-ID": "0"})
    finally:
        emulator.set_delays(step_delay=0.0)
    previews = [e for e in events if e.get("event") == "preview"]
    assert previews and previews[0]["data"]["image"].startswith("data:image/")


def test_resume_replays_only_what_was_missed(gate: Gate, emulator: Any) -> None:
    emulator.set_delays(step_delay=0.05)
    try:
        task_id = gate.submit(sd_workflow(steps=12)).json()["task_id"]
        seen: list[dict[str, Any]] = []
        with httpx.stream("GET", f"{gate.url}/api/task/{task_id}/events", timeout=10.0) as response:
            block: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "event:", "data:")):
                    field, _, value = line.partition(": ")
                    block[field] = value
                elif not line and "data" in block:
                    seen.append(block)
                    block = {}
                    if len(seen) == 3:
                        break  # the client drops the connection mid-task
        last = int(seen[-1]["id"])
        rest = [e for e in read_events(gate, task_id, headers={"Last-Event-ID": str(last)}) if "data" in e]
    finally:
        emulator.set_delays(step_delay=0.0)
    ids = [int(e["id"]) for e in rest]
    # Previews (not asked for here) take ids too: the first replayed event is the next one, or the one
    # after a skipped preview (every sampler step sends one update and one preview).
    assert ids and last < ids[0] <= last + 2 and ids == sorted(ids), ids
    assert rest[-1]["data"]["status"] in FINAL


def test_final_task_sends_the_final_event_and_closes(gate: Gate) -> None:
    task_id = gate.submit(load_workflow("invert_save.json"), wait=True).json()["task_id"]
    events = [e for e in read_events(gate, task_id) if "data" in e]
    assert len(events) == 1 and events[0]["data"]["status"] == "completed" and events[0]["data"]["outputs"]
    final_id = events[0]["id"]
    older = [e for e in read_events(gate, task_id, headers={"Last-Event-ID": "1"}) if "data" in e]
    assert [e["id"] for e in older] == [final_id]
    done = httpx.get(f"{gate.url}/api/task/{task_id}/events", headers={"Last-Event-ID": final_id}, timeout=10.0)
    assert done.status_code == 204  # an EventSource stops reconnecting


def test_keepalive_comments_and_unknown_task(emulator: Any, gate_factory: Any) -> None:
    gate = gate_factory([emulator.url], sse_keepalive=0.1)
    emulator.set_delays(step_delay=0.1)
    try:
        task_id = gate.submit(sd_workflow(steps=4)).json()["task_id"]
        events = read_events(gate, task_id)
    finally:
        emulator.set_delays(step_delay=0.0)
    assert any(e.get("comment") == ": keepalive" for e in events)
    assert gate.client.get("/api/task/nope/events").status_code == 404
