"""The pool: which backend a task goes to, and ComfyGate's own queue of tasks waiting for one.

A task goes to the healthy backend with the least unfinished work that has every node class of its
workflow (or to the one it is pinned to); a remote backend (ViewComfy) only gets an unpinned task when
no local one can. When none can take it now, the task waits in ``pending`` and the dispatcher hands it
out as soon as a backend frees up or comes back; probes take a backend that stops answering out of the
rotation.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from backends.base import Backend
from backends.comfyui import ComfyUIBackend
from config import Settings
from core.errors import ComfyGateError, ComfyUIUnavailable, NotFound, PromptRejected, ServiceBusy, dispatch_failure
from core.task import Task, TaskStatus
from tasks.placement import Placement
from tasks.store import TaskStore
from tasks.updates import Updates

log = logging.getLogger("comfygate.tasks")

Dispatch = Callable[[Task, Backend], Awaitable[None]]
Fail = Callable[[Task, dict[str, Any]], None]


def workflow_classes(workflow: dict[str, Any]) -> frozenset[str]:
    return frozenset(str(node.get("class_type")) for node in workflow.values() if isinstance(node, dict))


class Pool:
    def __init__(self, settings: Settings, store: TaskStore, updates: Updates) -> None:
        self.settings = settings
        self.store = store
        self.updates = updates
        self.backends: dict[str, Backend] = {}
        # The ComfyUI servers among them: what has a queue, object_info and input uploads.
        self.comfyui: dict[str, ComfyUIBackend] = {}
        # ComfyGate's own queue: tasks accepted but not yet handed to a backend, oldest first.
        self.pending: dict[str, Task] = {}
        self._wakeup = asyncio.Event()
        self._classes: dict[str, frozenset[str]] = {}  # node classes of each unfinished task
        self._given: dict[str, int] = {}  # tasks handed to each backend, to break ties evenly
        # Comfy.org partner-node keys of unfinished tasks: in memory only, never in the task or its store.
        self.partner_keys: dict[str, str] = {}
        # Unfinished tasks that need something only this process holds (a partner-node key, uploaded files),
        # and what: with several replicas (cluster mode) such a task runs on a backend this one posts to.
        self.bound_here: dict[str, str] = {}
        self._merged_info: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
        # Cluster mode: the choice of a backend and the queue are shared by every replica (tasks.placement).
        self.placement: Placement | None = None

    def add(self, backend: Backend) -> None:
        self.backends[backend.name] = backend
        if isinstance(backend, ComfyUIBackend):
            self.comfyui[backend.name] = backend

    # --- choosing a backend ----------------------------------------------------------------------
    def find(self, name_or_url: str, kind: str | None = None) -> Backend:
        backend = self.backends.get(name_or_url) or next(
            (b for b in self.backends.values() if b.url == name_or_url), None
        )
        if backend is None or (kind is not None and backend.kind != kind):
            known = ", ".join(b.name for b in self.backends.values() if kind is None or b.kind == kind)
            raise NotFound(f"no backend named {name_or_url!r}; known: {known}")
        return backend

    def candidates(self, pinned: str | None, kind: str | None, classes: frozenset[str]) -> str | None:
        """Check that some backend could ever run this; the pinned backend's name (None if unpinned)."""
        if pinned:
            backend = self.find(pinned, kind)
            if not backend.healthy and not backend.live_health:
                # No live health signal to wait on (ViewComfy): say so now rather than hold the task.
                raise ComfyUIUnavailable(f"backend {backend.name} ({backend.url}) is not reachable", retry_after=5)
            able = [backend]
        else:
            able = [b for b in self.backends.values() if kind is None or b.kind == kind]
            if not able:
                raise ServiceBusy(f"no backend of kind {kind!r} is configured", retry_after=30)
        if not any(b.can_run(set(classes)) for b in able):
            raise ServiceBusy("no backend has every node class of this workflow", retry_after=30)
        return able[0].name if pinned else None

    def has_room(self, backend: Backend) -> bool:
        limit = self.settings.max_backend_queue
        return limit <= 0 or backend.load < limit

    def pick(self, task: Task) -> Backend | None:
        """The backend that should take ``task`` now, or None if it has to wait."""
        if task.pinned_backend:
            backend = self.backends.get(task.pinned_backend) or next(
                (b for b in self.backends.values() if b.url == task.pinned_backend), None
            )
            return backend if backend is not None and backend.healthy and self.has_room(backend) else None
        classes = self.classes_of(task)
        kind = task.extra.get("backend_kind")
        able = [
            b
            for b in self.backends.values()
            if b.healthy and (kind is None or b.kind == kind) and b.can_run(set(classes)) and self.has_room(b)
        ]
        local = [b for b in able if not b.remote]
        if not (local or able):
            return None
        return min(local or able, key=lambda b: (b.load, self._given.get(b.name, 0)))

    def fits(self, task: Task, backend: Backend) -> bool:
        if task.pinned_backend:
            return task.pinned_backend in (backend.name, backend.url)
        kind = task.extra.get("backend_kind")
        return (kind is None or backend.kind == kind) and backend.can_run(set(self.classes_of(task)))

    def waiting_for(self, backend: Backend) -> bool:
        """Does an older pending task wait for this backend (then a new one must not jump the line)?"""
        return any(self.fits(p, backend) for p in self.pending.values())

    def classes_of(self, task: Task) -> frozenset[str]:
        classes = self._classes.get(task.task_id)
        if classes is None:
            classes = self._classes[task.task_id] = workflow_classes(task.workflow)
        return classes

    def remember_classes(self, task: Task, classes: frozenset[str]) -> None:
        self._classes[task.task_id] = classes

    def given(self, task: Task, backend: Backend) -> None:
        """``task`` is being handed to ``backend``."""
        task.backend = backend.name
        task.attempts += 1
        self._given[backend.name] = self._given.get(backend.name, 0) + 1
        backend.inflight.add(task.task_id)

    def taken_back(self, task: Task, backend: Backend) -> None:
        """The hand-over failed."""
        backend.inflight.discard(task.task_id)
        task.backend = None

    def release(self, task: Task) -> None:
        """``task`` is final: out of its backend's count, the queue and the routing state."""
        backend = self.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.discard(task.task_id)
        self.pending.pop(task.task_id, None)
        self._classes.pop(task.task_id, None)
        self.partner_keys.pop(task.task_id, None)
        self.bound_here.pop(task.task_id, None)

    def unfinished(self) -> int:
        """Tasks handed to a backend and not final, plus those held in ComfyGate's queue."""
        return sum(len(b.inflight) for b in self.backends.values()) + len(self.pending)

    def hold(self, task: Task) -> None:
        """Into ComfyGate's queue; a full queue is a 503."""
        if len(self.pending) >= self.settings.max_pending_tasks:
            self._classes.pop(task.task_id, None)
            raise ServiceBusy(
                f"ComfyGate's queue is full: {len(self.pending)} tasks wait for a backend; retry later",
                retry_after=5,
                pending=len(self.pending),
            )
        self.pending[task.task_id] = task

    def forget_classes(self, task: Task) -> None:
        self._classes.pop(task.task_id, None)

    def wake(self) -> None:
        """Ask the dispatcher to look at the pending tasks again (a backend freed up or came back)."""
        self._wakeup.set()

    # --- what the backends can run ---------------------------------------------------------------
    async def object_info(self, pinned: str | None = None, *, stale_ok: bool = False) -> dict[str, Any]:
        """What to validate a workflow against: the pinned backend's node classes, else every backend's.

        ``stale_ok``: a backend that is down counts with its last object_info, so a submission can still
        be checked and held until a capable backend comes back. Other callers get a 503 instead.
        """
        if pinned:
            backend = self.comfyui.get(self.find(pinned).name)
            if backend is None:
                raise NotFound(f"backend {pinned!r} is not a ComfyUI server: it has no object_info")
            if backend.object_info is not None and (stale_ok or backend.connected):
                return backend.object_info
            if not backend.healthy and not backend.connected:
                raise ComfyUIUnavailable(f"backend {backend.name} ({backend.url}) is not reachable", retry_after=5)
            return await backend.get_object_info()
        infos = await self._infos(stale_ok)
        if not infos:
            raise ServiceBusy("no ComfyUI backend is reachable to describe its nodes", retry_after=5)
        if len(infos) == 1:
            return infos[0]
        cached = self._merged_info
        if cached is None or len(cached[0]) != len(infos) or any(a is not b for a, b in zip(cached[0], infos)):  # noqa: B905
            merged: dict[str, Any] = {}
            for info in reversed(infos):
                merged.update(info)
            self._merged_info = cached = (infos, merged)
        return cached[1]

    async def _infos(self, stale_ok: bool) -> list[dict[str, Any]]:
        infos: list[dict[str, Any]] = []
        for backend in self.comfyui.values():
            info = backend.object_info if stale_ok or backend.connected else None
            if info is None and backend.connected:
                try:
                    info = await backend.get_object_info()
                except ComfyGateError:
                    info = None
            if info is not None:
                infos.append(info)
        return infos

    # --- the dispatcher, probes, moving tasks ------------------------------------------------------
    async def run_dispatcher(self, dispatch: Dispatch, fail: Fail) -> None:
        """Hand pending tasks out, oldest first, whenever something may have changed."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._dispatch_pending(dispatch, fail)
            except Exception:
                log.exception("dispatcher round failed")

    async def _dispatch_pending(self, dispatch: Dispatch, fail: Fail) -> None:
        for task in list(self.pending.values()):
            if task.task_id not in self.pending:
                continue
            if task.status.final:
                self.pending.pop(task.task_id, None)
                continue
            target = self.pick(task)
            if target is None:
                continue  # a later task may fit another backend: no head-of-line blocking
            del self.pending[task.task_id]
            try:
                await dispatch(task, target)
            except PromptRejected as exc:
                fail(
                    task,
                    {
                        "type": "prompt_rejected",
                        "message": f"{target.name} rejected the prompt: {exc.message}",
                        "comfyui_error": exc.error,
                        "node_errors": exc.node_errors,
                    },
                )
            except ComfyUIUnavailable as exc:
                # Out of rotation until its next probe answers; the task keeps its place in line.
                log.warning("%s refused task %s (%s); holding it", target.name, task.task_id, exc.message)
                comfyui = self.comfyui.get(target.name)
                if comfyui is not None:
                    comfyui.probe_ok = False
                self.pending = {task.task_id: task, **self.pending}
            except ComfyGateError as exc:
                fail(task, dispatch_failure(exc))
            except asyncio.CancelledError:
                self.pending = {task.task_id: task, **self.pending}
                raise

    def requeue(self, task: Task, reason: str, *, new_prompt: bool) -> None:
        """Put an accepted task back in ComfyGate's queue, in creation order, for any capable backend."""
        backend = self.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.discard(task.task_id)
        if new_prompt:
            old = task.prompt_id
            task.prompt_id = str(uuid.uuid4())
            self.store.reindex(task, old)
        task.status = TaskStatus.PENDING
        task.backend = None
        task.queued_at = None
        task.extra.pop("number", None)
        task.extra["requeued"] = reason
        if self.placement is not None:
            self.updates.notify(task, "status")
            self.updates.task(task)
            self.placement.requeue(task)
            return
        items = sorted([*self.pending.values(), task], key=lambda t: t.created_at)
        self.pending = {t.task_id: t for t in items}
        self.updates.notify(task, "status")
        self.updates.task(task)
        self.wake()

    async def refresh_info(self, backend: ComfyUIBackend) -> None:
        """On connect: learn what the backend can run and which newer routes it has, then let it take work."""
        await backend.detect_features()
        if await backend.refresh_object_info():
            self.updates.backend(backend)
        self.wake()

    async def run_prober(self) -> None:
        """Ask every connected ComfyUI backend for /system_stats; one that stops answering leaves the rotation."""
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            await asyncio.gather(*(self._probe_one(b) for b in self.comfyui.values()), return_exceptions=True)
            self.wake()  # a safety net: whatever was missed, pending tasks get another look

    async def _probe_one(self, backend: ComfyUIBackend) -> None:
        if not backend.connected:
            return
        before = backend.healthy
        await backend.probe()
        if backend.node_classes is None:
            await backend.refresh_object_info()
        if backend.healthy != before:
            log.info("%s is %s", backend.name, "back in rotation" if backend.healthy else "out of rotation")
            self.updates.backend(backend)
