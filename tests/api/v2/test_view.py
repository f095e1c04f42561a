"""Task → v2 job mapping: statuses (never expired for a held task), progress, outputs, errors."""

from __future__ import annotations

import time

from comfy_low import models as contract

from api.v2 import view
from core.task import Task, TaskStatus


def task(**fields: object) -> Task:
    base = Task(
        task_id="t" * 32, workflow={"1": {"class_type": "EmptyImage"}, "2": {"class_type": "SaveImage"}}, prompt_id="p"
    )
    for name, value in fields.items():
        setattr(base, name, value)
    return base


def test_every_comfygate_status_has_a_v2_status_and_none_is_expired() -> None:
    expected = {
        TaskStatus.PENDING: "queued",
        TaskStatus.QUEUED: "queued",
        TaskStatus.RUNNING: "running",
        TaskStatus.COMPLETED: "succeeded",
        TaskStatus.FAILED: "failed",
        TaskStatus.TIMEOUT: "failed",
        TaskStatus.INTERRUPTED: "canceled",
    }
    for status, v2 in expected.items():
        assert view.status_of(task(status=status)) == v2
        assert status in view.TASK_STATUSES[v2]
    assert view.status_of(task(status=TaskStatus.RUNNING, extra={"interrupt_requested": True})) == "canceling"


def test_job_fits_the_contract_in_every_state() -> None:
    now = time.time()
    states = [
        task(status=TaskStatus.PENDING),
        task(
            status=TaskStatus.RUNNING,
            started_at=now,
            progress={
                "percent": 42.0,
                "nodes_done": 1,
                "nodes_total": 2,
                "node": "3",
                "node_class": "KSampler",
                "node_title": "KSampler",
                "value": 5,
                "max": 20,
            },
        ),
        task(
            status=TaskStatus.FAILED,
            started_at=now,
            finished_at=now + 1,
            error={
                "type": "execution_error",
                "message": "boom",
                "node_id": "3",
                "node_type": "KSampler",
                "traceback": ["a\n", "b\n"],
            },
        ),
        task(
            status=TaskStatus.COMPLETED,
            started_at=now,
            finished_at=now + 1,
            outputs=[
                {
                    "filename": "ab_x.png",
                    "content_type": "image/png",
                    "size": 10,
                    "node_id": "2",
                    "type": "output",
                    "comfyui": {"filename": "x.png", "subfolder": "", "type": "output"},
                },
                {
                    "filename": "ab_y.latent",
                    "content_type": "application/octet-stream",
                    "size": 5,
                    "node_id": "9",
                    "type": "output",
                    "comfyui": {"filename": "y.latent"},
                },
            ],
            node_outputs={"2": {"images": [{"filename": "x.png"}]}, "9": {"latents": [{"filename": "y.latent"}]}},
        ),
    ]
    for state in states:
        body = view.job_of(state, "http://h:1", retention=60, queue_position=3)
        job = contract.Job.model_validate(body)
        assert job.expires_at > job.created_at
    running = view.job_of(states[1], "http://h:1", retention=60)
    assert running["progress"]["value"] == 0.42 and running["progress"]["message"] == "KSampler 5/20"
    failed = view.job_of(states[2], "http://h:1", retention=60)
    assert failed["error"] == {
        "code": "node_execution_error",
        "message": "boom",
        "node_id": "3",
        "class_type": "KSampler",
        "traceback": "a\nb\n",
    }
    done = view.job_of(states[3], "http://h:1", retention=60)
    assert [o["type"] for o in done["outputs"]] == ["image", "latent"]
    kinds = [{"filename": "a.glb", "kind": "3d"}, {"filename": "b.webp", "kind": "image", "animated": True},
             {"filename": "c.txt", "kind": "text"}, {"filename": "d.mp3", "kind": "audio"}]  # fmt: skip
    assert [view.output_kind(states[3], e) for e in kinds] == ["file", "video", "text", "audio"]
    assert done["outputs"][0]["name"] == "x.png" and done["outputs"][0]["url"].startswith("http://h:1/api/v2/assets/")
    assert view.output_id("t", "a.png") == view.output_id("t", "a.png") != view.output_id("u", "a.png")
    assert view.job_of(states[0], "http://h:1", retention=60, queue_position=3)["queue_position"] == 3
