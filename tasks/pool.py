"""The pool: which backend a task goes to, and ComfyGate's own queue of tasks waiting for one.

A task goes to the healthy backend with the least unfinished work that has every node class of its
workflow (or to the one it is pinned to); a ViewComfy backend only gets an unpinned task when no
ComfyUI one can. When none can take it now, the task waits in ``pending`` and a dispatcher hands it
out as soon as a backend frees up or comes back; probes take a backend that stops answering out of
the rotation. ``_requeue`` moves an accepted task back into that queue. Kept apart from the rest of
``TaskManager`` so the rules of the pool read in one place.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from backends.comfyui import ComfyUIBackend
from core.errors import ComfyGateError, ComfyUIUnavailable, NotFound, PromptRejected, ServiceBusy
from core.task import Task, TaskStatus

log = logging.getLogger("comfygate.tasks")


class PoolMixin:
    """Choosing backends, the held queue and its dispatcher, probes, moving tasks.

    Part of ``TaskManager`` (``task_manager.py``), which sets the shared state in its ``__init__``.
    """

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
