"""One replica in cluster mode, in process, against a real redis-server and a real emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.cluster_procs import RedisServer
from emulator.server import EmulatorThread
from tests.conftest import Gate


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
