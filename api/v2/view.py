"""A ComfyGate task seen as a Comfy API v2 job: status, progress snapshot, outputs, links.

Pure functions of the task (and the base URL): the poll answer, the SSE frames and the list items all
come from here, so they can never disagree. The job id is ComfyGate's task id, so the same id works on
``/api/task``, ``/api/interrupt``, ``/ws`` and the debugger. A task ComfyGate holds is never
``expired``: the status comes from the task itself, which exists from submission to its end.
"""

from __future__ import annotations

import mimetypes
import uuid
from datetime import UTC, datetime
from typing import Any

from core.task import Task, TaskStatus

TERMINAL = frozenset({"succeeded", "canceled", "failed", "expired"})
STATUSES = ("queued", "running", "succeeded", "canceling", "canceled", "failed", "expired")
# ComfyGate's statuses behind each v2 status (canceling = running with an interrupt requested).
TASK_STATUSES: dict[str, frozenset[TaskStatus]] = {
    "queued": frozenset({TaskStatus.PENDING, TaskStatus.QUEUED}),
    "running": frozenset({TaskStatus.RUNNING}),
    "canceling": frozenset({TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING}),
    "succeeded": frozenset({TaskStatus.COMPLETED}),
    "failed": frozenset({TaskStatus.FAILED, TaskStatus.TIMEOUT}),
    "canceled": frozenset({TaskStatus.INTERRUPTED}),
    "expired": frozenset(),
}
OUTPUT_KINDS = frozenset({"image", "video", "audio", "text", "file", "latent"})
# Output ids are deterministic: the same output always has the same asset id, across polls and restarts.
_OUTPUT_NAMESPACE = uuid.UUID("7b0c8f2e-5d1a-4c3b-9e6f-2a4d8c1b0e93")
_KIND_BY_KEY = {"images": "image", "gifs": "video", "video": "video", "videos": "video", "audio": "audio"}
_KIND_BY_KEY |= {"latents": "latent", "latent": "latent", "text": "text", "files": "file"}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def status_of(task: Task) -> str:
    status = task.status
    if status == TaskStatus.COMPLETED:
        return "succeeded"
    if status in (TaskStatus.FAILED, TaskStatus.TIMEOUT):
        return "failed"
    if status == TaskStatus.INTERRUPTED:
        return "canceled"
    if task.extra.get("interrupt_requested"):
        return "canceling"
    return "running" if status == TaskStatus.RUNNING else "queued"


def output_id(task_id: str, filename: str) -> str:
    return str(uuid.uuid5(_OUTPUT_NAMESPACE, f"{task_id}/{filename}"))


def progress_of(task: Task) -> dict[str, Any] | None:
    """The contract's Progress snapshot; None while nothing has run yet."""
    status = task.status
    if status == TaskStatus.COMPLETED:
        total = int(task.progress.get("nodes_total") or len(task.workflow) or 0)
        return {"value": 1.0, "nodes_done": total, "nodes_total": total}
    if status != TaskStatus.RUNNING and not task.progress:
        return None
    p = task.progress
    total = int(p.get("nodes_total") or len(task.workflow) or 0)
    done = min(int(p.get("nodes_done") or 0), total) if total else int(p.get("nodes_done") or 0)
    value = max(0.0, min(1.0, float(p.get("percent") or 0.0) / 100.0))
    step, steps = p.get("value"), p.get("max")
    title = p.get("node_title") or p.get("node_class")
    message = None
    if title and steps:
        message = f"{title} {step or 0}/{steps}"
    elif title:
        message = str(title)
    return {
        "value": value,
        "nodes_done": done,
        "nodes_total": total,
        "current_node": str(p["node"]) if p.get("node") is not None else None,
        "current_node_class": p.get("node_class"),
        "step": int(step) if isinstance(step, int | float) else None,
        "steps": int(steps) if isinstance(steps, int | float) else None,
        "message": message,
    }


def output_kind(task: Task, entry: dict[str, Any]) -> str:
    """The normalised kind of one output: ComfyGate's own kind when the entry has one, else from the key the
    node listed it under, else from its media type. The contract has no 3D kind: such files are ``file``."""
    if str(entry.get("filename", "")).endswith(".latent"):
        return "latent"
    kind = entry.get("kind")
    if isinstance(kind, str):
        if entry.get("animated") and kind == "image":
            return "video"
        return kind if kind in OUTPUT_KINDS else "file"
    listed = _listed_kind(task, entry)
    if listed is not None:
        return listed
    media = str(entry.get("content_type") or mimetypes.guess_type(entry.get("filename", ""))[0] or "")
    for prefix, kind in (("image/", "image"), ("video/", "video"), ("audio/", "audio"), ("text/", "text")):
        if media.startswith(prefix):
            return kind
    return "file"


