"""One owner per backend: leases in Redis with a TTL, renewed while this replica lives.

At start, replicas take free leases up to a fair share (backends / live replicas, rounded up) and later
hand back what exceeds it. A lease given back (a graceful stop, a rebalance) is marked so and taken at
once; one whose owner went silent (killed) is taken once it has been free for a TTL. Whether a lease is
surely still ours is judged locally against the last successful renewal (``valid``): posting to a
backend requires it. While Redis is unreachable nothing changes hands: the owner keeps its WebSocket
and its tasks, and takes the lease back first when Redis returns.
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
        self._mine: set[str] = set()  # leases this replica acts on (valid or lapsed while Redis is away)
        self._seen_held: set[str] = set()  # leases seen held at least once (not first come, first served)

    def key(self, name: str, *more: str) -> str:
        return ":".join([f"{self.prefix}lease", name, *more])

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
        for name in sorted(self._mine):
            await self.give_up(name)

    async def give_up(self, name: str) -> None:
        """Stop acting as the owner first, then free the lease (marked given back: taken at once)."""
        self._until.pop(name, None)
        self._mine.discard(name)
        await self._changed(name, False)
        try:
            await self._release(
                keys=[self.key(name), self.key(name, "free")], args=[self.replica, int(self.ttl * 1000)]
            )
        except RedisError:
            pass

    async def _run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.ttl / 4)

    async def round(self) -> None:
        """Renew what we hold, take what we should; tell ``on_change`` what was gained or lost.

        While Redis is unreachable nothing changes hands: the owner keeps its WebSocket and tasks (no
        other replica can take the lease either) but ``valid`` turns false, so it posts nothing new.
        """
        now = time.time()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(f"{self.prefix}replicas", {self.replica: now})
            pipe.zremrangebyscore(f"{self.prefix}replicas", 0, now - 3 * self.ttl)
            pipe.zcard(f"{self.prefix}replicas")
            pipe.mget([self.key(n) for n in self.names])
            pipe.mget([self.key(n, "free") for n in self.names])
            _, _, live, holders, given_back = await pipe.execute()
        except (RedisError, OSError) as exc:
            if self._mine:
                log.warning("cannot renew leases (%s): keeping %s, posting nothing new", exc, sorted(self._mine))
            return
        share = math.ceil(len(self.names) / max(1, live))
        await self._renew(
            [n for n, h in zip(self.names, holders, strict=True) if h is not None and h.decode() == self.replica]
        )
        for name, holder, free in zip(self.names, holders, given_back, strict=True):
            if holder is not None and holder.decode() != self.replica:
                self._seen_held.add(name)
                self._free_since.pop(name, None)
                if name in self._mine:
                    self._mine.discard(name)
                    self._until.pop(name, None)
                    await self._changed(name, False)
                continue
            if holder is not None:
                if name in self._mine:
                    continue  # renewed above
                # ours in Redis but not acting on it (a restart within the TTL): take it up properly
            elif name not in self._mine:
                since = self._free_since.setdefault(name, time.monotonic())
                orphaned = time.monotonic() - since > self.ttl
                first = name not in self._seen_held and len(self._mine) < share
                if not (free is not None or first or orphaned):
                    continue
            await self._take(name)
        if len(self._mine) > share and time.monotonic() - self._last_gain > 2 * self.ttl:
            # More than a fair share (replicas joined since): hand one back per round.
            self._last_gain = time.monotonic()
            await self.give_up(sorted(self._mine)[-1])

    async def _renew(self, names: list[str]) -> None:
        """Renew every lease still ours in one round trip."""
        if not names:
            return
        started = time.monotonic()
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.eval(ACQUIRE_OR_RENEW, 1, self.key(name), self.replica, int(self.ttl * 1000))
            answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cannot renew leases: %s", exc)
            return
        for name, got in zip(names, answers, strict=True):
            if got and name in self._mine:
                self._until[name] = started + self.ttl * 0.8

    async def _take(self, name: str) -> None:
        started = time.monotonic()
        try:
            got = await self._acquire(keys=[self.key(name)], args=[self.replica, int(self.ttl * 1000)])
        except (RedisError, OSError) as exc:
            log.warning("cannot renew the lease of %s: %s", name, exc)
            return
        if got:
            self._until[name] = started + self.ttl * 0.8  # safe until a little before the TTL runs out
            self._free_since.pop(name, None)
            self._seen_held.add(name)
            if name not in self._mine:
                self._mine.add(name)
                self._last_gain = time.monotonic()
                await self._changed(name, True)
        elif name in self._mine:
            self._mine.discard(name)
            self._until.pop(name, None)
            await self._changed(name, False)

    async def _changed(self, name: str, held: bool) -> None:
        try:
            await self.on_change(name, held)
        except Exception:
            log.exception("lease change handler failed for %s", name)
