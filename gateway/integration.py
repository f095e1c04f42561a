"""Wiring of the features apps integrate with: synchronous submit, SSE, webhooks, metrics.

Each feature hangs off the task manager's observers (and the hub's tap for the event log) so the
dispatch code stays unaware of them. ``install`` runs in the lifespan after the services exist;
``stop`` shuts the webhook worker down. The submit route calls ``submission_extra`` before
dispatch (to refuse a bad webhook URL early) and ``after_submit`` once the task exists.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from core.task import Task
from gateway.event_log import EventLog
from gateway.services import Services
from gateway.wait import SyncOptions, Waiters, resolve, respond_when_done
from gateway.webhooks import WebhookDispatcher


def install(services: Services) -> None:
    from gateway.metrics import Metrics

    settings = services.settings
    events = EventLog(settings.event_log_size, max(settings.history_limit, 100))
    waiters = Waiters()
    webhooks = WebhookDispatcher(settings, services.http, services.store)
    metrics = Metrics(services)
    services.hub.add_tap(events.tap)
    for observer in (events.on_task, waiters.on_task, webhooks.on_task, metrics.on_task):
        services.manager.add_observer(observer)
    services.extras.update(event_log=events, waiters=waiters, webhooks=webhooks, metrics=metrics)
    webhooks.start()


async def stop(services: Services) -> None:
    webhooks: WebhookDispatcher | None = services.extras.get("webhooks")
    if webhooks is not None:
        await webhooks.stop()


async def submission_extra(services: Services, webhook: str | None) -> dict[str, Any]:
    """What the task carries for these features; a refused webhook URL fails the submit (422)."""
    if not webhook:
        return {}
    return {"webhook": await services.extras["webhooks"].check_url(webhook)}


def public_base(services: Services, request: Request) -> str:
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


async def after_submit(
    services: Services, request: Request, task: Task, options: SyncOptions, body_wait: bool, body_format: str | None
) -> Any | None:
    """Remember how the caller reached us (absolute URLs in webhooks); wait if asked. None: answer now."""
    services.extras["webhooks"].remember_base(task, public_base(services, request))
    options = resolve(options, body_wait, body_format)
    if not options.wait:
        return None
    return await respond_when_done(services, request, task, options)
