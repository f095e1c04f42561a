"""Leases and the ordered writer against a real redis-server: who owns a backend, and what a Redis outage does."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bench.cluster_procs import RedisServer
from cluster.direct import DirectConnection
from cluster.lease import LeaseKeeper
from cluster.replies import stream_entries
from cluster.scripts import ADOPT, CHOOSE_FORWARD, CHOOSE_SAVE, SAVE_TASK, TELL_TASK
from cluster.writer import RedisWriter

NAMES = ["comfyui-1", "comfyui-2"]


class Owner:
    """A replica's lease keeper and what it was told it owns; ``letting_go`` holds up a loss (work under way)."""

    def __init__(self, url: str, name: str, ttl: float = 1.0) -> None:
        self.redis = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        self.owned: set[str] = set()
        self.letting_go = asyncio.Event()
        self.letting_go.set()
        self.keeper = LeaseKeeper(self.redis, "t:", name, NAMES, self._changed, ttl=ttl)

    async def _changed(self, name: str, held: bool) -> None:
        if not held:
            await self.letting_go.wait()
        (self.owned.add if held else self.owned.discard)(name)


async def until(check: object, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_one_owner_each_takeover_after_a_crash_and_at_once_after_a_stop(redis_server: RedisServer) -> None:
    a, b = Owner(redis_server.url, "a"), Owner(redis_server.url, "b")
    await a.keeper.round()
    await b.keeper.round()
    a.keeper.start()
    b.keeper.start()
    # Fair shares: one each, never both owners of one backend.
    await until(lambda: len(a.owned) == 1 and len(b.owned) == 1)
    assert a.owned.isdisjoint(b.owned)
    assert all(a.keeper.valid(n) for n in a.owned)
    # a crashes (no goodbye): b takes its backend once the lease has been silent for a TTL or so.
    assert a.keeper._task is not None
    a.keeper._task.cancel()
    took = await until(lambda: b.owned == set(NAMES))
    assert 0.5 < took < 4.0
    # b stops gracefully: a newcomer gets both at once, without waiting for the TTL.
    c = Owner(redis_server.url, "c")
    c.keeper.start()
    await b.keeper.stop()
    assert await until(lambda: c.owned == set(NAMES)) < 1.0
    await c.keeper.stop()


async def test_a_lease_given_back_stays_renewed_until_what_is_under_way_has_ended(redis_server: RedisServer) -> None:
    """A stopping owner gives its lease back only once its work on the backend has ended (here 3 TTLs): meanwhile
    it posts nothing new (not ``valid``), the lease stays its own in Redis (renewed: its last writes are still
    fenced as its own) and nobody else takes it; then another replica takes it at once."""
    a, b = Owner(redis_server.url, "a"), Owner(redis_server.url, "b")
    await a.keeper.round()
    a.keeper.start()
    await until(lambda: a.owned == set(NAMES))
    await b.keeper.round()
    b.keeper.start()
    a.letting_go.clear()
    stopping = asyncio.create_task(a.keeper.stop())
    await until(lambda: not any(a.keeper.valid(n) for n in NAMES))
    await asyncio.sleep(3 * a.keeper.ttl)  # longer than the TTL: only renewals keep it
    assert b.owned == set() and a.owned == set(NAMES)
    assert {(await a.redis.get(f"t:lease:{n}")) for n in NAMES} == {b"a"}
    a.letting_go.set()
    await stopping
    # Given back, not left to expire: the moment a's stop returns, no lease is a's any more (each is free for
    # b's next round, long before a TTL would have run out). Stated on Redis, not timed: a loaded machine
    # delays b's rounds, not the hand-back.
    assert {(await a.redis.get(f"t:lease:{n}")) for n in NAMES} <= {None, b"b"}
    await until(lambda: b.owned == set(NAMES))
    await b.keeper.stop()


async def test_a_renewal_read_before_a_give_back_does_not_take_the_lease_up_again(redis_server: RedisServer) -> None:
    """The renewal loop reads who holds what, then renews: a give-back landing in between leaves the lease free
    (a renewal that could also acquire gave it back to its giver, and a rebalance or a stop never settled)."""
    a = Owner(redis_server.url, "a")
    await a.keeper.round()
    await until(lambda: a.owned == set(NAMES))
    await a.keeper.give_up(NAMES[0])
    await a.keeper._renew(NAMES)  # read before the give-back, run after it
    assert await a.redis.get(f"t:lease:{NAMES[0]}") is None
    assert await a.redis.get(f"t:lease:{NAMES[1]}") == b"a"
    await a.keeper.stop()


async def test_a_round_that_read_the_holders_before_a_give_back_does_not_take_the_lease_up_again(
    redis_server: RedisServer,
) -> None:
    """A round reads "held by us", a give-back lands while it renews, then the round decides what to take: the
    stale "ours" must not take the freed lease back (a stopping replica kept a lease it had given back)."""
    a = Owner(redis_server.url, "a")
    await a.keeper.round()
    await until(lambda: a.owned == set(NAMES))
    await a.keeper.give_up(NAMES[0])
    assert not a.keeper._should_take(NAMES[0], b"a", None, share=len(NAMES))  # as read before the give-back
    assert await a.redis.get(f"t:lease:{NAMES[0]}") is None
    await a.keeper.stop()


async def test_a_lease_given_back_to_a_late_taker_is_not_taken_back_by_its_giver(redis_server: RedisServer) -> None:
    """A rebalance gives a lease back for a replica whose rounds come late (a loaded machine): its "given back"
    mark expires first. The giver must not take the lease back as orphaned, or the two hand it to and fro."""
    a = Owner(redis_server.url, "a")
    await a.keeper.round()
    a.keeper.start()
    await until(lambda: a.owned == set(NAMES))
    late = "t:replicas"  # replica b is alive (in the set) but makes no round yet
    await a.redis.zadd(late, {"b": time.time()})
    await until(lambda: len(a.owned) == 1)
    given = (set(NAMES) - a.owned).pop()
    for _ in range(int(2 * a.keeper.ttl / 0.25)):  # two TTLs: the mark has expired, the lease is free ("orphaned")
        await a.redis.zadd(late, {"b": time.time()})
        await asyncio.sleep(0.25)
    assert await a.redis.get(f"t:lease:{given}") is None
    assert a.owned == set(NAMES) - {given}
    b = Owner(redis_server.url, "b")
    await b.keeper.round()
    await until(lambda: b.owned == {given})
    await a.keeper.stop()


async def test_redis_away_keeps_ownership_but_not_validity(redis_server: RedisServer) -> None:
    a = Owner(redis_server.url, "a")
    await a.keeper.round()
    a.keeper.start()
    await until(lambda: a.owned == set(NAMES))
    await asyncio.to_thread(redis_server.stop)
    # Nobody else can own it while Redis is away: a keeps its backends, but posts nothing new.
    await until(lambda: not any(a.keeper.valid(n) for n in NAMES), timeout=5)
    assert a.owned == set(NAMES)
    await asyncio.to_thread(redis_server.start)
    await until(lambda: all(a.keeper.valid(n) for n in NAMES), timeout=10)
    assert a.owned == set(NAMES)
    await a.keeper.stop()


async def test_the_choice_the_record_and_the_owners_note_in_one_step(redis_server: RedisServer) -> None:
    """CHOOSE_FORWARD: the least loaded backend with room is charged, the record stored naming it (where the
    placeholder was, as often as it is there) with its "rec" entry, and the note queued in that backend's inbox;
    nothing at all when none has room."""
    redis = Redis.from_url(redis_server.url)
    keys = ["t:load", "t:task:task-1", "t:tasks", "t:unfinished", "t:prompt", "t:events"]
    token = "0f" * 16
    record = json.dumps({"backend": token, "extra": {"charged": token}, "workflow_name": "100% %s"})

    async def forward(limit: int, *names: str) -> bytes | None:
        args = ["task-1", 1, 0, record, "{}", "p", "", 100, "", ""]
        return await redis.eval(
            CHOOSE_FORWARD, len(keys), *keys, limit, len(names), *names, *args, token, "t:inbox:", "note-1"
        )

    try:
        await redis.hset("t:load", mapping={"b1": 1, "b%2": 0})
        assert await forward(0, "b1", "b%2") == b"b%2"
        stored = json.loads(await redis.hget("t:task:task-1", "r"))
        assert stored == {"backend": "b%2", "extra": {"charged": "b%2"}, "workflow_name": "100% %s"}
        assert await redis.lrange("t:inbox:b%2", 0, -1) == [b"note-1"]
        ((_, fields),) = await redis.xrange("t:events")
        assert fields[b"k"] == b"rec" and json.loads(fields[b"d"]) == stored
        assert await redis.hget("t:load", "b%2") == b"1" and await redis.sismember("t:unfinished", "task-1")
        await redis.delete("t:task:task-1", "t:inbox:b%2", "t:events")
        assert await forward(1, "b1", "b%2") is None  # both at the limit: nothing charged, stored or queued
        assert await redis.exists("t:task:task-1", "t:inbox:b1", "t:inbox:b%2", "t:events") == 0
        assert await redis.hgetall("t:load") == {b"b1": b"1", b"b%2": b"1"}
    finally:
        await redis.aclose()


async def test_writer_holds_writes_in_order_while_redis_is_away(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=0.5, socket_timeout=2)
    writer = RedisWriter(redis)
    writer.start()
    assert await writer.call(lambda pipe: pipe.rpush("log", "before")) == 1
    await asyncio.to_thread(redis_server.stop)
    for i in range(100):
        writer.submit(lambda pipe, i=i: pipe.rpush("log", f"during-{i}"))
    with pytest.raises(TimeoutError):
        await writer.call(lambda pipe: pipe.rpush("log", "refused"), timeout=0.5)
    await until(lambda: not writer.ok)
    await asyncio.to_thread(redis_server.start)
    await until(lambda: writer.ok and len(writer) == 0, timeout=10)
    stored = [v.decode() for v in await redis.lrange("log", 0, -1)]
    # Everything held is written once, in order; the write whose caller gave up is not written at all.
    assert stored == ["before", *[f"during-{i}" for i in range(100)]]
    await writer.stop()
    await redis.aclose()


async def test_writer_keeps_order_with_batches_in_flight_and_resends_them_when_its_connection_dies(
    redis_server: RedisServer,
) -> None:
    """Batches go out without waiting for the previous answer (several in flight on one connection); when that
    connection is killed, what was not answered is sent again, in order: nothing lost, nothing reordered (a
    write Redis had applied before the kill may appear twice, as a failed pipeline's always could)."""
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=0.5, socket_timeout=2)
    admin = Redis.from_url(redis_server.url)
    writer = RedisWriter(redis)
    writer.start()
    in_flight: list[int] = []

    async def sample() -> None:
        while True:
            in_flight.append(len(writer._sent))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    for i in range(3000):
        writer.submit(lambda pipe, i=i: pipe.rpush("log", str(i)))
        if i % 25 == 24:
            await asyncio.sleep(0)  # a loop turn: the writer sends what is queued as one batch
        if i == 1500:
            await admin.client_kill_filter(_type="normal", skipme=True)
    await until(lambda: writer.ok and len(writer) == 0, timeout=15)
    stored = [int(v) for v in await admin.lrange("log", 0, -1)]
    firsts = list(dict.fromkeys(stored))
    sampler.cancel()
    assert firsts == list(range(3000))
    assert max(in_flight) > 1
    await writer.stop()
    await redis.aclose()
    await admin.aclose()


