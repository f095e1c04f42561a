"""The v2 API's ``Idempotency-Key`` claims, in Redis: a key used on one replica is used on every replica.

Without it each replica kept its own claims, and a retry that the load balancer sent to another replica ran
a second job (or stored a second upload). The v2 rule stays the same (single use, reject on duplicate, no
replay); ComfyGate's own submit route has its replaying claims in ``cluster/http.py``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.errors import ClusterUnavailable

log = logging.getLogger("comfygate.cluster")


class RedisClaims:
    def __init__(self, redis: Redis, key: Callable[..., str]) -> None:
        self.redis = redis
        self.key = key

    def _key(self, scoped: str) -> str:
        return self.key("v2idem", hashlib.sha256(scoped.encode()).hexdigest())

    async def claim(self, scoped: str, ttl: float) -> bool:
        try:
            return bool(await self.redis.set(self._key(scoped), "1", nx=True, ex=max(1, int(ttl))))
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"Redis is unreachable, so the Idempotency-Key cannot be checked: {exc}") from exc

    async def release(self, scoped: str) -> None:
        try:
            await self.redis.delete(self._key(scoped))
        except (RedisError, OSError) as exc:  # the claim stays until it expires: the key cannot be reused meanwhile
            log.warning("could not release an Idempotency-Key claim in Redis: %s", exc)
