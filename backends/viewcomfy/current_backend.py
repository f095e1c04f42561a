"""A ViewComfy deployment reached through ViewComfy's current API (``COMFYUI_VIEWCOMFY_API=current``).

The task's life is the direct backend's (``backend.py``: health and backoff, describe, the seed rule,
what is sent), but the run is scheduled on the central API and followed instead of streamed:

* One socket.io connection per run, opened before scheduling as the published client does; its ``sid``
  goes into the schedule form so the run's events come back on it. Log lines become ``task.progress``
  (``log``, plus ``value/max/percent`` when a line says "3/20"); ``infer_executed_message`` is shown as
  a log line; result, error and canceled end the wait.
* No socket (it could not connect, or it closed): the run is polled on the results route every
  ``poll_interval``. While the socket is up a slow safety poll still runs, so a lost event never hangs a task.
* The remote prompt id is the task id written as a UUID: one run per task, findable from either side.
* Outputs are links: each is downloaded, streamed, into ``outputs/`` (see ``ViewComfyCentralClient.download``).
* Interrupt, timeout and shutdown cancel the remote run (the older API could not), then the local job; in cluster
  mode a replica stopping gracefully leaves its runs going for a survivor to follow (``leave``).
* Credentials stay inside ``ViewComfyCentralClient``: never in describe(), task errors or log lines.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from backends.base import TaskHost
from backends.viewcomfy.backend import (
    ViewComfyBackend,
    _error,
    _secret,
    output_entry,
    public_url,
    replica_lost,
    viewcomfy_params,
)
from backends.viewcomfy.current_client import EventChannel, RunEvent, ViewComfyCentralClient
from backends.viewcomfy.current_protocol import FINAL_STATUSES, SUCCESS, Event, LinkResult
from core.errors import ComfyGateError, ViewComfyError
from core.task import Task, TaskStatus

log = logging.getLogger("comfygate.viewcomfy")

CANCEL_TIMEOUT = 4.0  # the task manager waits 5 s for a cancelled job
MAX_POLL_FAILURES = 10  # consecutive failed polls before the task fails
CANCELED_STATUSES = frozenset({"canceled", "cancelled", "interrupted"})


class RunEnded(Exception):
    """The run ended without outputs to collect (failed, cancelled): the task is final already."""


class CurrentViewComfyBackend(ViewComfyBackend):
    def __init__(
        self,
        deployment: str,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        outputs_dir: Path,
        client_id: SecretStr | str | None = None,
        client_secret: SecretStr | str | None = None,
        name: str = "viewcomfy",
        poll_interval: float = 2.0,
        safety_poll: float = 30.0,
        max_output_bytes: int = 2 * 1024**3,
        allow_private_urls: bool = False,
        backoff: float = 5.0,
        max_backoff: float = 300.0,
    ) -> None:
        self._setup(name, deployment, outputs_dir, backoff, max_backoff)  # no direct client: nothing POSTs there
        self.central = ViewComfyCentralClient(
            api_url, deployment, _secret(client_id), _secret(client_secret), http=http
        )
        self._api_url = public_url(api_url)
        self.poll_interval = poll_interval
        self.safety_poll = safety_poll
        self.max_output_bytes = max_output_bytes
        self.allow_private_urls = allow_private_urls
        self._scheduled: dict[str, str] = {}  # task id -> remote prompt id, while the remote run may go on

    def describe_own(self) -> dict[str, Any]:
        return {**super().describe_own(), "api": "current", "api_url": self._api_url}

    async def stop(self) -> None:
        await super().stop()  # every run's job, and with it its socket
        await self.central.aclose()

    # --- one run -----------------------------------------------------------------------------------
    async def _call(self, task: Task, manager: TaskHost) -> None:
        prompt_id = str(uuid.UUID(task.task_id))
        task.extra["viewcomfy_prompt_id"] = prompt_id
        channel = await self.central.open_events()
        try:
            try:
                sid = channel.sid if channel else None
                await self.central.schedule(prompt_id, viewcomfy_params(task), task.workflow, sid)
            except ComfyGateError as exc:
                self._call_failed(task, manager, exc)
                return
            self._scheduled[task.task_id] = prompt_id
            self._mark_up(manager)
            manager.mark_running(task)
            try:
                result = await self._follow(task, manager, prompt_id, channel)
            except RunEnded:
                self._scheduled.pop(task.task_id, None)  # over there too; a cancellation leaves it to _abandon
                return
        finally:
            if channel is not None:
                await channel.aclose()
        self._scheduled.pop(task.task_id, None)  # the run is over there: nothing left to cancel
        await self._collect(task, manager, result)

    async def _follow(self, task: Task, manager: TaskHost, prompt_id: str, channel: EventChannel | None) -> LinkResult:
        """Until the run's end: socket.io events while the socket lives, polling the results otherwise."""
        failures = 0
        while True:
            event: RunEvent | None = None
            if channel is not None:
                try:
                    event = await asyncio.wait_for(channel.queue.get(), self.safety_poll)
                except TimeoutError:
                    event = None  # quiet for a long time: look at the run's record once
            else:
                await asyncio.sleep(self.poll_interval)
            if event is not None and event.name == "closed":
                channel = None
                self._on_log(task, manager, "the socket.io connection to ViewComfy closed; following by polling")
            elif event is not None:
                ended = await self._on_event(task, manager, prompt_id, event)
                if ended is not None:
                    return ended
            else:
                try:
                    found = (await self.central.results([prompt_id])).get(prompt_id)
                except ViewComfyError as exc:
                    failures += 1
                    log.warning("polling the ViewComfy run of task %s failed (%s)", task.task_id, exc.message)
                    if failures >= MAX_POLL_FAILURES:
                        manager.finish(task, TaskStatus.FAILED, error=_error("viewcomfy_unavailable", exc))
                        raise RunEnded from None
                    continue
                failures = 0
                if found is not None and found.status in FINAL_STATUSES:
                    return self._final(task, manager, found)

    async def _on_event(self, task: Task, manager: TaskHost, prompt_id: str, event: RunEvent) -> LinkResult | None:
        """Progress for log and executed events; the end for result, error and canceled."""
        if event.name == Event.LOG:
            self._on_log(task, manager, event_text(event.data))
        elif event.name == Event.EXECUTED:
            self._on_log(task, manager, f"executed: {event_text(event.data)}")
        elif event.name == Event.CANCELED:
            if not task.status.final:
                manager.finish_interrupted(task, "the run was cancelled on ViewComfy")
            raise RunEnded
        elif event.name == Event.ERROR:
            details: Any = None
            try:  # the run's record may say more (errorData); a failed poll changes nothing
                found = (await self.central.results([prompt_id])).get(prompt_id)
                details = found.error_data if found is not None else None
            except ViewComfyError:
                pass
            self._fail_run(task, manager, event_text(event.data) or "ViewComfy reported an error", details)
            raise RunEnded
        elif event.name == Event.RESULT:
            try:
                result = LinkResult.model_validate(event.data)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'result'}: {e['msg']}" for e in exc.errors())
                manager.finish(
                    task,
                    TaskStatus.FAILED,
                    error={"type": "viewcomfy_error", "message": f"ViewComfy sent a malformed result ({problems})"},
                )
                raise RunEnded from None
            return self._final(task, manager, result)
        return None

    def _final(self, task: Task, manager: TaskHost, result: LinkResult) -> LinkResult:
        """A finished run's record: the result to collect, or the task ended here (RunEnded)."""
        if result.status == SUCCESS:
            return result
        if result.status in CANCELED_STATUSES:
            if not task.status.final:
                manager.finish_interrupted(task, "the run was cancelled on ViewComfy")
        else:
            message = event_text(result.error_data) or f"ViewComfy reported status {result.status!r}"
            self._fail_run(task, manager, message, result.error_data)
        raise RunEnded

    def _fail_run(self, task: Task, manager: TaskHost, message: str, details: Any) -> None:
        error: dict[str, Any] = {"type": "viewcomfy_run_failed", "message": message[:500]}
        if details is not None:
            error["error_data"] = details
        manager.finish(task, TaskStatus.FAILED, error=error)

    async def _collect(self, task: Task, manager: TaskHost, result: LinkResult) -> None:
        """Download every output link into outputs/, then complete the task."""
        entries = []
        try:
            for index, output in enumerate(result.outputs):
                remote = output.filename or f"output_{index}"
                path, size = await self.central.download(
                    output.filepath,
                    self.outputs_dir,
                    f"{task.task_id[:8]}_{remote}",
                    max_bytes=self.max_output_bytes,
                    allow_private=self.allow_private_urls,
                )
                entries.append(output_entry(task, path, size, output.content_type, remote))
        except (ComfyGateError, OSError) as exc:
            message = exc.message if isinstance(exc, ComfyGateError) else str(exc)
            manager.finish(task, TaskStatus.FAILED, error={"type": "output_download_failed", "message": message})
            return
        if not task.status.final:
            manager.complete(task, entries)

    # --- another replica's run ---------------------------------------------------------------------
    async def take_over(self, task: Task, host: TaskHost, lost: str) -> None:
        """Cluster mode: the replica that drove ``task`` (``lost``) stopped. A run it scheduled goes on over there:
        it is polled until it ends and collected as usual. Running, the record says it was scheduled; before
        that, ViewComfy is asked (the prompt id is the task id, so one that was never recorded is found too)."""
        prompt_id = str(task.extra.get("viewcomfy_prompt_id") or uuid.UUID(task.task_id))
        if task.status != TaskStatus.RUNNING and not await self._run_known(prompt_id):
            host.finish(task, TaskStatus.FAILED, error=replica_lost(lost, "ViewComfy never got its run"))
            return
        task.extra["viewcomfy_prompt_id"] = prompt_id
        if task.status != TaskStatus.RUNNING:
            host.mark_running(task)
        host.spawn(self._run(task, host, self._resume), name=f"viewcomfy {task.task_id}")

    async def _run_known(self, prompt_id: str) -> bool:
        """Whether ViewComfy has the run (True when it cannot tell now: following it will find out)."""
        try:
            return prompt_id in await self.central.results([prompt_id])
        except ViewComfyError:
            return True

    async def _resume(self, task: Task, manager: TaskHost) -> None:
        prompt_id = str(task.extra["viewcomfy_prompt_id"])
        self._scheduled[task.task_id] = prompt_id  # (an interrupt or timeout cancels it there too)
        try:
            result = await self._follow(task, manager, prompt_id, None)
        except RunEnded:
            self._scheduled.pop(task.task_id, None)
            return
        self._scheduled.pop(task.task_id, None)  # (not on a cancellation: _abandon cancels the run)
        await self._collect(task, manager, result)

    # --- stopping ----------------------------------------------------------------------------------
    async def leave(self, grace: float) -> set[str]:
        """Cluster mode, this replica stopping: its runs go on over there, so it stops following them without
        cancelling them or ending their tasks; a survivor adopts each and follows it to its end (``take_over``)."""
        jobs = {task_id: job for task_id, job in self._jobs.items() if not job.done()}
        self._left.update(jobs)
        for job in jobs.values():
            job.cancel()
        if jobs:
            await asyncio.wait(jobs.values(), timeout=CANCEL_TIMEOUT)
        for task_id in jobs:
            self._scheduled.pop(task_id, None)
            self.inflight.discard(task_id)
        return set(jobs)

    async def _abandon(self, task: Task) -> str:
        """The local job is being cancelled (interrupt, timeout, shutdown): cancel the remote run too."""
        prompt_id = self._scheduled.pop(task.task_id, None)
        if prompt_id is None:
            return "stopped in ComfyGate before ViewComfy scheduled the run"
        try:
            await asyncio.wait_for(self.central.cancel(prompt_id), CANCEL_TIMEOUT)
        except (ComfyGateError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, ComfyGateError) else "no answer in time"
            log.warning("cancelling the ViewComfy run of task %s failed: %s", task.task_id, reason)
            return f"stopped in ComfyGate; cancelling the run on ViewComfy failed ({reason})"
        return "stopped in ComfyGate and cancelled on ViewComfy"


def event_text(data: Any) -> str:
    """An event's payload (``{prompt_id, data}``, a string, or an error object) as one log line."""
    if isinstance(data, dict) and "data" in data and set(data) <= {"prompt_id", "data"}:
        data = data["data"]
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    if data is None:
        return ""
    return data if isinstance(data, str) else str(data)