async def test_a_stream_reader_gets_a_whole_batch_in_one_read_and_an_error_stays_its_commands(
    redis_server: RedisServer,
) -> None:
    """A batch is one transaction: a reader blocked on the stream is served once, after it, with every entry the
    batch added (outside one it would be woken by the first XADD alone). A command that fails when it runs
    fails alone; one Redis refuses to queue aborts its batch and says why to each of the batch's callers."""
    redis = Redis.from_url(redis_server.url, socket_connect_timeout=0.5, socket_timeout=2)
    reader = DirectConnection(redis_server.url)
    writer = RedisWriter(redis)
    writer.start()
    try:
        assert await writer.call(lambda pipe: pipe.set("plain", "x"))  # through the SET reply's callback: True
        read = asyncio.create_task(reader.call("XREAD", "BLOCK", 5000, "STREAMS", "events", "$", timeout=10))
        await asyncio.sleep(0.2)  # (blocked)
        writer.submit(lambda pipe: pipe.xadd("events", {"k": "rec"}))
        failing = asyncio.create_task(writer.call(lambda pipe: pipe.lpush("plain", "y")))  # WRONGTYPE when run
        for kind in ("task_update", "queue_update"):
            writer.submit(lambda pipe, kind=kind: pipe.xadd("events", {"k": kind}))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await failing
        assert [fields[b"k"] for _, fields in stream_entries(await read)] == [b"rec", b"task_update", b"queue_update"]
        # Queued in the same loop turn: one batch.
        after = asyncio.create_task(writer.call(lambda pipe: pipe.xadd("events", {"k": "after"})))
        refused = asyncio.create_task(writer.call(lambda pipe: pipe.execute_command("XADD", "events")))  # arity
        for answer in (after, refused):
            with pytest.raises(ResponseError):
                await answer
        assert await redis.xlen("events") == 3 and writer.ok  # nothing of that batch applied; the writer goes on
        assert await writer.call(lambda pipe: pipe.xadd("events", {"k": "later"}))
        assert await redis.xlen("events") == 4
    finally:
        await writer.stop()
        await reader.close()
        await redis.aclose()


