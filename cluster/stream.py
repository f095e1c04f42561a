"""One reader per replica on the Redis stream of events, fanning each entry out to local listeners.

XREAD BLOCK on a connection of its own (a ``DirectConnection``: every event a listener hears comes through
here), from the last id seen: after a Redis outage the reader goes on where it stopped, so no entry still
in the stream is missed and none is delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from cluster.direct import ANSWER_S, DirectConnection
from cluster.replies import Fields, stream_entries
from core.waits import until

log = logging.getLogger("comfygate.cluster.stream")

Handler = Callable[[str, Fields], None]  # (entry id, fields)


class StreamReader:
    def __init__(
        self, redis: DirectConnection, stream: str, handler: Handler, *, block_ms: int = 1000, count: int = 500
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.handler = handler
        self.block_ms = block_ms
        self.count = count
        self.last_id = "0-0"
        self.connected = asyncio.Event()
        self._advanced = asyncio.Event()  # set after each batch of entries is handled

    async def run(self) -> None:
        """Read from ``last_id`` on, forever (set ``last_id`` first: "0-0" for everything)."""
        delay = 0.05
        while True:
            try:
                answer: Any = await self.redis.call(
                    "XREAD",
                    "COUNT",
                    self.count,
                    "BLOCK",
                    self.block_ms,
                    "STREAMS",
                    self.stream,
                    self.last_id,
                    timeout=self.block_ms / 1000 + ANSWER_S,
                )
            except (RedisError, OSError) as exc:
                if self.connected.is_set() or delay == 0.05:
                    log.warning("event stream unreadable (%s); retrying until Redis answers", exc)
                self.connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.connected.set()
            delay = 0.05
            for entry_id, fields in stream_entries(answer):
                self.last_id = entry_id
                try:
                    self.handler(entry_id, fields)
                except Exception:
                    log.exception("event stream handler failed on %s", entry_id)
            self._advanced.set()

    async def reached(self, entry_id: str, timeout: float) -> bool:
        """Wait until the entry ``entry_id`` has been handled (True), at most ``timeout`` s (False)."""
        return await until(lambda: _order(self.last_id) >= _order(entry_id), self._advanced, timeout)


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
