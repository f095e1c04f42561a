"""One owner per backend: leases in Redis with a TTL, renewed while this replica lives.

At start, replicas take free leases up to a fair share (backends / live replicas, rounded up) and later
hand back what exceeds it. A lease given back (a graceful stop, a rebalance) is marked so and taken at
once; one whose owner went silent (killed) is taken once it has been free for a TTL. Whether a lease is
surely still ours is judged locally against the last successful renewal (``valid``): posting to a
backend requires it. While Redis is unreachable nothing changes hands: the owner keeps its WebSocket
and its tasks, and takes the lease back first when Redis returns.

Giving a lease back takes a while: ``on_change(name, False)`` first lets the owner finish what it has under
way on that backend (``valid`` is already false: nothing new starts), and the lease stays renewed meanwhile,
so the owner's last writes are still its own; only then is it freed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.scripts import ACQUIRE_OR_RENEW, RELEASE, RENEW

log = logging.getLogger("comfygate.cluster.lease")
STOP_SETTLE_S = 15.0  # a stop waits this long at most for adoptions and hand-backs under way (each bounded itself)

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
        self._leaving: set[str] = set()  # leases being given back: still renewed, no longer valid
        self._gave: dict[str, float] = {}  # lease given back → monotonic time: not taken back as orphaned soon after
        self._giving: set[asyncio.Task[None]] = set()  # give-backs of a rebalance, under way
        self._changes: dict[str, asyncio.Task[None]] = {}  # the last on_change call of each lease
        self._stopping = False
        self._closed = False  # stop() has given everything back: the renewal loop ends

    def key(self, name: str, *more: str) -> str:
        return ":".join([f"{self.prefix}lease", name, *more])

    def valid(self, name: str) -> bool:
        """Ours, renewed recently enough that nobody else can have taken it."""
        until = self._until.get(name)
        return until is not None and time.monotonic() < until

    @property
    def held(self) -> list[str]:
        return [n for n in self.names if self.valid(n)]

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="leases")
        return self._task

    async def stop(self) -> None:
        """Give every lease back, so another replica takes over without waiting for the TTL; the renewals go on
        until each is given back (what is under way on its backend ends first)."""
        self._stopping = True
        try:
            await self.redis.zrem(f"{self.prefix}replicas", self.replica)
        except (RedisError, OSError):
            pass
        try:
            await asyncio.wait_for(self.settled(), STOP_SETTLE_S)
        except TimeoutError:
            log.warning("changes of ownership still under way after %g s: giving the leases back anyway", STOP_SETTLE_S)
        await asyncio.gather(*(self.give_up(name) for name in sorted(self._mine)), return_exceptions=True)
        self._closed = True
        if self._task is not None:
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task], timeout=self.ttl)

    async def settled(self) -> None:
        """Until the changes of ownership under way have been handled (``on_change`` returned)."""
        while pending := [t for t in (*self._changes.values(), *self._giving) if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def give_up(self, name: str) -> None:
        """Stop acting as the owner first (``on_change``: what is under way ends meanwhile, the lease still renewed),
        then free the lease (marked given back: taken at once)."""
        if name not in self._mine or name in self._leaving:
            return
        self._until.pop(name, None)
        self._leaving.add(name)
        try:
            await self._notify(name, False)
            self._mine.discard(name)
            await self._release(
                keys=[self.key(name), self.key(name, "free")], args=[self.replica, int(self.ttl * 1000)]
            )
        except (RedisError, OSError):
            pass  # it expires by itself
        finally:
            self._mine.discard(name)
            self._gave[name] = time.monotonic()
            self._leaving.discard(name)  # (only now: a round in between would take it up again)

    async def _run(self) -> None:
        # Not ``while True``: a cancel that lands as a Redis call times out can come back as that call's
        # TimeoutError (asyncio.timeout in Python 3.11), which round() absorbs; the flag still ends the loop.
        while not self._closed:
            await self.round()
            await asyncio.sleep(self.ttl / 4)

    async def round(self) -> None:
        """Renew what we hold, take what we should; tell ``on_change`` what was gained or lost (in the background:
        renewals never wait for an adoption or a hand-back).

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
            if name not in self._leaving and self._should_take(name, holder, free, share):
                await self._take(name)
        kept = sorted(self._mine - self._leaving)
        if len(kept) > share and time.monotonic() - self._last_gain > 2 * self.ttl and not self._stopping:
            # More than a fair share (replicas joined since): hand one back per round, while renewals go on.
            self._last_gain = time.monotonic()
            giving = asyncio.create_task(self.give_up(kept[-1]), name=f"give up {kept[-1]}")
            self._giving.add(giving)
            giving.add_done_callback(self._giving.discard)

    def _should_take(self, name: str, holder: bytes | None, free: bytes | None, share: int) -> bool:
        """Whether to (try to) take ``name`` now; a lease lost to another replica is let go here."""
        if holder is not None and holder.decode() != self.replica:
            self._seen_held.add(name)
            self._free_since.pop(name, None)
            if name in self._mine:
                self._mine.discard(name)
                self._until.pop(name, None)
                self._notify(name, False)
            return False
        if holder is not None:
            # Ours and renewed above; or ours in Redis but not acted on (a restart within the TTL): take it up.
            # Not one we gave back since this round read the holders (a stale "ours"), nor while stopping.
            recently_given = time.monotonic() - self._gave.get(name, -math.inf) < self.ttl
            return name not in self._mine and not self._stopping and not recently_given
        if name in self._mine:
            return True  # expired (Redis was away): ours to take back first
        if self._stopping:
            return False
        since = self._free_since.setdefault(name, time.monotonic())
        orphaned = time.monotonic() - since > self.ttl
        if orphaned and len(self._mine) >= share and time.monotonic() - self._gave.get(name, -math.inf) < 3 * self.ttl:
            # We gave it back for a taker whose round came late (its "given back" mark expired): not ours to take
            # back at once, or the two would hand it to and fro. After 3 TTLs the taker is surely gone.
            orphaned = False
        first = name not in self._seen_held and len(self._mine) < share
        given_to_others = free is not None and free.decode() != self.replica  # not by us: our own mark is for others
        return given_to_others or first or orphaned

    async def _renew(self, names: list[str]) -> None:
        """Renew every lease still ours in one round trip (renew only: one given back since it was read stays free)."""
        if not names:
            return
        started = time.monotonic()
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.eval(RENEW, 1, self.key(name), self.replica, int(self.ttl * 1000))
            answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cannot renew leases: %s", exc)
            return
        for name, got in zip(names, answers, strict=True):
            if got and name in self._mine and name not in self._leaving:
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
                self._notify(name, True)
        elif name in self._mine:
            self._mine.discard(name)
            self._until.pop(name, None)
            self._notify(name, False)

    def _notify(self, name: str, held: bool) -> asyncio.Task[None]:
        """``on_change`` in the background, one change of a lease at a time, in order."""
        before = self._changes.get(name)
        change = asyncio.create_task(
            self._changed(before, name, held), name=f"lease {name} {'held' if held else 'lost'}"
        )
        self._changes[name] = change
        return change

    async def _changed(self, before: asyncio.Task[None] | None, name: str, held: bool) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        try:
            await self.on_change(name, held)
        except Exception:
            log.exception("lease change handler failed for %s", name)
