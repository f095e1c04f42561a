"""One owner per backend: leases in Redis with a TTL, renewed while this replica lives.

A replica takes free leases up to its fair share (backends / live replicas, rounded up); a lease that
stays free longer than a TTL is taken by anyone, so a backend never stays without an owner. Whether a
lease is still ours is judged locally against the time of the last successful renewal (``valid``): a
replica cut off from Redis stops acting as the owner before its lease can expire and be taken.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.scripts import ACQUIRE_OR_RENEW, RELEASE

log = logging.getLogger("comfygate.cluster.lease")

Changed = Callable[[str, bool], Awaitable[None]]  # (backend name, held now)


class LeaseKeeper:
    def __init__(
        self, redis: Redis, prefix: str, replica: str, names: list[str], on_change: Changed, ttl: float = 4.0
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.replica = replica
        self.names = list(names)
        self.on_change = on_change
        self.ttl = ttl
        self._acquire = redis.register_script(ACQUIRE_OR_RENEW)
        self._release = redis.register_script(RELEASE)
        self._until: dict[str, float] = {}  # held lease → monotonic time it is safe to act until
        self._free_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_gain = 0.0

    def key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def valid(self, name: str) -> bool:
        """Ours, renewed recently enough that nobody else can have taken it."""
        until = self._until.get(name)
        return until is not None and time.monotonic() < until

    @property
    def held(self) -> list[str]:
        return [n for n in self.names if self.valid(n)]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leases")

    async def stop(self) -> None:
        """Give every lease back at once, so another replica takes over without waiting for the TTL."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.redis.zrem(f"{self.prefix}replicas", self.replica)
        except RedisError:
            pass
        for name in list(self._until):
            await self.give_up(name)

    async def give_up(self, name: str) -> None:
        """Stop acting as the owner first, then free the lease for another replica."""
        self._until.pop(name, None)
        await self._changed(name, False)
        try:
            await self._release(keys=[self.key(name)], args=[self.replica])
        except RedisError:
            pass

    async def _run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.ttl / 4)

    async def round(self) -> None:
        """Renew what we hold, take what we should; tell ``on_change`` what was gained or lost."""
        now = time.time()
        ttl_ms = int(self.ttl * 1000)
        try:
            await self.redis.zadd(f"{self.prefix}replicas", {self.replica: now})
            await self.redis.zremrangebyscore(f"{self.prefix}replicas", 0, now - 3 * self.ttl)
            live = max(1, await self.redis.zcard(f"{self.prefix}replicas"))
            share = math.ceil(len(self.names) / live)
            holders = await self.redis.mget([self.key(n) for n in self.names])
        except RedisError as exc:
            log.warning("cannot renew leases: %s", exc)
            await self._expire_lapsed()
            return
        for name, holder in zip(self.names, holders, strict=True):
            if holder is None:
                self._free_since.setdefault(name, time.monotonic())
            else:
                self._free_since.pop(name, None)
        for name, holder in zip(self.names, holders, strict=True):
            mine = holder is not None and holder.decode() == self.replica
            if holder is not None and not mine:
                if name in self._until:
                    self._until.pop(name)
                    await self._changed(name, False)
                continue
            if not mine:
                orphaned = time.monotonic() - self._free_since.get(name, time.monotonic()) > self.ttl
                if len(self.held) >= share and not orphaned:
                    continue
            started = time.monotonic()
            try:
                got = await self._acquire(keys=[self.key(name)], args=[self.replica, ttl_ms])
            except RedisError as exc:
                log.warning("cannot renew the lease of %s: %s", name, exc)
                continue
            if got:
                gained = not self.valid(name)
                # Safe until a little before the TTL runs out, counted from before the call.
                self._until[name] = started + self.ttl * 0.8
                self._free_since.pop(name, None)
                if gained:
                    self._last_gain = time.monotonic()
                    await self._changed(name, True)
            elif name in self._until:
                self._until.pop(name)
                await self._changed(name, False)
        await self._expire_lapsed()
        held = self.held
        if len(held) > share and time.monotonic() - self._last_gain > 2 * self.ttl:
            # More than a fair share (replicas joined since): hand one back per round.
            self._last_gain = time.monotonic()
            await self.give_up(held[-1])

    async def _expire_lapsed(self) -> None:
        for name, until in list(self._until.items()):
            if time.monotonic() >= until:
                self._until.pop(name, None)
                log.warning("lease of %s lapsed (Redis unreachable?): giving the backend up", name)
                await self._changed(name, False)

    async def _changed(self, name: str, held: bool) -> None:
        try:
            await self.on_change(name, held)
        except Exception:
            log.exception("lease change handler failed for %s", name)