def _listed_kind(task: Task, entry: dict[str, Any]) -> str | None:
    """The kind said by the key under which the node listed the file (``images``, ``gifs``, ``audio``...)."""
    original = (entry.get("comfyui") or {}).get("filename")
    node_output = task.node_outputs.get(str(entry.get("node_id"))) or {}
    if not isinstance(node_output, dict) or not original:
        return None
    for key, items in node_output.items():
        if isinstance(items, list) and any(isinstance(i, dict) and i.get("filename") == original for i in items):
            if key == "images" and (node_output.get("animated") or [False])[0]:
                return "video"
            return _KIND_BY_KEY.get(key)
    return None


def outputs_of(task: Task, base: str, expires_at: str, hashes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every file the task saved (previews included: nothing silently dropped), as v2 Output objects."""
    outputs = []
    for entry in task.outputs:
        filename = entry.get("filename")
        if not isinstance(filename, str):
            continue
        asset = output_id(task.task_id, filename)
        outputs.append(
            {
                "node_id": str(entry.get("node_id") or ""),
                "name": (entry.get("comfyui") or {}).get("filename") or filename,
                "type": output_kind(task, entry),
                "content_type": entry.get("content_type") or "application/octet-stream",
                "size_bytes": int(entry.get("size") or 0),
                "id": asset,
                "hash": (hashes or {}).get(asset),
                "url": f"{base}/api/v2/assets/{asset}/content",
                "url_expires_at": expires_at,
                "job_id": task.task_id,
            }
        )
    return outputs


def error_of(task: Task) -> dict[str, Any] | None:
    """``job.error`` for a failed or canceled task (ComfyUI's node, class and traceback kept)."""
    if task.status not in (TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.INTERRUPTED) or not task.error:
        return None
    err = task.error
    kind = str(err.get("type") or "failed")
    code = {"execution_error": "node_execution_error", "interrupted": "canceled"}.get(kind, kind)
    traceback = err.get("traceback")
    if isinstance(traceback, list):
        traceback = "".join(str(line) for line in traceback)
    return {
        "code": code,
        "message": str(err.get("message") or kind),
        "node_id": str(err["node_id"]) if err.get("node_id") is not None else None,
        "class_type": err.get("node_type"),
        "traceback": traceback if isinstance(traceback, str) else None,
    }


def metrics_of(task: Task) -> dict[str, int | None]:
    def span(a: float | None, b: float | None) -> int | None:
        return None if a is None or b is None else max(0, round((b - a) * 1000))

    return {
        "queue_ms": span(task.created_at, task.started_at),
        "execution_ms": span(task.started_at, task.finished_at),
    }


def urls_of(task_id: str, base: str) -> dict[str, str]:
    job = f"{base}/api/v2/jobs/{task_id}"
    return {"self": job, "events": f"{job}/events", "cancel": f"{job}/cancel"}


def job_of(
    task: Task,
    base: str,
    *,
    retention: float,
    queue_position: int | None = None,
    hashes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The full v2 Job object; every nullable field present."""
    expires_at = iso((task.finished_at or task.created_at) + retention)
    status = status_of(task)
    return {
        "id": task.task_id,
        "status": status,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at) if task.started_at is not None else None,
        "completed_at": iso(task.finished_at) if task.finished_at is not None else None,
        "expires_at": expires_at,
        "queue_position": queue_position if status == "queued" else None,
        "progress": progress_of(task),
        "outputs": outputs_of(task, base, expires_at, hashes),
        "error": error_of(task),
        "metrics": metrics_of(task),
        "metadata": dict(task.extra.get("v2_metadata") or {}),
        "urls": urls_of(task.task_id, base),
    }


def list_item_of(task: Task) -> dict[str, Any]:
    """A list item: the job's stored record without outputs or links (read the job for those)."""
    updated = max(t for t in (task.created_at, task.queued_at, task.started_at, task.finished_at) if t is not None)
    return {
        "id": task.task_id,
        "status": status_of(task),
        "create_time": iso(task.created_at),
        "update_time": iso(updated),
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at) if task.started_at is not None else None,
        "completed_at": iso(task.finished_at) if task.finished_at is not None else None,
        "deployment_id": None,
        "workflow_name": task.workflow_name,
        "backend": task.backend,
        "metadata": dict(task.extra.get("v2_metadata") or {}),
    }
