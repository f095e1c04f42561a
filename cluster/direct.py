"""A Redis connection of one's own for the exchanges a task waits on, read without redis-py's pooled path.

A command through redis-py's pool takes a connection (a lock, a check that nothing is left to read, its
metrics hooks), wraps every read in the socket timeout, and gives the connection back: 0.25-0.3 ms an
``EVAL`` on this machine against 0.13-0.15 ms for the same bytes on a kept connection read without a
per-read timeout (BENCHMARKS.md, eighth session). The submit's one awaited call and the event stream's
reads sit on that path, so each has a ``DirectConnection``: still redis-py's connection, packing and reply
parser (hiredis), and the URL's credentials and TLS; one exchange at a time, bounded by one asyncio timeout
for the whole exchange.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# The longest Redis may take to answer (beyond a blocking command's own wait), as the pool's socket timeout.
ANSWER_S = 5.0


class DirectConnection:
    def __init__(self, url: str, **options: Any) -> None:
        # A pool only to build connections the way the URL says (auth, db, TLS); its one is kept here.
        self._pool = ConnectionPool.from_url(url, socket_timeout=None, **options)
        self._connection: AbstractConnection | None = None
        self._shas: dict[str, str] = {}
        self.busy = False  # an exchange is under way

    async def call(self, *args: Any, timeout: float = ANSWER_S, fallback: Redis | None = None) -> Any:
        """Send one command and read its reply, within ``timeout`` s. A Redis error reply is raised as redis-py
        raises it (the connection stays); anything else (cut off, timed out, cancelled) drops the connection,
        which may hold half an exchange, and the next call connects again. Errors are redis-py's (a timeout
        is its ``TimeoutError``), as the pool's would be. While an exchange is under way, the command goes
        through ``fallback`` (the pool: a burst), or is refused without one."""
        if self.busy:  # a second exchange would read the first one's reply
            if fallback is not None:
                return await fallback.execute_command(*args)
            raise RuntimeError("a DirectConnection carries one exchange at a time (pass a fallback)")
        self.busy = True
        connection = self._connection
        try:
            async with asyncio.timeout(timeout):
                if connection is not None and await connection.can_read():  # closed by Redis while idle (as the
                    await connection.disconnect(nowait=True)  # pool checks each connection it hands out)
                    connection = None
                if connection is None:
                    connection = self._connection = self._pool.make_connection()
                    await connection.connect()
                await connection.send_packed_command(connection.pack_command(*args), check_health=False)
                return await connection.read_response(disconnect_on_error=False)
        except ResponseError:
            raise
        except BaseException as exc:
            self._connection = None
            if connection is not None:
                await connection.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):  # as redis-py says it (a RedisError, what every caller expects)
                raise RedisTimeoutError(f"Redis did not answer within {timeout:g} s") from exc
            raise
        finally:
            self.busy = False

    async def run_script(
        self, script: str, keys: list[Any], args: list[Any], *, timeout: float = ANSWER_S, fallback: Redis | None = None
    ) -> Any:
        """A Lua script by its SHA1 (sent whole once, when Redis does not have it: after a restart, a flush);
        through ``fallback`` while an exchange is under way, as ``call``."""
        if self.busy and fallback is not None:
            return await fallback.eval(script, len(keys), *keys, *args)
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis' own naming)
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args, timeout=timeout)
        except NoScriptError:
            return await self.call("EVAL", script, len(keys), *keys, *args, timeout=timeout)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect()
        await self._pool.aclose()
