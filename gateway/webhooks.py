"""Webhooks: tell other systems when a task ends, signed per the Standard Webhooks spec.

A task observer turns each final status into one message (``task.completed``, ``task.failed``,
``task.interrupted``, ``task.timeout``) for the task's own ``webhook`` and for the global
``COMFYUI_WEBHOOK_URL``. Messages go through a queue to a worker owned by the app's lifespan, so a
slow or dead receiver never delays a task. Network errors, 5xx and 429 are retried with exponential
backoff up to ``webhook_max_attempts``; every attempt is recorded on the task
(``webhook_deliveries``). Per-task URLs pass the SSRF guard (at submit and again at each attempt);
the global URL is the operator's own choice and may be private.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from config import Settings
from core.task import Task
from security.url_guard import UnsafeURL, guarded_send, resolve_checked
from tasks.store import TaskStore

log = logging.getLogger("comfygate.webhooks")

MAX_CONCURRENT = 8
MAX_QUEUED = 10_000
RETRY_STATUSES = frozenset({408, 425, 429})


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the spec's form): the decoded base64 part."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("COMFYUI_WEBHOOK_SECRET must be whsec_ followed by base64") from exc


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass(slots=True)
class Message:
    task: Task
    url: str
    msg_id: str
    body: bytes
    guarded: bool  # per-task URLs are checked against private addresses; the global one is trusted


class WebhookDispatcher:
    def __init__(self, settings: Settings, http: httpx.AsyncClient, store: TaskStore) -> None:
        self.settings = settings
        self.http = http
        self.store = store
        self.key = signing_key(settings.webhook_secret.get_secret_value()) if settings.webhook_secret else None
        self.queue: asyncio.Queue[Message] = asyncio.Queue(MAX_QUEUED)
        self.base_urls: dict[str, str] = {}
        self.counts: dict[str, int] = {"delivered": 0, "failed": 0, "retried": 0}
        self._worker: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.key is None and self.settings.webhook_url:
            log.warning("COMFYUI_WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        self._worker = asyncio.create_task(self._run(), name="webhook worker")

    async def stop(self) -> None:
        """Cancel the worker and every delivery in flight (pending messages are dropped, and logged)."""
        jobs = [j for j in (self._worker, *self._jobs) if j is not None]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self.queue.qsize():
            log.warning("shutdown dropped %d undelivered webhook messages", self.queue.qsize())

    # --- submission side ---------------------------------------------------------------------------
    async def check_url(self, url: str) -> str:
        """Refuse a per-task webhook URL at submit time rather than at the end of the task."""
        await resolve_checked(url, allow_private=self.settings.allow_private_urls, what="webhook")
        return url

    def remember_base(self, task: Task, base_url: str) -> None:
        if task.extra.get("webhook") or self.settings.webhook_url:
            self.base_urls[task.task_id] = base_url.rstrip("/")

    # --- observer ----------------------------------------------------------------------------------
    def on_task(self, task: Task, change: str) -> None:
        if change != "finished":
            return
        base = self.base_urls.pop(task.task_id, None)
        targets: list[tuple[str, bool]] = []
        if isinstance(task.extra.get("webhook"), str):
            targets.append((task.extra["webhook"], True))
        if self.settings.webhook_url and self.settings.webhook_url not in (t for t, _ in targets):
            targets.append((self.settings.webhook_url, False))
        if not targets:
            return
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(self.payload(task, base), separators=(",", ":"), default=str).encode()
        task.extra.setdefault("webhook_deliveries", [])
        for url, guarded in targets:
            try:
                self.queue.put_nowait(Message(task, url, msg_id, body, guarded))
            except asyncio.QueueFull:
                self._record(task, url, 0, error="dropped: the webhook queue is full", started=time.monotonic())

    def public_base(self, base: str | None) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        if base:
            return base
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    def payload(self, task: Task, base: str | None) -> dict[str, Any]:
        """The Standard Webhooks envelope: type, timestamp, data (the task, output URLs absolute)."""
        prefix = self.public_base(base)
        data = task.to_dict()
        data.pop("webhook_deliveries", None)
        data["outputs"] = [
            {**o, "url": prefix + o["url"]} if str(o.get("url", "")).startswith("/") else o for o in task.outputs
        ]
        data["url"] = f"{prefix}/api/task/{task.task_id}"
        return {"type": f"task.{task.status.value}", "timestamp": datetime.now(UTC).isoformat(), "data": data}

    # --- delivery ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            message = await self.queue.get()
            await self._slots.acquire()
            job = asyncio.create_task(self._deliver(message), name=f"webhook {message.task.task_id}")
            self._jobs.add(job)
            job.add_done_callback(self._job_done)

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._slots.release()
        if not job.cancelled() and job.exception() is not None:
            log.error("webhook delivery crashed", exc_info=job.exception())

    async def _deliver(self, message: Message) -> None:
        attempts = self.settings.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            retry = await self._attempt(message, attempt)
            if retry is None:
                self.counts["delivered"] += 1
                return
            if not retry or attempt == attempts:
                break
            self.counts["retried"] += 1
            await asyncio.sleep(self.settings.webhook_backoff * 2 ** (attempt - 1))
        self.counts["failed"] += 1
        log.warning("webhook to %s for task %s failed after %d attempts", message.url, message.task.task_id, attempt)

    async def _attempt(self, message: Message, attempt: int) -> bool | None:
        """One POST. None: delivered; True: worth retrying; False: give up."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "ComfyGate-Webhooks",
            "webhook-id": message.msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.key is not None:
            headers["webhook-signature"] = sign(self.key, message.msg_id, timestamp, message.body)
        started = time.monotonic()
        try:
            response = await guarded_send(
                self.http,
                "POST",
                message.url,
                allow_private=self.settings.allow_private_urls or not message.guarded,
                timeout=self.settings.webhook_timeout,
                headers=headers,
                content=message.body,
                what="webhook",
            )
            with contextlib.suppress(httpx.HTTPError):
                await response.aread()
            await response.aclose()
        except UnsafeURL as exc:
            self._record(message.task, message.url, attempt, error=exc.message, started=started)
            return False
        except (httpx.HTTPError, OSError) as exc:
            self._record(message.task, message.url, attempt, error=f"{type(exc).__name__}: {exc}", started=started)
            return True
        self._record(message.task, message.url, attempt, status_code=response.status_code, started=started)
        if 200 <= response.status_code < 300:
            return None
        return response.status_code >= 500 or response.status_code in RETRY_STATUSES

    @staticmethod
    def _record(
        task: Task, url: str, attempt: int, *, started: float, status_code: int | None = None, error: str | None = None
    ) -> None:
        entry: dict[str, Any] = {"url": url, "attempt": attempt}
        entry["status_code" if error is None else "error"] = status_code if error is None else error
        entry["at"] = time.time()
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        task.extra.setdefault("webhook_deliveries", []).append(entry)
