"""Turns submissions into tracked tasks and keeps them true to what ComfyUI does.

Events from every backend's WebSocket update their task; a reconnect is followed by a reconciliation
through ``/queue`` and ``/history`` because ComfyUI does not replay what a client missed. Outputs are
streamed to ``outputs/`` before a task is called completed.

Several backends form a pool: a task goes to the healthy backend with the least unfinished work that
has every node class of its workflow (or to the one it is pinned to). When none can take it now, the
task waits in ComfyGate's own queue (status ``pending``, bounded by ``max_pending_tasks``) and a
dispatcher hands it out as soon as a backend frees up or comes back. Tasks whose WebSocket messages go
to another client id (those recovered after a restart of ComfyGate) are followed by polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from backends import ComfyUIBackend
from comfyui_events import ComfyUIEvent
from config import Settings
from errors import ComfyGateError, ComfyUIUnavailable, NotFound, PromptRejected, ServiceBusy
from event_hub import EventHub
from safe_paths import content_type, sanitize_filename
from tasks import Task, TaskStatus, TaskStore

if TYPE_CHECKING:
    from viewcomfy_backend import ViewComfyBackend

log = logging.getLogger("comfygate.tasks")

# An observer learns of every task change: "created" (accepted: queued at a backend, or pending in
# ComfyGate's own queue), "status" (a new status that is not final, e.g. pending → queued → running)
# and "finished" (final). Durable storage, webhooks and metrics hang off this.
Observer = Callable[[Task, str], None]

HISTORY_RETRIES = 5  # ComfyUI writes history a little after execution_success
HISTORY_RETRY_DELAY = 0.1


def execution_error(data: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's execution_error (from the WebSocket or from history) as a task error."""
    return {
        "type": "execution_error",
        "message": f"node {data.get('node_id')} ({data.get('node_type')}) raised "
        f"{data.get('exception_type')}: {data.get('exception_message')}",
        **{k: data.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message", "traceback")},
    }


class TaskManager:
    def __init__(self, settings: Settings, store: TaskStore, hub: EventHub) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.backends: dict[str, ComfyUIBackend] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.temp_dir = settings.outputs_dir / "temp"
        self.observers: list[Observer] = []
        # ComfyGate's own queue: tasks accepted but not yet handed to a backend, oldest first.
        self.pending: dict[str, Task] = {}
        self._wakeup = asyncio.Event()
        self._classes: dict[str, frozenset[str]] = {}  # node classes of each unfinished task
        self._given: dict[str, int] = {}  # tasks handed to each backend, to break ties evenly
        self._followed: set[str] = set()  # tasks followed by polling /history, not by the WebSocket
        self._settling: set[str] = set()  # tasks whose fate is being read from /history
        self._merged_info: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
        # Set by the durable store: finished tasks then drop their workflow, loaded back on demand.
        self.workflow_loader: Callable[[str], Coroutine[Any, Any, dict[str, Any] | None]] | None = None
        # What listeners last got, so an event that changes nothing they see is not sent again: ComfyUI
        # sends 3-4 such events per node (execution_cached, progress_state...), each fanned out to all.
        self._last_update: dict[str, tuple[Any, ...]] = {}  # task id → what it last showed, unfinished only
        self._last_queue: dict[str, int] = {}  # backend name → last queue_remaining published

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _notify(self, task: Task, change: str) -> None:
        for observer in self.observers:
            try:
                observer(task, change)
            except Exception:
                log.exception("task observer %r failed on %s", observer, change)

    # --- lifecycle -----------------------------------------------------------------------------
    def add_backend(self, backend: ComfyUIBackend | ViewComfyBackend) -> None:
        """Any object with the ``backends.Backend`` interface (ComfyUI, ViewComfy, ...)."""
        self.backends[backend.name] = backend  # type: ignore[assignment]

    def comfyui_backends(self) -> list[ComfyUIBackend]:
        """Backends that are ComfyUI servers (queue, object_info, uploads); ViewComfy ones have none of those."""
        return [b for b in self.backends.values() if b.kind == "comfyui"]

    async def start(self) -> None:
        self.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        for backend in self.backends.values():
            backend.start()
            if backend.kind == "comfyui" and backend.down_since is not None:
                # A backend that never comes up must not hold recovered tasks forever either.
                self.spawn(self._fail_if_still_down(backend, backend.down_since), name=f"down {backend.name}")
        self.spawn(self._dispatcher(), name="dispatcher")
        self.spawn(self._prober(), name="prober")

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for backend in self.backends.values():
            await backend.stop()
        for job in list(self._background):
            job.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run in the background, tracked so shutdown can wait for it and errors are logged."""
        job = asyncio.create_task(coro, name=name)
        self._background.add(job)
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, job: asyncio.Task[Any]) -> None:
        self._background.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("background job %s failed", job.get_name(), exc_info=job.exception())

    # --- choosing a backend ----------------------------------------------------------------------
    def choose_backend(self, classes: set[str], pinned: str | None = None, kind: str | None = None) -> ComfyUIBackend:
        """The pinned backend, else the least loaded able one; ``kind`` limits the choice (e.g. "comfyui").

        A ViewComfy backend (remote and paid per run) only gets an unpinned task when no ComfyUI one can.
        """
        if pinned:
            backend = self.backends.get(pinned) or next((b for b in self.backends.values() if b.url == pinned), None)
            if backend is None or (kind is not None and backend.kind != kind):
                known = ", ".join(b.name for b in self.backends.values() if kind is None or b.kind == kind)
                raise NotFound(f"no backend named {pinned!r}; known: {known}")
            if not backend.healthy:
                raise ComfyUIUnavailable(f"backend {backend.name} ({backend.url}) is not reachable", retry_after=5)
            return backend
        healthy = [b for b in self.backends.values() if b.healthy and (kind is None or b.kind == kind)]
        if not healthy:
            urls = ", ".join(b.url for b in self.backends.values())
            raise ServiceBusy(f"no ComfyUI backend is reachable ({urls})", retry_after=5)
        able = [b for b in healthy if b.can_run(classes)]
        if not able:
            raise ServiceBusy("no reachable backend has every node class of this workflow", retry_after=30)
        local = [b for b in able if b.kind == "comfyui"]
        return min(local or able, key=lambda b: b.load)

    def find_backend(self, name_or_url: str, kind: str | None = None) -> Any:
        backend = self.backends.get(name_or_url) or next(
            (b for b in self.backends.values() if b.url == name_or_url), None
        )
        if backend is None or (kind is not None and backend.kind != kind):
            known = ", ".join(b.name for b in self.backends.values() if kind is None or b.kind == kind)
            raise NotFound(f"no backend named {name_or_url!r}; known: {known}")
        return backend

    def _has_room(self, backend: Any) -> bool:
        limit = self.settings.max_backend_queue
        return limit <= 0 or backend.load < limit

    def _pick(self, task: Task) -> Any | None:
        """The backend that should take ``task`` now, or None if it has to wait."""
        if task.pinned_backend:
            backend = self.backends.get(task.pinned_backend) or next(
                (b for b in self.backends.values() if b.url == task.pinned_backend), None
            )
            return backend if backend is not None and backend.healthy and self._has_room(backend) else None
        classes = self._classes_of(task)
        kind = task.extra.get("backend_kind")
        able = [
            b
            for b in self.backends.values()
            if b.healthy and (kind is None or b.kind == kind) and b.can_run(classes) and self._has_room(b)
        ]
        # A ViewComfy backend (remote, paid per run) only gets an unpinned task when no ComfyUI one can.
        local = [b for b in able if b.kind == "comfyui"]
        if not (local or able):
            return None
        return min(local or able, key=lambda b: (b.load, self._given.get(b.name, 0)))

    def _fits(self, task: Task, backend: Any) -> bool:
        if task.pinned_backend:
            return task.pinned_backend in (backend.name, backend.url)
        kind = task.extra.get("backend_kind")
        return (kind is None or backend.kind == kind) and backend.can_run(self._classes_of(task))

    def _classes_of(self, task: Task) -> frozenset[str]:
        classes = self._classes.get(task.task_id)
        if classes is None:
            classes = frozenset(str(n.get("class_type")) for n in task.workflow.values() if isinstance(n, dict))
            self._classes[task.task_id] = classes
        return classes

    def wake(self) -> None:
        """Ask the dispatcher to look at the pending tasks again (a backend freed up or came back)."""
        self._wakeup.set()

    async def object_info(self, pinned: str | None = None, *, stale_ok: bool = False) -> dict[str, Any]:
        """What to validate a workflow against: the pinned backend's node classes, else every backend's.

        ``stale_ok``: a backend that is down counts with its last object_info, so a submission can still
        be checked and held until a capable backend comes back. Other callers get a 503 instead.
        """
        if pinned:
            backend = self.find_backend(pinned)
            usable = stale_ok or getattr(backend, "connected", backend.healthy)
            if getattr(backend, "object_info", None) is not None and usable:
                return backend.object_info
            if not backend.healthy and not getattr(backend, "connected", False):
                raise ComfyUIUnavailable(f"backend {backend.name} ({backend.url}) is not reachable", retry_after=5)
            return await backend.get_object_info()
        infos: list[dict[str, Any]] = []
        for backend in self.backends.values():
            if not hasattr(backend, "get_object_info"):
                continue
            info = backend.object_info if stale_ok or backend.connected else None
            if info is None and backend.connected:
                try:
                    info = await backend.get_object_info()
                except ComfyGateError:
                    info = None
            if info is not None:
                infos.append(info)
        if not infos:
            raise ServiceBusy("no ComfyUI backend is reachable to describe its nodes", retry_after=5)
        if len(infos) == 1:
            return infos[0]
        cached = self._merged_info
        stale = cached is None or len(cached[0]) != len(infos)
        if stale or any(a is not b for a, b in zip(cached[0], infos, strict=True)):  # type: ignore[index]
            merged: dict[str, Any] = {}
            for info in reversed(infos):
                merged.update(info)
            self._merged_info = cached = (infos, merged)
        return cached[1]

    # --- submission ----------------------------------------------------------------------------
    async def submit(
        self,
        workflow: dict[str, Any],
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        workflow_name: str | None = None,
        backend: str | None = None,
        extra: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> Task:
        """Hand a ready API-format workflow to a backend, or hold it in ComfyGate's queue.

        When a backend can take it now, ComfyUI's refusal is raised (422), not stored. When none can
        (all capable backends down or full), the task is held as ``pending``; a full queue is a 503.
        ``kind`` limits the choice to backends of that kind (e.g. "comfyui").
        """
        classes = frozenset(str(node.get("class_type")) for node in workflow.values() if isinstance(node, dict))
        if backend:
            pinned = self.find_backend(backend, kind)
            if not pinned.healthy and pinned.kind != "comfyui":
                # No live health signal to wait on (ViewComfy): say so now rather than hold the task.
                raise ComfyUIUnavailable(f"backend {pinned.name} ({pinned.url}) is not reachable", retry_after=5)
            backend = pinned.name
            candidates = [pinned]
        else:
            candidates = [b for b in self.backends.values() if kind is None or b.kind == kind]
            if not candidates:
                raise ServiceBusy(f"no backend of kind {kind!r} is configured", retry_after=30)
        if not any(b.can_run(set(classes)) for b in candidates):
            raise ServiceBusy("no backend has every node class of this workflow", retry_after=30)
        task = Task(
            task_id=uuid.uuid4().hex,
            prompt_id=str(uuid.uuid4()),
            workflow=workflow,
            params=params or {},
            workflow_name=workflow_name,
            pinned_backend=backend,
            timeout=timeout or self.settings.task_timeout,
            extra=extra or {},
        )
        if kind is not None:
            task.extra["backend_kind"] = kind  # kept with the task, so a held or recovered one obeys it too
        self._classes[task.task_id] = classes
        target = self._pick(task)
        if target is not None and not any(self._fits(p, target) for p in self.pending.values()):
            try:
                await self._dispatch(task, target, new=True)
            except BaseException:
                self._classes.pop(task.task_id, None)
                raise
            return task
        if len(self.pending) >= self.settings.max_pending_tasks:
            self._classes.pop(task.task_id, None)
            raise ServiceBusy(
                f"ComfyGate's queue is full: {len(self.pending)} tasks wait for a backend; retry later",
                retry_after=5,
                pending=len(self.pending),
            )
        self.store.add(task)
        self.pending[task.task_id] = task
        self._arm_timeout(task)
        self._notify(task, "created")
        self._publish(task)
        self.wake()
        return task

    async def _dispatch(self, task: Task, backend: Any, *, new: bool = False) -> None:
        """Hand ``task`` to ``backend``. ``new``: not yet in the store (a direct submission)."""
        task.backend = backend.name
        task.attempts += 1
        self._given[backend.name] = self._given.get(backend.name, 0) + 1
        backend.inflight.add(task.task_id)
        self.store.add(task) if new else self.store.reindex(task, task.prompt_id)
        if backend.kind != "comfyui":
            # Backends without a ComfyUI WebSocket (ViewComfy) drive their task themselves through
            # mark_running / publish / finish / complete_files.
            task.status = TaskStatus.QUEUED
            task.queued_at = time.time()
            if new:
                self._arm_timeout(task)
            self._notify(task, "created" if new else "status")
            self._publish(task)
            self.spawn(backend.execute(task, self), name=f"{backend.kind} {task.task_id}")
            return
        try:
            answer = await backend.client.post_prompt(
                task.workflow, client_id=backend.ws.client_id, prompt_id=task.prompt_id
            )
        except BaseException as exc:
            backend.inflight.discard(task.task_id)
            task.backend = None
            if new:
                self.store.forget(task)
            if isinstance(exc, ComfyUIUnavailable):
                backend.last_error = exc.message
            raise
        task.extra["number"] = answer.get("number")
        if task.status == TaskStatus.PENDING:
            task.status = TaskStatus.QUEUED
            task.queued_at = time.time()
        # An instant workflow can end before ComfyUI's answer reaches us: its end is published already,
        # and a timer armed now would keep the task in memory for its whole timeout.
        if new and not task.status.final:
            self._arm_timeout(task)
        self._notify(task, "created" if new else "status")
        if not task.status.final:
            self._publish(task)

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

    # --- endings ---------------------------------------------------------------------------------
    async def _complete(self, task: Task, backend: ComfyUIBackend, node_outputs: dict[str, Any] | None = None) -> None:
        """Download every output file, then call the task completed (or failed if a file is missing)."""
        if node_outputs is not None:
            task.node_outputs = node_outputs
        try:
            task.outputs = await self._download_outputs(task, backend)
        except ComfyGateError as exc:
            self.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": exc.message})
            return
        task.progress.update({"percent": 100.0, "nodes_done": task.progress.get("nodes_total", len(task.workflow))})
        self.finish(task, TaskStatus.COMPLETED)

    async def _download_outputs(self, task: Task, backend: ComfyUIBackend) -> list[dict[str, Any]]:
        jobs = []
        for node_id, output in task.node_outputs.items():
            if not isinstance(output, dict):
                continue
            for items in output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and isinstance(item.get("filename"), str):
                        jobs.append(self._download_one(task, backend, node_id, item))
        return list(await asyncio.gather(*jobs)) if jobs else []

    async def _download_one(
        self, task: Task, backend: ComfyUIBackend, node_id: str, item: dict[str, Any]
    ) -> dict[str, Any]:
        remote = item.get("type") if isinstance(item.get("type"), str) and item.get("type") else "output"
        kind = "output" if remote == "output" else "temp"  # a backend's answer never picks a local folder
        folder = self.settings.outputs_dir if kind == "output" else self.temp_dir
        local = f"{task.task_id[:8]}_{sanitize_filename(item['filename'])}"
        subfolder = item.get("subfolder") if isinstance(item.get("subfolder"), str) else ""
        size = await backend.client.download(item["filename"], subfolder, remote, folder / local)
        query = "" if kind == "output" else "?type=temp"
        return {
            "filename": local,
            "content_type": content_type(local),
            "size": size,
            "node_id": node_id,
            "type": kind,
            "url": f"/api/image/{local}{query}",
            "comfyui": {"filename": item["filename"], "subfolder": subfolder, "type": remote},
        }

    def finish(self, task: Task, status: TaskStatus, error: dict[str, Any] | None = None) -> None:
        if task.status.final:
            return
        task.status = status
        task.finished_at = time.time()
        if error is not None:
            task.error = error
        backend = self.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.discard(task.task_id)
        self.pending.pop(task.task_id, None)
        self._classes.pop(task.task_id, None)
        handle = self._timers.pop(task.task_id, None)
        if handle is not None:
            handle.cancel()
        self.store.finished(task)
        self._notify(task, "finished")
        self._publish(task, outputs=task.outputs, execution_time=task.execution_time)
        if self.workflow_loader is not None:
            task.workflow = {}  # it is on disk; load_workflow() brings it back for the rare reader
        self.wake()

    async def load_workflow(self, task: Task) -> dict[str, Any]:
        """The task's workflow, read back from the durable store if it was released from memory."""
        if task.workflow or self.workflow_loader is None:
            return task.workflow
        return await self.workflow_loader(task.task_id) or {}

    def complete(self, task: Task, outputs: list[dict[str, Any]]) -> None:
        """For backends that fetch their own outputs (ViewComfy): files are already in outputs/."""
        task.outputs = outputs
        task.progress.update({"percent": 100.0})
        self.finish(task, TaskStatus.COMPLETED)

    def finish_interrupted(self, task: Task, reason: str) -> None:
        self.finish(task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": reason})

    # --- timeouts and interrupts -----------------------------------------------------------------
    def _arm_timeout(self, task: Task, delay: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._timers[task.task_id] = loop.call_later(
            task.timeout if delay is None else delay, self._on_timeout, task.task_id
        )

    def _on_timeout(self, task_id: str) -> None:
        self._timers.pop(task_id, None)
        task = self.store.get(task_id)
        if task is None or task.status.final:
            return
        task.extra["interrupt_reason"] = "timeout"
        self.spawn(self._stop_on_backend(task), name=f"timeout {task_id}")
        self.finish(
            task,
            TaskStatus.TIMEOUT,
            error={"type": "timeout", "message": f"task exceeded its timeout of {task.timeout:g} s"},
        )

    async def interrupt(self, task: Task) -> Task:
        """Stop a task whether it runs or waits; it ends ``interrupted`` once ComfyUI confirms."""
        if task.status.final:
            return task
        if task.status == TaskStatus.PENDING:
            self.finish(
                task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "cancelled before dispatch"}
            )
            return task
        task.extra["interrupt_requested"] = True
        if await self._stop_on_backend(task) == "deleted":
            self.finish(
                task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "removed from the queue"}
            )
        return task

    async def _stop_on_backend(self, task: Task) -> str:
        backend = self.backends.get(task.backend or "")
        if backend is None:
            return "gone"
        if backend.kind != "comfyui":
            return await backend.cancel(task)  # type: ignore[attr-defined]  # no queue to look at: stop the call
        client = backend.client
        try:
            queue = await client.get_queue()
            pending = {item[1] for item in queue.get("queue_pending", [])}
            if task.prompt_id in pending:
                await client.delete_from_queue([task.prompt_id])
                queue = await client.get_queue()
                if task.prompt_id not in {item[1] for item in queue.get("queue_running", [])}:
                    return "deleted"
            await client.interrupt(task.prompt_id)
            return "interrupted"
        except ComfyGateError as exc:
            log.warning("could not stop task %s on %s: %s", task.task_id, backend.name, exc.message)
            return "unreachable"

    # --- backend up / down -----------------------------------------------------------------------
    async def on_backend_state(self, backend: ComfyUIBackend, up: bool) -> None:
        self.hub.publish({"type": "backend_update", **backend.describe()})
        self._last_queue.pop(backend.name, None)  # the next queue_update goes out whatever its value
        if up:
            self.spawn(self._refresh_info(backend), name=f"object_info {backend.name}")
            self.spawn(self.reconcile(backend), name=f"reconcile {backend.name}")
        else:
            self.spawn(self._fail_if_still_down(backend, backend.down_since), name=f"down {backend.name}")

    async def _fail_if_still_down(self, backend: ComfyUIBackend, since: float | None) -> None:
        """After the grace period: move the backend's not-started tasks elsewhere, fail the started ones."""
        await asyncio.sleep(self.settings.backend_down_grace)
        if backend.connected or backend.down_since != since:
            return
        for task_id in list(backend.inflight):
            task = self.store.get(task_id)
            if task is None or task.status.final:
                backend.inflight.discard(task_id)
                continue
            if task.status == TaskStatus.PENDING:
                continue  # its POST /prompt is still under way; the dispatcher deals with the outcome
            if task.started_at is None and task.status == TaskStatus.QUEUED:
                # A fresh prompt id: should the old backend come back with it queued, that run is ignored.
                self._requeue(task, f"{backend.name} ({backend.url}) is down", new_prompt=True)
            else:
                self.finish(
                    task,
                    TaskStatus.FAILED,
                    error={
                        "type": "backend_unreachable",
                        "message": f"ComfyUI at {backend.url} has been unreachable for "
                        f"{self.settings.backend_down_grace:g} s; the task's fate there is unknown",
                    },
                )

    async def reconcile(self, backend: ComfyUIBackend) -> None:
        """Bring every in-flight task of ``backend`` in line with what ComfyUI says now."""
        if not backend.inflight:
            return
        asked_at = time.time()
        try:
            queue = await backend.client.get_queue()
        except ComfyGateError as exc:
            log.warning("reconcile of %s postponed: %s", backend.name, exc.message)
            return
        running = {item[1] for item in queue.get("queue_running", [])}
        pending = {item[1] for item in queue.get("queue_pending", [])}
        for task_id in list(backend.inflight):
            task = self.store.get(task_id)
            if task is None or task.status.final:
                backend.inflight.discard(task_id)
                continue
            if task_id in self._followed or task.status == TaskStatus.PENDING:
                continue  # followed by polling, or its POST /prompt is still under way
            if task.queued_at is not None and task.queued_at > asked_at:
                continue  # accepted after /queue answered: not in that answer, yet not lost
            if task.prompt_id in running:
                backend.running_prompt = task.prompt_id
                if task.status != TaskStatus.RUNNING:
                    task.status = TaskStatus.RUNNING
                    task.started_at = task.started_at or time.time()
                    self._publish(task)
                continue
            if task.prompt_id in pending:
                continue
            self.spawn(self._settle_from_history(task, backend), name=f"settle {task_id}")

    async def _settle_from_history(self, task: Task, backend: ComfyUIBackend) -> None:
        """A task missing from its backend's queue: completed (history), or lost. One settle per task."""
        if task.task_id in self._settling:
            return
        self._settling.add(task.task_id)
        try:
            await self._settle(task, backend)
        finally:
            self._settling.discard(task.task_id)

    async def _settle(self, task: Task, backend: ComfyUIBackend) -> None:
        entry = None
        attempts = task.attempts
        for attempt in range(HISTORY_RETRIES):
            try:
                entry = (await backend.client.get_history(task.prompt_id)).get(task.prompt_id)
            except ComfyGateError:
                entry = None
            if entry or task.status.final:
                break
            await asyncio.sleep(HISTORY_RETRY_DELAY * (attempt + 1))
        if task.status.final or task.attempts != attempts or task.backend != backend.name:
            return  # settled, moved or resubmitted meanwhile
        if entry:
            await self.apply_history(task, backend, entry)
        elif task.started_at is None and task.status == TaskStatus.QUEUED:
            log.info("task %s vanished from %s before it started; submitting it again", task.task_id, backend.name)
            self._requeue(task, f"{backend.name} lost it before it started (restarted?)", new_prompt=False)
        else:
            self.finish(
                task,
                TaskStatus.FAILED,
                error={
                    "type": "backend_restarted",
                    "message": f"ComfyUI at {backend.url} lost this task while it was running "
                    "(it restarted or dropped its queue); submit it again",
                },
            )

    async def apply_history(self, task: Task, backend: ComfyUIBackend, entry: dict[str, Any]) -> None:
        status = entry.get("status") or {}
        messages = status.get("messages") or []
        events = {name: data for name, data in messages if isinstance(data, dict)}
        if status.get("status_str") == "success" or status.get("completed"):
            task.started_at = task.started_at or time.time()
            await self._complete(task, backend, node_outputs=entry.get("outputs") or {})
        elif "execution_interrupted" in events:
            self.finish(task, TaskStatus.INTERRUPTED, error={"type": "interrupted", "message": "interrupted"})
        else:
            self.finish(task, TaskStatus.FAILED, error=execution_error(events.get("execution_error", {})))

    # --- the pool: dispatcher, probes, moving tasks -------------------------------------------------
    async def _dispatcher(self) -> None:
        """Hand pending tasks out, oldest first, whenever something may have changed."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._dispatch_pending()
            except Exception:
                log.exception("dispatcher round failed")

    async def _dispatch_pending(self) -> None:
        for task in list(self.pending.values()):
            if task.task_id not in self.pending:
                continue
            if task.status.final:
                self.pending.pop(task.task_id, None)
                continue
            target = self._pick(task)
            if target is None:
                continue  # a later task may fit another backend: no head-of-line blocking
            del self.pending[task.task_id]
            try:
                await self._dispatch(task, target)
            except PromptRejected as exc:
                self.finish(
                    task,
                    TaskStatus.FAILED,
                    error={
                        "type": "prompt_rejected",
                        "message": f"{target.name} rejected the prompt: {exc.message}",
                        "comfyui_error": exc.error,
                        "node_errors": exc.node_errors,
                    },
                )
            except ComfyUIUnavailable as exc:
                # Out of rotation until its next probe answers; the task keeps its place in line.
                log.warning("%s refused task %s (%s); holding it", target.name, task.task_id, exc.message)
                if hasattr(target, "probe_ok"):
                    target.probe_ok = False
                self.pending = {task.task_id: task, **self.pending}
            except ComfyGateError as exc:
                self.finish(task, TaskStatus.FAILED, error={"type": "dispatch_failed", "message": exc.message})
            except asyncio.CancelledError:
                self.pending = {task.task_id: task, **self.pending}
                raise

    def _requeue(self, task: Task, reason: str, *, new_prompt: bool) -> None:
        """Put an accepted task back in ComfyGate's queue, in creation order, for any capable backend."""
        backend = self.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.discard(task.task_id)
        self._followed.discard(task.task_id)
        if new_prompt:
            old = task.prompt_id
            task.prompt_id = str(uuid.uuid4())
            self.store.reindex(task, old)
        task.status = TaskStatus.PENDING
        task.backend = None
        task.queued_at = None
        task.extra.pop("number", None)
        task.extra["requeued"] = reason
        items = sorted([*self.pending.values(), task], key=lambda t: t.created_at)
        self.pending = {t.task_id: t for t in items}
        self._notify(task, "status")
        self._publish(task)
        self.wake()

    async def _refresh_info(self, backend: Any) -> None:
        """On connect: learn what the backend can run, then let it take pending work."""
        refresh = getattr(backend, "refresh_object_info", None)
        if refresh is not None and await refresh():
            self.hub.publish({"type": "backend_update", **backend.describe()})
        self.wake()

    async def _prober(self) -> None:
        """Ask every connected backend for /system_stats; one that stops answering leaves the rotation."""
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            await asyncio.gather(*(self._probe_one(b) for b in self.backends.values()), return_exceptions=True)
            self.wake()  # a safety net: whatever was missed, pending tasks get another look

    async def _probe_one(self, backend: Any) -> None:
        probe = getattr(backend, "probe", None)
        if probe is None or backend.kind != "comfyui" or not backend.connected:
            return  # a ViewComfy probe costs nothing but tells nothing new either
        before = backend.healthy
        await probe()
        if backend.node_classes is None:
            await backend.refresh_object_info()
        if backend.healthy != before:
            log.info("%s is %s", backend.name, "back in rotation" if backend.healthy else "out of rotation")
            self.hub.publish({"type": "backend_update", **backend.describe()})

    # --- recovery after a restart of ComfyGate --------------------------------------------------------
    def recover(self, tasks: list[Task]) -> None:
        """Take back the unfinished tasks of a previous run (from the durable store) and settle each.

        Pending ones join the queue. Those handed to a ComfyUI backend are followed by polling its
        /history and /queue: their WebSocket messages go to the previous process's client id.
        """
        now = time.time()
        for task in sorted(tasks, key=lambda t: t.created_at):
            if task.status.final:
                continue
            self._arm_timeout(task, max(task.timeout - (now - task.created_at), 1.0))
            backend = self.backends.get(task.backend or "")
            if task.status == TaskStatus.PENDING or task.backend is None:
                task.status, task.backend = TaskStatus.PENDING, None
                self.pending[task.task_id] = task
            elif backend is None or backend.kind != "comfyui":
                if task.started_at is None:
                    self._requeue(task, f"backend {task.backend} is no longer available", new_prompt=True)
                else:
                    self.finish(
                        task,
                        TaskStatus.FAILED,
                        error={
                            "type": "backend_gone",
                            "message": f"ComfyGate restarted while the task ran on {task.backend}, which it "
                            "cannot follow any more; submit it again",
                        },
                    )
            else:
                backend.inflight.add(task.task_id)
                self.spawn(self.follow(task, backend), name=f"follow {task.task_id}")
        self.wake()

    async def follow(self, task: Task, backend: ComfyUIBackend) -> None:
        """Track a task by polling /history and /queue until it ends (no WebSocket messages for it)."""
        self._followed.add(task.task_id)
        prompt_id = task.prompt_id
        try:
            while not task.status.final and task.prompt_id == prompt_id and task.backend == backend.name:
                try:
                    entry = (await backend.client.get_history(prompt_id)).get(prompt_id)
                    if entry:
                        await self.apply_history(task, backend, entry)
                        return
                    queue = await backend.client.get_queue()
                except ComfyGateError:
                    await asyncio.sleep(self.settings.poll_interval)
                    continue  # unreachable: the down grace period decides its fate
                if prompt_id in {item[1] for item in queue.get("queue_running", [])}:
                    if task.status != TaskStatus.RUNNING:
                        task.status = TaskStatus.RUNNING
                        task.started_at = task.started_at or time.time()
                        task.progress = {"percent": 0.0, "nodes_done": 0, "nodes_total": len(task.workflow)}
                        self._notify(task, "status")
                        self._publish(task)
                elif prompt_id not in {item[1] for item in queue.get("queue_pending", [])}:
                    await self._settle_from_history(task, backend)  # done just now, or vanished
                    return
                await asyncio.sleep(self.settings.poll_interval)
        finally:
            self._followed.discard(task.task_id)

    # --- queries -----------------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id!r}", task_id=task_id)
        return task


__all__ = ["TaskManager", "PromptRejected"]
