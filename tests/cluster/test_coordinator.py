"""One replica in cluster mode, in process, against a real redis-server and a real emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.cluster_procs import RedisServer
from emulator.server import EmulatorThread
from tests.conftest import Gate
from tests.protocol import sd_workflow


class _BrokenConnection:
    """Stands in for the event stream's connection: fails the way a bug would (not as Redis being away)."""

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the reader")


async def test_a_cluster_loop_that_ends_by_an_error_drains_the_replica(
    redis_server: RedisServer, emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    """A replica whose stream reader died would answer but never hear another replica's events: /api/health
    says which loop stopped, with a 503 (a load balancer drains it), instead of the replica going deaf quietly."""
    gate = gate_factory([emulator.url], redis_url=redis_server.url)
    health = gate.client.get("/api/health")
    assert health.status_code == 200 and health.json()["cluster"]["stopped_loop"] is None
    cluster = gate.server.app.state.services.extras["cluster"]
    cluster.reader.redis = _BrokenConnection()  # taken at its next read (the current one blocks at most 1 s)
    for _ in range(100):
        health = gate.client.get("/api/health")
        if health.status_code == 503:
            break
        await asyncio.sleep(0.05)
    assert health.status_code == 503 and health.headers["Retry-After"]
    body = health.json()
    assert body["status"] == "unavailable"
    assert body["cluster"]["stopped_loop"] == "cluster events: RuntimeError: a bug in the reader"
    assert body["cluster"]["redis"] is True  # Redis itself is fine: the replica is what is broken


async def test_refused_submissions_leave_nothing_behind(
    redis_server: RedisServer, emulator: EmulatorThread, gate_factory: Callable[..., Gate]
) -> None:
    """With no room anywhere (the backend full, the shared queue full) a submission is refused with a 503, and
    the bookkeeping made for its record before the choice (its prompt id) goes with it: a replica refusing
    under sustained overload does not grow."""
    emulator.set_delays(step_delay=0.05)
    gate = gate_factory([emulator.url], redis_url=redis_server.url, max_backend_queue=1, max_pending_tasks=1)
    cluster = gate.server.app.state.services.extras["cluster"]
    accepted = [gate.submit(sd_workflow(steps=40, seed=seed)) for seed in (1, 2)]
    assert [r.status_code for r in accepted] == [200, 200], [r.text for r in accepted]
    refused = [gate.submit(sd_workflow(steps=40, seed=seed)) for seed in range(3, 23)]
    assert {r.status_code for r in refused} == {503} and all(r.headers["Retry-After"] for r in refused)
    assert set(cluster.records._saved_prompt) <= {r.json()["task_id"] for r in accepted}
    for response in accepted:
        gate.client.post(f"/api/interrupt/{response.json()['task_id']}")
