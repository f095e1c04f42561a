"""Progress: one ComfyUI WebSocket event applied to one task, as a pure function.

ComfyUI reports a run as a stream of small events (execution_start, executing, progress, executed,
execution_success...). ``apply_event`` changes the task's status, progress, node outputs and cached
nodes, and says what follows (an update to publish, messages for its listeners, the run's end); the
manager does the rest. It touches nothing but the task, so it is tested without any server.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from backends.comfyui_events import ComfyUIEvent
from core.task import Task, TaskStatus


class End(str, Enum):
    # ComfyUI said execution_success: download the outputs, then the task is completed.
    SUCCESS = "success"
    # execution_error: the task failed (``Outcome.error`` says where and why).
    ERROR = "error"
    # execution_interrupted on request (one caused by ComfyGate's own timeout is no end: it is final already).
    INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Outcome:
    update: bool = False  # something a listener sees changed: publish a task_update
    status: bool = False  # a new status that is not final: tell the observers
    runs: bool | None = None  # True: the backend now runs this task's prompt; False: no longer; None: as it was
    end: End | None = None  # how the run ended on the backend
    error: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # for the task's listeners, before the update


def execution_error(data: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's execution_error (from the WebSocket or from history) as a task error."""
    return {
        "type": "execution_error",
        "message": f"node {data.get('node_id')} ({data.get('node_type')}) raised "
        f"{data.get('exception_type')}: {data.get('exception_message')}",
        **{k: data.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message", "traceback")},
    }


def apply_event(task: Task, event: ComfyUIEvent) -> Outcome:
    """Apply ``event`` (one of ``task``'s own) to ``task``; ``task`` must not be final."""
    handler = _HANDLERS.get(event.type)
    return handler(task, event) if handler is not None else Outcome()


def _start(task: Task, event: ComfyUIEvent) -> Outcome:
    out = Outcome(update=True, status=True, runs=True)
    if task.status == TaskStatus.PENDING:
        # ComfyUI can start a prompt before its answer to POST /prompt reaches us; listeners still see
        # every step: queued, then running.
        task.status = TaskStatus.QUEUED
        task.queued_at = time.time()
        out.messages.append({"type": "task_update", **task.summary()})
    task.status = TaskStatus.RUNNING
    task.started_at = task.started_at or time.time()
    task.progress = {"percent": 0.0, "nodes_done": 0, "nodes_total": len(task.workflow)}
    return out


def _cached(task: Task, event: ComfyUIEvent) -> Outcome:
    task.cached_nodes = [str(n) for n in event.data.get("nodes", [])]
    task.progress["nodes_done"] = len(task.cached_nodes)
    update_percent(task)
    return Outcome(update=True)


def _executing(task: Task, event: ComfyUIEvent) -> Outcome:
    node = event.data.get("node")
    if node is None:
        return Outcome()  # end of the prompt: execution_success/error decides
    set_node(task, str(node), event.data.get("display_node"))
    return Outcome(update=True)


def _progress(task: Task, event: ComfyUIEvent) -> Outcome:
    node = str(event.data.get("node") or task.progress.get("node") or "")
    if node and node != task.progress.get("node"):
        set_node(task, node)
    task.progress["value"] = event.data.get("value")
    task.progress["max"] = event.data.get("max")
    update_percent(task)
    return Outcome(update=True)


def _progress_state(task: Task, event: ComfyUIEvent) -> Outcome:
    nodes = event.data.get("nodes") or {}
    done = sum(1 for n in nodes.values() if isinstance(n, dict) and n.get("state") == "finished")
    task.progress["nodes_done"] = max(task.progress.get("nodes_done", 0), done + len(task.cached_nodes))
    update_percent(task)
    return Outcome(update=True)


def _executed(task: Task, event: ComfyUIEvent) -> Outcome:
    node = str(event.data.get("node"))
    output = event.data.get("output") or {}
    task.node_outputs[node] = output
    return Outcome(messages=[{"type": "node_output", "task_id": task.task_id, "node": node, "output": output}])


def _success(task: Task, event: ComfyUIEvent) -> Outcome:
    return Outcome(runs=False, end=End.SUCCESS)


def _error(task: Task, event: ComfyUIEvent) -> Outcome:
    return Outcome(runs=False, end=End.ERROR, error=execution_error(event.data))


def _interrupted(task: Task, event: ComfyUIEvent) -> Outcome:
    if task.extra.pop("interrupt_reason", None) == "timeout":
        return Outcome(runs=False)  # already final as timeout
    return Outcome(runs=False, end=End.INTERRUPTED, error={"type": "interrupted", "message": "interrupted on request"})


def _text(task: Task, event: ComfyUIEvent) -> Outcome:
    return Outcome(messages=[{"type": "text", "task_id": task.task_id, **event.data}])


def _preview(task: Task, event: ComfyUIEvent) -> Outcome:
    if not event.image:
        return Outcome()
    data_url = f"data:{event.image_type};base64,{base64.b64encode(event.image).decode()}"
    message = {"type": "preview", "task_id": task.task_id, "node": task.progress.get("node"), "image": data_url}
    return Outcome(messages=[message])


_HANDLERS = {
    "execution_start": _start,
    "execution_cached": _cached,
    "executing": _executing,
    "progress": _progress,
    "progress_state": _progress_state,
    "executed": _executed,
    "execution_success": _success,
    "execution_error": _error,
    "execution_interrupted": _interrupted,
    "text": _text,
    "preview": _preview,
}


def set_node(task: Task, node: str, display: Any = None) -> None:
    """The running node, and the one the user sees: for a node inside a subgraph (`12:5`), its subgraph (`12`)."""
    spec = task.workflow.get(node) or {}
    task.progress["node"] = node
    task.progress["node_class"] = spec.get("class_type")
    task.progress["node_title"] = (spec.get("_meta") or {}).get("title") or spec.get("class_type")
    # Newer servers say it (display_node); 0.3.64 echoes the node itself, so the id's first part decides.
    visible = str(display) if display and str(display) != node else node.split(":", 1)[0]
    task.progress["display_node"] = visible
    if visible == node:
        task.progress["display_title"] = task.progress["node_title"]
    else:
        titles = task.extra.get("subgraph_titles") or {}
        task.progress["display_title"] = titles.get(visible) or f"Subgraph {visible}"
    task.progress.pop("value", None)
    task.progress.pop("max", None)


def update_percent(task: Task) -> None:
    progress = task.progress
    total = max(progress.get("nodes_total") or len(task.workflow), 1)
    done = progress.get("nodes_done", 0)
    fraction = 0.0
    if progress.get("max"):
        fraction = min(float(progress.get("value") or 0) / float(progress["max"]), 1.0)
    progress["percent"] = round(min(100.0, 100.0 * (done + fraction) / total), 1)
