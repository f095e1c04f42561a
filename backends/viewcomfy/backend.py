"""A ViewComfy deployment as a ComfyGate backend: its tasks are tracked like any ComfyUI task.

ViewComfy has no WebSocket, queue, history, health or cancel route: one streaming POST per task is
all there is. So this backend drives its task itself (``TaskHost._dispatch`` spawns ``execute``):
queued, running when the call is sent, SSE log lines as progress updates, base64 outputs decoded into
``outputs/``, then completed or failed.

Decisions:

* What is sent: the task's params in ``<node>-inputs-<name>`` form (the values ComfyGate applied, seeds
  resolved) *and* ``workflow_api`` = the task's prepared workflow. The workflow makes the remote run
  exactly what ComfyGate validated and shows in ``/api/task`` (the deployment's own copy may differ or
  change); the params satisfy ViewComfy's "params cannot be empty" and name what changed in its logs.
  Both say the same thing, so it does not matter which one the server applies last.
* No parameters at all: every seed gets a new value first (ViewComfy's rule, ``workflow_params.bump_seed``),
  else an identical prompt is answered from ComfyUI's cache with nothing new.
* Health: assumed healthy until a call fails with ``ViewComfyUnavailable``; then unhealthy for a backoff
  that doubles per failure (capped). Once it has passed, the next task tries again; any answer, even an
  error, proves the endpoint reachable and resets it.
* Interrupt and timeout cancel the local streaming call only: ViewComfy has no cancel route, so the
  remote run may go on (and be billed) until it ends there.
* Credentials live only in the ``ViewComfyClient``: ``describe()``, errors and logs show the URL without
  userinfo or query, and never the client id or secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from backends.base import BackendBase, TaskHost
from backends.viewcomfy.client import ViewComfyClient, decode_outputs
from backends.viewcomfy.protocol import PromptResult, viewcomfy_key
from core.errors import ComfyGateError, ViewComfyError, ViewComfyUnavailable
from core.media_types import content_type
from core.task import Task, TaskStatus
from workflow.params import bump_seed

log = logging.getLogger("comfygate.viewcomfy")

STEP = re.compile(r"(?<![\d/])(\d+)\s*/\s*(\d+)(?![\d/])")  # "step 3/20", "3 / 20"; not dates like 2024/05/01
MAX_LOG_CHARS = 500  # one log line kept in task.progress (it goes to every listener)
MAX_ERROR_LINES = 20
MAX_BODY_CHARS = 2000  # an upstream error body larger than this is not copied into the task

Call = Callable[[Task, TaskHost], Awaitable[None]]  # what one task's job does with the run


def _secret(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def public_url(url: str) -> str:
    """The endpoint without userinfo or query: what describe(), logs and errors may show."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"