async def test_a_dead_drivers_viewcomfy_task_is_adopted_by_one_survivor_and_its_writes_are_fenced(
    redis_server: RedisServer,
) -> None:
    """``ADOPT``: while the driver's alive key lives nobody adopts; once it is gone exactly one of racing survivors
    does (and may come back for it after a failed attempt); the claim then fences the dead driver's writes."""
    redis = Redis.from_url(redis_server.url)
    try:
        claim, alive = "t:claim:task-1", "t:alive:"

        async def adopt(who: str) -> int:
            return int(await redis.eval(ADOPT, 1, claim, who, alive, "a/1", 60))

        async def write(who: str) -> bool:  # a record write of the task, fenced as cluster.store fences it
            keys = ["t:task:task-1", "t:tasks", "t:unfinished", "t:prompt", "t:events"]
            args = ["task-1", 1, 0, "{}", "", "p", "", 100, claim, who]
            return await redis.eval(SAVE_TASK, len(keys), *keys, *args) is not None

        await redis.set(f"{alive}a/1", "a", px=60_000)
        assert await adopt("b/1") == 0 and await write("a/1")
        await redis.delete(f"{alive}a/1")  # a killed: its key expired
        await redis.set(f"{alive}b/1", "b", px=60_000)
        await redis.set(f"{alive}c/1", "c", px=60_000)
        won = await asyncio.gather(adopt("b/1"), adopt("c/1"))
        assert sorted(won) == [0, 1]
        winner, loser = ("b/1", "c/1") if won[0] else ("c/1", "b/1")
        assert await redis.get(claim) == winner.encode() and await adopt(loser) == 0
        assert await adopt(winner) == 1  # its own claim: an adoption cut short is taken up again
        assert not await write("a/1") and await write(winner)
        await redis.delete(f"{alive}{winner}")  # the survivor dies too: the last one left takes the task
        assert await adopt(loser) == 1 and not await write(winner) and await write(loser)
    finally:
        await redis.aclose()


