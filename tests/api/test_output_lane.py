"""The lane that answers ``/api/image`` of a just-finished output from memory before FastAPI's routing:
the same bytes and headers as the route, nothing the security middlewares refuse, and everything it does
not recognise left to the route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api import output_lane
from emulator.server import EmulatorThread
from tests.conftest import Gate, submit_ok

SAVE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 123}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lane"}},
}


def finished_output(gate: Gate) -> str:
    task = gate.wait(submit_ok(gate, SAVE)["task_id"])
    assert task["status"] == "completed", task
    return str(task["outputs"][0]["filename"])


def test_lane_and_route_answer_the_same(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[str] = []
    real = output_lane.cached_headers

    def spy(filename: str, cached: Any) -> dict[str, str]:
        answered.append(filename)
        return real(filename, cached)

    monkeypatch.setattr(output_lane, "cached_headers", spy)  # the lane's own reference, not the route's
    name = finished_output(gate)
    fast = gate.client.get(f"/api/image/{name}")  # just finished: in memory, answered by the lane
    assert fast.status_code == 200 and answered == [name]
    route = gate.client.get(f"/api/image/{name}", params={"type": "output", "x": "1"})
    assert route.status_code == 200 and answered == [name]  # another query: the route's (which ignores it)
    assert fast.content == route.content and fast.content.startswith(b"\x89PNG")
    keep = ("content-type", "content-length", "etag", "last-modified", "content-disposition", "x-content-type-options")
    assert {k: fast.headers.get(k) for k in keep} == {k: route.headers.get(k) for k in keep}


def test_conditional_and_range_requests_are_the_routes(gate: Gate) -> None:
    name = finished_output(gate)
    first = gate.client.get(f"/api/image/{name}")
    etag = first.headers["etag"]
    again = gate.client.get(f"/api/image/{name}", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    part = gate.client.get(f"/api/image/{name}", headers={"range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == first.content[:4]


def test_the_lane_answers_nothing_the_checks_before_it_refuse(emulator: EmulatorThread, gate_factory: Any) -> None:
    key = "k" * 32
    gate = gate_factory([emulator.url], api_keys=[key])
    gate.client.headers["authorization"] = f"Bearer {key}"
    name = finished_output(gate)
    with httpx.Client(base_url=gate.url) as stranger:
        assert stranger.get(f"/api/image/{name}").status_code == 401
        foreign = stranger.get(
            f"/api/image/{name}", headers={"authorization": f"Bearer {key}", "origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert stranger.get(f"/api/image/{name}", headers={"authorization": f"Bearer {key}"}).status_code == 200
