"""The kept connections of cluster/direct.py and the event stream reader on one, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bench.cluster_procs import RedisServer
from cluster.direct import DirectConnection
from cluster.replies import Fields
from cluster.stream import StreamReader

SCRIPT = "redis.call('INCRBY', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"


@pytest.fixture
async def direct(redis_server: RedisServer) -> AsyncIterator[DirectConnection]:
    connection = DirectConnection(redis_server.url, socket_connect_timeout=1.0)
    try:
        yield connection
    finally:
        await connection.close()


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_one_connection_kept_across_calls_and_error_replies(direct: DirectConnection) -> None:
    first = await direct.call("CLIENT", "ID", timeout=2)
    assert await direct.call("SET", "k", "v", timeout=2) in (True, b"OK")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await direct.call("LPUSH", "k", "x", timeout=2)
    assert await direct.call("GET", "k", timeout=2) == b"v"
    assert await direct.call("CLIENT", "ID", timeout=2) == first  # an error reply does not cost the connection
    assert not direct.busy


async def test_scripts_by_sha_sent_whole_only_when_redis_lacks_them(
    redis_server: RedisServer, direct: DirectConnection
) -> None:
    redis = Redis.from_url(redis_server.url)
    try:
        assert await direct.run_script(SCRIPT, ["n"], [2], timeout=2) == b"2"  # NOSCRIPT, then EVAL
        assert await direct.run_script(SCRIPT, ["n"], [3], timeout=2) == b"5"
        assert (await _calls(redis, "eval"), await _calls(redis, "evalsha")) == (1, 2)
        await redis.script_flush()
        assert await direct.run_script(SCRIPT, ["n"], [1], timeout=2) == b"6"
        assert (await _calls(redis, "eval"), await _calls(redis, "evalsha")) == (2, 3)
    finally:
        await redis.aclose()


async def test_a_connection_redis_closed_while_idle_is_replaced_before_use(
    redis_server: RedisServer, direct: DirectConnection
) -> None:
    before = await direct.call("CLIENT", "ID", timeout=2)
    await asyncio.to_thread(redis_server.stop)
    await asyncio.to_thread(redis_server.start)
    await asyncio.sleep(0.1)  # the loop has seen the old socket close
    assert await direct.call("PING", timeout=2) == b"PONG"  # no error for what happened while idle
    assert await direct.call("CLIENT", "ID", timeout=2) != before


async def test_an_exchange_cut_off_leaves_nothing_behind(redis_server: RedisServer, direct: DirectConnection) -> None:
    """A timeout (or a cancel) mid-exchange drops the connection: its late reply is never read as the next's."""
    blocked = asyncio.create_task(direct.call("BLPOP", "jobs", 5, timeout=0.3))
    await asyncio.sleep(0.05)
    assert direct.busy
    with pytest.raises(RuntimeError, match="one exchange at a time"):
        await direct.call("PING", timeout=1)
    with pytest.raises(RedisTimeoutError):  # a RedisError, as the pool's timeouts are
        await blocked
    assert not direct.busy
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.rpush("jobs", "late")
        assert await direct.call("ECHO", "mine", timeout=2) == b"mine"
        assert await redis.lrange("jobs", 0, -1) == [b"late"]  # the cut-off BLPOP took nothing
    finally:
        await redis.aclose()
    cancelled = asyncio.create_task(direct.call("BLPOP", "other", 5, timeout=10))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await direct.call("ECHO", "again", timeout=2) == b"again"


async def test_stream_reader_delivers_in_order_and_resumes_after_a_restart(
    redis_server: RedisServer, direct: DirectConnection
) -> None:
    got: list[tuple[str, Fields]] = []
    reader = StreamReader(direct, "events", lambda entry_id, fields: got.append((entry_id, fields)), block_ms=200)
    redis = Redis.from_url(redis_server.url)
    runner = asyncio.create_task(reader.run())
    try:
        ids = [await redis.xadd("events", {"k": "task_update", "d": str(i)}) for i in range(3)]
        assert await reader.reached(ids[-1].decode(), timeout=5)
        await redis.aclose()
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(0.5)  # the reader sees Redis gone and retries
        await asyncio.to_thread(redis_server.start)
        redis = Redis.from_url(redis_server.url)
        ids += [await redis.xadd("events", {"k": "task_update", "d": str(i)}) for i in range(3, 5)]
        assert await reader.reached(ids[-1].decode(), timeout=10)
        assert [entry_id for entry_id, _ in got] == [i.decode() for i in ids]  # each once, in order
        assert [fields[b"d"] for _, fields in got] == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        runner.cancel()
        await redis.aclose()