async def test_the_choice_of_a_backend_and_the_record_in_one_step(redis_server: RedisServer) -> None:
    """CHOOSE_SAVE: the least loaded backend with room is charged; the record is stored (fenced by that backend's
    lease) only when the choice is the backend the caller posts to itself; nothing when no backend has room."""
    redis = Redis.from_url(redis_server.url)
    keys = ["t:load", "t:task:task-1", "t:tasks", "t:unfinished", "t:prompt", "t:events"]

    async def choose(here: str, holder: str = "a", limit: int = 2) -> list[bytes | None] | None:
        await redis.set("t:lease:b2", "a")
        args = ["task-1", 1, 0, json.dumps({"backend": here}), "{}", "p", "", 100, "t:lease:b2", holder]
        return await redis.eval(CHOOSE_SAVE, len(keys), *keys, limit, 2, "b1", "b2", here, *args)

    await redis.hset("t:load", mapping={"b1": 1, "b2": 0})
    assert await choose("b1") == [b"b2"]  # fell elsewhere: charged, nothing stored
    assert await redis.exists("t:task:task-1") == 0 and await redis.hget("t:load", "b2") == b"1"
    answer = await choose("b2", limit=3)  # b1 and b2 both at 1: the first listed, b1
    assert answer == [b"b1"]
    answer = await choose("b2", limit=3)  # b1 at 2, b2 at 1: b2, stored; its "rec" entry is TELL_TASK's to add
    assert answer == [b"b2", 1]
    assert json.loads(await redis.hget("t:task:task-1", "r")) == {"backend": "b2"}
    assert await redis.xlen("t:events") == 0 and await redis.hget("t:load", "b2") == b"2"
    tell = ["task-1", 1, 0, json.dumps({"backend": "b2"}), "", "p", "", 100, "t:lease:b2", "another"]
    assert await redis.eval(TELL_TASK, len(keys) - 1, *keys[1:], *tell) is None  # fenced, as the record was
    assert await redis.eval(TELL_TASK, len(keys) - 1, *keys[1:], *tell[:-1], "a")
    ((_, fields),) = await redis.xrange("t:events")
    assert fields == {b"t": b"task-1", b"k": b"rec", b"d": json.dumps({"backend": "b2"}).encode()}
    await redis.delete("t:task:task-1")
    await redis.hset("t:load", "b1", 3)
    # The lease of b2 is not the caller's: charged (the caller takes it back), not stored.
    assert await choose("b2", holder="another", limit=4) == [b"b2", None]
    assert await redis.exists("t:task:task-1") == 0
    assert await choose("b2", limit=1) is None and await redis.hgetall("t:load") == {b"b1": b"3", b"b2": b"3"}
    await redis.aclose()
