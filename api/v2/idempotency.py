"""``Idempotency-Key``: single-use, reject-on-duplicate, no replay (the v2 contract's rule).

The first request presenting a key claims it; any later one with the same key (a retry, a concurrent
duplicate, another body) is refused 422 ``idempotency_key_reuse`` and never executed. ``claim`` checks
and records in one synchronous step, with no ``await`` in between, so two racing requests cannot both
pass. A request that definitely created nothing (refused by validation, the queue full) ``release``\\ s its
key so a retry with the same key works (the SDK resends the same key after a 429); one whose outcome is
unknown keeps it. Keys are scoped to the API key that presented them, expire after ``ttl`` seconds, and
at most ``limit`` are kept (oldest forgotten first), so memory stays bounded whatever callers send.
``on_change`` lets a durable store mirror claims (written off the event loop). With several replicas,
``shared`` (Redis) holds the claims every replica checks: ``take`` claims here and there (a retry that a
load balancer sends to another replica is refused too), ``give_back`` releases both.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

MAX_KEY_LENGTH = 255
TTL = 24 * 3600.0


def check_key(key: str) -> str | None:
    """Why ``key`` cannot be used, or None when it is fine (1-255 printable ASCII characters)."""
    if not key:
        return "Idempotency-Key is empty; leave the header out to submit without one"
    if len(key) > MAX_KEY_LENGTH:
        return f"Idempotency-Key is {len(key)} characters; at most {MAX_KEY_LENGTH}"
    if not key.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "Idempotency-Key must be printable ASCII"
    return None


def scope_of(credential: str | None) -> str:
    """A short, non-reversible tag of the caller's API key (keys of different callers never collide)."""
    if not credential:
        return "-"
    return hashlib.sha256(credential.encode()).hexdigest()[:16]


class SharedClaims(Protocol):
    """Claims every replica sees (cluster mode); a store that cannot answer raises (a 503: nothing was run)."""

    async def claim(self, scoped: str, ttl: float) -> bool: ...

    async def release(self, scoped: str) -> None: ...


class IdempotencyKeys:
    shared: SharedClaims | None = None

    def __init__(
        self,
        limit: int = 100_000,
        ttl: float = TTL,
        on_change: Callable[[str, str, float | None], None] | None = None,
    ) -> None:
        self.limit = limit
        self.ttl = ttl
        self._claims: OrderedDict[str, tuple[float, str]] = OrderedDict()  # scoped key → (claimed at, what)
        self.on_change = on_change  # (scoped key, what, claimed_at or None when released)

    def __len__(self) -> int:
        return len(self._claims)

    def load(self, rows: list[tuple[str, float, str]]) -> None:
        """Claims kept by the durable store (oldest first), so a restart does not reopen used keys."""
        now = time.time()
        for scoped, claimed_at, what in rows:
            if now - claimed_at < self.ttl:
                self._claims[scoped] = (claimed_at, what)
        self._trim(now)

    def claim(self, scope: str, key: str, what: str = "") -> bool:
        """True if ``key`` was free (now claimed); False if it was used before (refuse the request)."""
        scoped = f"{scope}:{key}"
        now = time.time()
        held = self._claims.get(scoped)
        if held is not None and now - held[0] < self.ttl:
            return False
        self._claims[scoped] = (now, what)
        self._claims.move_to_end(scoped)
        self._trim(now)
        if self.on_change is not None:
            self.on_change(scoped, what, now)
        return True

    async def take(self, scope: str, key: str, what: str = "") -> bool:
        """``claim``, and with several replicas the shared claim as well (this replica's first, so two racing
        requests here never both reach the shared one)."""
        if not self.claim(scope, key, what):
            return False
        if self.shared is None:
            return True
        try:
            taken = await self.shared.claim(f"{scope}:{key}", self.ttl)
        except BaseException:
            self.release(scope, key)
            raise
        if not taken:
            self.release(scope, key)  # another replica holds it: this one's claim goes, the shared one stays
        return taken

    async def give_back(self, scope: str, key: str) -> None:
        """``release`` here and, with several replicas, the shared claim."""
        self.release(scope, key)
        if self.shared is not None:
            await self.shared.release(f"{scope}:{key}")

    def settle(self, scope: str, key: str, what: str) -> None:
        """Record what the claim produced (e.g. the job id), for operators reading the store."""
        scoped = f"{scope}:{key}"
        held = self._claims.get(scoped)
        if held is not None:
            self._claims[scoped] = (held[0], what)
            if self.on_change is not None:
                self.on_change(scoped, what, held[0])

    def release(self, scope: str, key: str) -> None:
        scoped = f"{scope}:{key}"
        if self._claims.pop(scoped, None) is not None and self.on_change is not None:
            self.on_change(scoped, "", None)

    def _trim(self, now: float) -> None:
        claims = self._claims
        while claims:
            oldest, (claimed_at, _) = next(iter(claims.items()))
            if len(claims) <= self.limit and now - claimed_at < self.ttl:
                break
            del claims[oldest]
            if self.on_change is not None:
                self.on_change(oldest, "", None)