class ViewComfyBackend(BackendBase):
    kind = "viewcomfy"
    remote = True  # paid per run: only gets an unpinned task when no ComfyUI backend can
    live_health = False  # healthy means "the last call answered": nothing to wait on

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        outputs_dir: Path,
        client_id: SecretStr | str | None = None,
        client_secret: SecretStr | str | None = None,
        name: str = "viewcomfy",
        backoff: float = 5.0,
        max_backoff: float = 300.0,
        connect_retries: int = 2,
    ) -> None:
        self._setup(name, url, outputs_dir, backoff, max_backoff)
        self.api = ViewComfyClient(
            url, _secret(client_id), _secret(client_secret), http=http, connect_retries=connect_retries
        )

    def _setup(self, name: str, url: str, outputs_dir: Path, backoff: float, max_backoff: float) -> None:
        """What every ViewComfy backend keeps, whichever API generation it speaks."""
        self.name = name
        self._url = public_url(url)
        self.outputs_dir = outputs_dir
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.inflight: set[str] = set()
        self.queue_remaining = 0  # ViewComfy shows no queue
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._retry_at: float | None = None  # monotonic time after which a down endpoint is tried again
        self._jobs: dict[str, asyncio.Task[Any]] = {}
        self._left: set[str] = set()  # tasks this stopping replica left to a survivor (``leave``)

    # --- what every backend has ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._url

    @property
    def healthy(self) -> bool:
        return self._retry_at is None or time.monotonic() >= self._retry_at

    @property
    def load(self) -> int:
        return len(self.inflight)

    def can_run(self, classes: set[str]) -> bool:
        """The deployment's nodes are unknown from here: assume yes, ViewComfy will say no."""
        return True

    def start(self) -> None:
        """Nothing to connect: ViewComfy is reached per task."""

    async def stop(self) -> None:
        jobs = [job for job in self._jobs.values() if not job.done()]
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs, timeout=5)

    def describe_own(self) -> dict[str, Any]:
        retry_in = None
        if self._retry_at is not None:
            retry_in = round(max(0.0, self._retry_at - time.monotonic()), 1)
        return {"retry_in": retry_in}

    async def probe(self) -> dict[str, Any] | None:
        """ViewComfy has no status route (and every POST is a paid run): report what the last calls showed."""
        if not self.healthy:
            return None
        return {"kind": self.kind, "note": "ViewComfy has no status route; healthy means the last call got an answer"}

    # --- running a task --------------------------------------------------------------------------
    async def hand_over(self, task: Task, host: TaskHost, extra_data: dict[str, Any] | None = None) -> None:
        """Start the call in the background. The seed rule runs now, so the submit answer shows the new seed.

        ViewComfy's API has no place for ComfyUI's ``extra_data``: it is not sent.
        """
        if not task.params:
            task.workflow, task.params = bump_seed(task.workflow)
        host.spawn(self._run(task, host), name=f"viewcomfy {task.task_id}")

    async def cancel(self, task: Task) -> str:
        """Stop the local call (no cancel route upstream). "deleted" when it had not started yet."""
        job = self._jobs.get(task.task_id)
        if job is not None and not job.done():
            job.cancel()
            await asyncio.wait({job}, timeout=5)
        return "interrupted" if task.status.final else "deleted"

    async def take_over(self, task: Task, host: TaskHost, lost: str) -> None:
        """Cluster mode: the replica that drove ``task`` (``lost``) stopped. This API cannot be asked for a past
        run's result (one POST whose answer was the only handle): the task fails, saying so."""
        error = replica_lost(lost, "ViewComfy's API cannot be asked for the run's result")
        host.finish(task, TaskStatus.FAILED, error=error)

    async def leave(self, grace: float) -> set[str]:
        """Cluster mode, this replica stopping: this API cannot be asked for a past run's result, so the runs under
        way may end here within ``grace`` seconds; what is still running then is stopped as before (or failed
        ``replica_lost`` by the survivor that adopts it). Nothing is left to the survivors to follow."""
        jobs = [job for job in self._jobs.values() if not job.done()]
        if jobs:
            await asyncio.wait(jobs, timeout=grace)
        return set()

    async def _run(self, task: Task, manager: TaskHost, call: Call | None = None) -> None:
        """One task's job (``_call`` unless told otherwise): cancelling it stops the run (``_abandon``)."""
        if task.status.final:  # interrupted before the job started
            return
        current = asyncio.current_task()
        if current is not None:
            self._jobs[task.task_id] = current
        try:
            await (call or self._call)(task, manager)
        except asyncio.CancelledError:
            if task.task_id in self._left:
                raise  # left to a survivor (``leave``): nothing ends here, the run goes on over there
            reason = await self._abandon(task)
            if not task.status.final:
                manager.finish_interrupted(task, reason)
            raise
        finally:
            self._jobs.pop(task.task_id, None)

    async def _abandon(self, task: Task) -> str:
        """The local job is being cancelled (interrupt, timeout, shutdown): what becomes of the remote run."""
        return "stopped in ComfyGate; ViewComfy has no cancel route, so the run may go on there"

    async def _call(self, task: Task, manager: TaskHost) -> None:
        errors: list[str] = []
        manager.mark_running(task)
        try:
            result = await self.api.infer_with_logs(
                viewcomfy_params(task),
                workflow_api=task.workflow,
                on_log=lambda line: self._on_log(task, manager, line),
                on_error=lambda line: self._on_error(task, manager, line, errors),
            )
        except ComfyGateError as exc:
            self._call_failed(task, manager, exc)
            return
        self._mark_up(manager)
        await self._settle(task, manager, result, errors)

    def _call_failed(self, task: Task, manager: TaskHost, exc: ComfyGateError) -> None:
        """A call to ViewComfy failed: the task fails, and the backend's health follows what that proves."""
        if isinstance(exc, ViewComfyUnavailable):
            self._mark_down(manager, exc.message)
            manager.finish(task, TaskStatus.FAILED, error=_error("viewcomfy_unavailable", exc))
        elif isinstance(exc, ViewComfyError):
            self._mark_up(manager)  # it answered, so it is reachable
            manager.finish(task, TaskStatus.FAILED, error=_error("viewcomfy_error", exc))
        else:
            manager.finish(task, TaskStatus.FAILED, error={"type": exc.code, "message": exc.message})

    async def _settle(self, task: Task, manager: TaskHost, result: PromptResult, errors: list[str]) -> None:
        task.extra["viewcomfy_prompt_id"] = result.prompt_id
        if result.status != "success" or not result.completed:
            last = errors[-1] if errors else f"ViewComfy reported status {result.status!r}"
            manager.finish(
                task,
                TaskStatus.FAILED,
                error={"type": "viewcomfy_run_failed", "message": last, "logs": errors[-MAX_ERROR_LINES:]},
            )
            return
        try:
            outputs = await self._save_outputs(task, result)
        except (ComfyGateError, OSError) as exc:
            message = exc.message if isinstance(exc, ComfyGateError) else str(exc)
            manager.finish(task, TaskStatus.FAILED, error={"type": "output_decode_failed", "message": message})
            return
        if not task.status.final:
            manager.complete(task, outputs)

    async def _save_outputs(self, task: Task, result: PromptResult) -> list[dict[str, Any]]:
        """Decode into outputs/ with the ComfyUI path's entry shape; names prefixed like task_manager's."""
        paths = await asyncio.to_thread(decode_outputs, result, self.outputs_dir, prefix=f"{task.task_id[:8]}_")
        inline = [output for output in result.outputs if output.data]  # decode_outputs skips the others
        return [
            output_entry(task, path, path.stat().st_size, output.content_type, output.filename)
            for path, output in zip(paths, inline, strict=True)
        ]

    # --- progress --------------------------------------------------------------------------------
    def _on_log(self, task: Task, manager: TaskHost, line: str) -> None:
        if task.status.final:
            return
        task.progress["log"] = line[:MAX_LOG_CHARS]
        match = STEP.search(line)
        if match:
            value, maximum = int(match.group(1)), int(match.group(2))
            if 0 < maximum and value <= maximum:
                task.progress.update(value=value, max=maximum, percent=round(100.0 * value / maximum, 1))
        manager.publish(task)

    def _on_error(self, task: Task, manager: TaskHost, line: str, errors: list[str]) -> None:
        errors.append(line[:MAX_LOG_CHARS])
        del errors[:-MAX_ERROR_LINES]
        if not task.status.final:
            task.progress["log"] = f"error: {line[:MAX_LOG_CHARS]}"
            manager.publish(task)

    # --- health ----------------------------------------------------------------------------------
    def _mark_down(self, manager: TaskHost, message: str) -> None:
        was_healthy = self.healthy
        self.failures += 1
        delay = min(self.backoff * 2 ** (self.failures - 1), self.max_backoff)
        self._retry_at = time.monotonic() + delay
        self.down_since = self.down_since or time.time()
        self.last_error = message
        log.warning("ViewComfy backend %s unavailable (%s); next try in %.1f s", self.name, message, delay)
        if was_healthy:
            manager.backend_changed(self)

    def _mark_up(self, manager: TaskHost) -> None:
        if self._retry_at is None and self.failures == 0:
            return
        self.failures = 0
        self._retry_at = None
        self.down_since = None
        self.last_error = None
        manager.backend_changed(self)


