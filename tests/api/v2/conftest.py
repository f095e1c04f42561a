"""Fixtures for the Comfy API v2 tests: ComfyGate + the emulator, the real comfy-sdk pointed at it,
and conformance checks of every body against the contract's models (comfy-sdk's ``comfy_low.models``,
generated from the contract's OpenAPI file with its nullable fields right)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from comfy_low import models as contract

from emulator.server import EmulatorThread
from tests.conftest import Gate
from tests.protocol import load_workflow

TERMINAL = {"succeeded", "failed", "canceled", "expired"}
# Fields the contract makes required-but-nullable: they must be in every Job body, null or not.
JOB_NULLABLE = ("started_at", "completed_at", "queue_position", "progress", "error")


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _aware(value: Any) -> None:
    if value is not None:
        assert isinstance(value, datetime) and value.tzinfo is not None, value


def conform_job(body: dict[str, Any]) -> contract.Job:
    for name in JOB_NULLABLE:
        assert name in body, f"Job.{name} must be present (null allowed): {body}"
    job = contract.Job.model_validate(body)
    for value in (job.created_at, job.started_at, job.completed_at, job.expires_at):
        _aware(value)
    for output in job.outputs:
        contract.Output.model_validate(output.model_dump())
        assert str(output.url).startswith("http"), output.url  # absolute, as the SDK needs
    return job


def conform_asset(body: dict[str, Any]) -> contract.Asset:
    asset = contract.Asset.model_validate(body)
    _aware(asset.created_at)
    assert str(asset.url).startswith("http")
    return asset


def conform_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    contract.ErrorEnvelope.model_validate(body)
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@dataclass
class V2:
    gate: Gate
    emulator: EmulatorThread
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.gate.url

    def submit(self, workflow: dict[str, Any], **body: Any) -> httpx.Response:
        headers = body.pop("headers", None)
        return self.http.post("/api/v2/jobs", json={"workflow": workflow, **body}, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v2/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        conform_job(body)
        return body

    def wait(self, job_id: str, statuses: set[str] = TERMINAL, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(0.02)

    def tasks(self) -> list[dict[str, Any]]:
        return self.gate.client.get("/api/tasks", params={"limit": 500}).json()["tasks"]


@pytest.fixture
def v2_factory(
    emulator: EmulatorThread, gate_factory: Callable[..., Gate], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., V2]]:
    """``v2_factory(**settings)``: ComfyGate with those settings in front of the emulator; the SDK
    (``COMFY_BASE_URL``) points at it."""
    clients: list[httpx.Client] = []

    def start(**overrides: Any) -> V2:
        gate = gate_factory([emulator.url], **overrides)
        monkeypatch.setenv("COMFY_BASE_URL", gate.url)
        monkeypatch.delenv("COMFY_API_KEY", raising=False)
        http = httpx.Client(base_url=gate.url, timeout=15.0)
        clients.append(http)
        return V2(gate, emulator, http)

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def v2(v2_factory: Callable[..., V2]) -> V2:
    return v2_factory()


def load_image_workflow() -> dict[str, Any]:
    """LoadImage → ImageScale (128x96) → ImageBlur → SaveImage (+ GetImageSize, PreviewAny)."""
    return load_workflow("load_scale_blur_save.json")
