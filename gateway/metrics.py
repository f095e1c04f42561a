"""Prometheus metrics at ``/metrics``, in a registry of this app's own.

Several apps live in one test process (and could in one server), so nothing goes to the global
default registry. Counters and the duration histograms are fed by a task observer; gauges (tasks by
status, backend health and queues, listeners) are read from the live objects at scrape time, so
they cannot drift from what ``/api/health`` says.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.task import Task
from gateway.services import Services

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _LiveState(Collector):
    """Gauges computed from the services at each scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Any]:
        services = self.services
        tasks = GaugeMetricFamily("comfygate_tasks", "Tasks held by ComfyGate, by status", labels=["status"])
        counts = services.store.counts()
        for status, count in counts.items():
            tasks.add_metric([status], count)
        yield tasks
        up = GaugeMetricFamily("comfygate_backend_up", "1 when the backend is reachable", labels=["backend", "kind"])
        queue = GaugeMetricFamily(
            "comfygate_backend_queue_remaining", "Prompts in the backend's own queue", labels=["backend"]
        )
        inflight = GaugeMetricFamily(
            "comfygate_backend_inflight", "ComfyGate tasks handed to the backend, not yet final", labels=["backend"]
        )
        for backend in services.manager.backends.values():
            up.add_metric([backend.name, backend.kind], 1 if backend.healthy else 0)
            queue.add_metric([backend.name], backend.queue_remaining)
            inflight.add_metric([backend.name], len(backend.inflight))
        yield up
        yield queue
        yield inflight
        yield GaugeMetricFamily("comfygate_ws_listeners", "WebSocket listeners", value=services.hub.listeners)
        dropped = CounterMetricFamily(
            "comfygate_ws_listeners_dropped", "Listeners dropped for not reading", value=services.hub.dropped_total
        )
        yield dropped
        events = services.extras.get("event_log")
        if events is not None:
            yield GaugeMetricFamily(
                "comfygate_sse_listeners", "Server-Sent Events listeners", value=events.sse_listeners
            )
        webhooks = services.extras.get("webhooks")
        if webhooks is not None:
            family = CounterMetricFamily(
                "comfygate_webhook_messages", "Webhook messages by outcome (retried counts retries)", labels=["outcome"]
            )
            for outcome, count in webhooks.counts.items():
                family.add_metric([outcome], count)
            yield family
            yield GaugeMetricFamily("comfygate_webhook_queue", "Webhook messages waiting", value=webhooks.queue.qsize())


class Metrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter("comfygate_tasks_submitted", "Tasks accepted by a backend", registry=self.registry)
        self.finished = Counter(
            "comfygate_tasks_finished", "Tasks that reached a final status", ["status"], registry=self.registry
        )
        self.duration = Histogram(
            "comfygate_task_duration_seconds",
            "From submission to final status",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.execution = Histogram(
            "comfygate_task_execution_seconds",
            "From start of execution to final status (tasks that started)",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveState(services))

    def on_task(self, task: Task, change: str) -> None:
        if change == "created":
            self.submitted.inc()
        elif change == "finished":
            status = task.status.value
            self.finished.labels(status).inc()
            if task.finished_at is not None:
                self.duration.labels(status).observe(max(0.0, task.finished_at - task.created_at))
            if task.execution_time is not None:
                self.execution.labels(status).observe(task.execution_time)

    def render(self) -> bytes:
        return generate_latest(self.registry)
