"""Progress: ComfyUI's WebSocket events turned into task state, and task updates sent to listeners.

ComfyUI reports a run as a stream of small events (execution_start, executing, progress, executed,
execution_success...); this is where they become a task's status, progress percentage, node outputs
and previews. ``_publish`` sends a ``task_update`` only when something a listener sees has changed.
Backends without a ComfyUI WebSocket (ViewComfy) drive the same updates through ``mark_running`` and
``publish``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from backends.comfyui import ComfyUIBackend
from backends.comfyui_events import ComfyUIEvent
from core.task import Task, TaskStatus


def execution_error(data: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's execution_error (from the WebSocket or from history) as a task error."""
    return {
        "type": "execution_error",
        "message": f"node {data.get('node_id')} ({data.get('node_type')}) raised "
        f"{data.get('exception_type')}: {data.get('exception_message')}",
        **{k: data.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message", "traceback")},
    }


class ProgressMixin:
    """ComfyUI events into task progress; task updates to listeners.

    Part of ``TaskManager`` (``task_manager.py``), which sets the shared state in its ``__init__``.
    """

    # --- events from ComfyUI ---------------------------------------------------------------------
    def on_event(self, backend: ComfyUIBackend, event: ComfyUIEvent) -> None:
        kind = event.type
        if kind == "status":
            if self._last_queue.get(backend.name) != backend.queue_remaining:
                self._last_queue[backend.name] = backend.queue_remaining
                self.hub.publish(
                    {"type": "queue_update", "backend": backend.name, "queue_remaining": backend.queue_remaining}
                )
            return
        task = self.store.by_prompt(event.prompt_id)
        if task is None and kind in ("preview", "text") and backend.running_prompt:
            task = self.store.by_prompt(backend.running_prompt)
        if task is None or task.status.final:
            return
        if kind == "execution_start":
            backend.running_prompt = task.prompt_id
            if task.status == TaskStatus.PENDING:
                # ComfyUI can start a prompt before its answer to POST /prompt reaches us; listeners
                # still see every step: queued, then running.
                task.status = TaskStatus.QUEUED
                task.queued_at = time.time()
                self._publish(task)
            task.status = TaskStatus.RUNNING
            task.started_at = task.started_at or time.time()
            task.progress = {"percent": 0.0, "nodes_done": 0, "nodes_total": len(task.workflow)}
            self._notify(task, "status")
        elif kind == "execution_cached":
            task.cached_nodes = [str(n) for n in event.data.get("nodes", [])]
            task.progress["nodes_done"] = len(task.cached_nodes)
            self._update_percent(task)
        elif kind == "executing":
            node = event.data.get("node")
            if node is None:
                return  # end of the prompt: execution_success/error already decided
            self._set_node(task, str(node))
        elif kind == "progress":
            node = str(event.data.get("node") or task.progress.get("node") or "")
            if node and node != task.progress.get("node"):
                self._set_node(task, node)
            task.progress["value"] = event.data.get("value")
            task.progress["max"] = event.data.get("max")
            self._update_percent(task)
        elif kind == "progress_state":
            nodes = event.data.get("nodes") or {}
            done = sum(1 for n in nodes.values() if isinstance(n, dict) and n.get("state") == "finished")
            task.progress["nodes_done"] = max(task.progress.get("nodes_done", 0), done + len(task.cached_nodes))
            self._update_percent(task)
        elif kind == "executed":
            node = str(event.data.get("node"))
            output = event.data.get("output") or {}
            task.node_outputs[node] = output
            self.hub.publish(
                {"type": "node_output", "task_id": task.task_id, "node": node, "output": output}, task.task_id
            )
            return
        elif kind == "execution_success":
            backend.running_prompt = None
            self.spawn(self._complete(task, backend), name=f"complete {task.task_id}")
            return
        elif kind == "execution_error":
            backend.running_prompt = None
            self.finish(task, TaskStatus.FAILED, error=execution_error(event.data))
            return
        elif kind == "execution_interrupted":
            backend.running_prompt = None
            reason = task.extra.pop("interrupt_reason", None)
            if reason == "timeout":
                return  # already final as timeout
            self.finish(
                task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "interrupted on request"}
            )
            return
        elif kind in ("preview", "text"):
            self._publish_preview(task, event)
            return
        else:
            return
        self._publish(task)

    def _set_node(self, task: Task, node: str) -> None:
        spec = task.workflow.get(node) or {}
        task.progress["node"] = node
        task.progress["node_class"] = spec.get("class_type")
        task.progress["node_title"] = (spec.get("_meta") or {}).get("title") or spec.get("class_type")
        task.progress.pop("value", None)
        task.progress.pop("max", None)

    @staticmethod
    def _update_percent(task: Task) -> None:
        progress = task.progress
        total = max(progress.get("nodes_total") or len(task.workflow), 1)
        done = progress.get("nodes_done", 0)
        fraction = 0.0
        if progress.get("max"):
            fraction = min(float(progress.get("value") or 0) / float(progress["max"]), 1.0)
        progress["percent"] = round(min(100.0, 100.0 * (done + fraction) / total), 1)

    def _publish_preview(self, task: Task, event: ComfyUIEvent) -> None:
        import base64

        if event.type == "text":
            self.hub.publish({"type": "text", "task_id": task.task_id, **event.data}, task.task_id)
            return
        if not event.image:
            return
        data_url = f"data:{event.image_type};base64,{base64.b64encode(event.image).decode()}"
        self.hub.publish(
            {"type": "preview", "task_id": task.task_id, "node": task.progress.get("node"), "image": data_url},
            task.task_id,
        )

    def mark_running(self, task: Task) -> None:
        if task.status.final:
            return
        task.status = TaskStatus.RUNNING
        task.started_at = task.started_at or time.time()
        task.progress.setdefault("percent", 0.0)
        self._notify(task, "status")
        self._publish(task)

    def publish(self, task: Task) -> None:
        """Tell listeners about a change a backend made to ``task.progress``."""
        if not task.status.final:
            self._publish(task)

    def _publish(self, task: Task, **more: Any) -> None:
        if task.status.final:
            self._last_update.pop(task.task_id, None)
        elif not more:
            # Everything summary() shows; error by identity (it is replaced, never edited in place).
            seen = (task.status, task.backend, task.prompt_id, tuple(task.progress.items()), id(task.error))
            if self._last_update.get(task.task_id) == seen:
                return
            self._last_update[task.task_id] = seen
        message = {"type": "task_update", **task.summary(), **more}
        self.hub.publish_text(json.dumps(message, separators=(",", ":"), default=str), task.task_id)