def _error(kind: str, exc: ViewComfyError) -> dict[str, Any]:
    """A task error from a ViewComfy failure, with the upstream body only when it is small."""
    error: dict[str, Any] = {"type": kind, "message": exc.message, "upstream_status": exc.status}
    if exc.body is not None:
        text = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
        if len(text) <= MAX_BODY_CHARS:
            error["upstream_body"] = exc.body
    return error


def replica_lost(replica: str, why: str) -> dict[str, Any]:
    """The error of a ViewComfy task whose replica stopped while driving it, when its run cannot be recovered."""
    message = f"the replica running this ViewComfy task stopped ({replica}); {why}: submit it again"
    return {"type": "replica_lost", "message": message, "replica": replica}


def viewcomfy_params(task: Task) -> dict[str, Any]:
    """The task's applied params (``"3.seed"``) as ViewComfy parameter keys (``"3-inputs-seed"``)."""
    return {viewcomfy_key(*key.split(".", 1)): value for key, value in task.params.items() if "." in key}


def output_entry(task: Task, path: Path, size: int, media_type: str, remote_name: str) -> dict[str, Any]:
    """A file fetched from ViewComfy as a task output, in the ComfyUI path's entry shape."""
    return {
        "filename": path.name,
        "content_type": media_type or content_type(path.name),
        "size": size,
        "node_id": guess_node_id(task.workflow, remote_name),
        "type": "output",
        "url": f"/api/image/{path.name}",
        "viewcomfy": {"filename": remote_name},
    }


def guess_node_id(workflow: dict[str, Any], filename: str) -> str:
    """ViewComfy does not say which node wrote a file: the save node whose filename_prefix matches, if just one."""
    matches = []
    for node_id, node in workflow.items():
        prefix = (node.get("inputs") or {}).get("filename_prefix") if isinstance(node, dict) else None
        if isinstance(prefix, str) and prefix and filename.startswith(prefix.rsplit("/", 1)[-1] + "_"):
            matches.append(node_id)
    return matches[0] if len(matches) == 1 else ""
