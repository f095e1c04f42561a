"""Cluster mode's benchmark rows: several replicas sharing Redis and an object store, against one process.

- ``cluster_latency``: a trivial workflow one at a time, single mode vs. a cluster replica (added median/p99),
  also through a replica that does not own the backend (its submission goes through the owner's inbox).
- ``cluster_throughput``: instant workflows pushed as fast as accepted: 3 replicas × 4 backends (behind
  nginx) vs. 1 process × 4 backends.
- ``cluster_fanout``: listeners on each of 3 replicas (1,000 each at full size) while tasks run: every
  listener gets every final update; latency from ComfyUI's execution_success to arrival.
- ``cluster_memory``: each replica's RSS after the throughput and fan-out work, against single mode's target.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from bench.cluster_procs import ClusterStack
from bench.lean import HttpConn, HttpPool, ws_connect
from bench.procs import rss_kb
from bench.rows import (
    Bench,
    Completions,
    ListenerProcs,
    Result,
    deliveries,
    gate_ws,
    history_success_times,
    ms,
    percentile,
    push_kept,
    push_to_gates,
    submit_at_rate,
    submit_gate,
    wait_deliveries,
)

MEMORY_TARGET_MB = 250  # single mode's target (the memory row): RSS at 100,000 finished tasks


def _stack(bench: Bench, name: str, *, replicas: int, emulators: int) -> ClusterStack:
    folder = bench.workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    stack = ClusterStack(
        folder,
        replicas=replicas,
        emulators=emulators,
        log_level=bench.args.gate_log_level,
        env={"COMFYUI_HISTORY_LIMIT": "200000"},
    )
    bench._shared.setdefault("cluster_stacks", []).append(stack)
    return stack


def _close(bench: Bench, stack: ClusterStack) -> None:
    stack.close()
    stacks = bench._shared.get("cluster_stacks", [])
    if stack in stacks:
        stacks.remove(stack)


async def _once(http: HttpConn, done: Completions, workflow: dict[str, Any]) -> float:
    t0 = time.time()
    answer = await submit_gate(http, workflow, retry_busy=False)
    when, message = await done.wait(answer["task_id"])
    assert message["status"] == "completed", message
    return when - t0


async def row_cluster_latency(bench: Bench) -> Result:
    """One task at a time: single mode vs. the replica owning the backend vs. a replica forwarding to it."""
    args = bench.args
    emu = bench.start_emulators(1, "single-emulator")[0]
    single = bench.start_gate("single-gate", [emu.url])
    stack = _stack(bench, "cluster-latency", replicas=2, emulators=1)
    owner_name = stack.owners()["comfyui-1"]
    owner = next(r for r in stack.replicas if r.name == owner_name)
    other = next(r for r in stack.replicas if r is not owner)
    sides: dict[str, list[float]] = {"single": [], "owner": [], "forwarded": []}
    done = {k: Completions() for k in sides}
    urls = {"single": single, "owner": owner, "forwarded": other}
    # A Replica is no Gate, but has the ws_url gate_ws reads (bench/ is not type-checked as product).
    sockets = [await gate_ws(urls[k], done[k]) for k in sides]  # type: ignore[arg-type]
    conns = {k: HttpConn(urls[k].url) for k in sides}
    try:
        for _ in range(args.warmup):
            for k in sides:
                await _once(conns[k], done[k], bench.workflow())
        order = list(sides)
        for i in range(args.runs):
            for k in order[i % 3 :] + order[: i % 3]:  # rotate which side goes first
                sides[k].append(await _once(conns[k], done[k], bench.workflow()))
                await asyncio.sleep(0.005)
    finally:
        for ws in sockets:
            ws.close()
        for conn in conns.values():
            await conn.close()
        bench.release(single, emu)
        _close(bench, stack)
    med = {k: statistics.median(v) for k, v in sides.items()}
    p99 = {k: percentile(v, 99) for k, v in sides.items()}
    added_med = med["owner"] - med["single"]
    added_p99 = p99["owner"] - p99["single"]
    forwarded = med["forwarded"] - med["single"]
    return Result(
        "cluster_latency",
        f"added median {ms(added_med)} ms, p99 {ms(added_p99)} ms (forwarded: +{ms(forwarded)} ms)",
        "median ≤ 2 ms",
        added_med <= 0.002,
        {
            "runs": args.runs,
            **{f"{k}_median_ms": ms(v) for k, v in med.items()},
            **{f"{k}_p99_ms": ms(v) for k, v in p99.items()},
            "forwarded_added_median_ms": ms(med["forwarded"] - med["single"]),
        },
    )


async def _push_all(urls: list[str], ws_url: str, workflows: list[dict[str, Any]], concurrency: int) -> float:
    return (await push_to_gates(urls, ws_url, workflows, concurrency))[0]


async def row_cluster_throughput(bench: Bench) -> Result:
    """Instant workflows as fast as accepted: 3 replicas (each submitted to in turn) × 4 backends vs. 1 × 4."""
    args = bench.args
    n, c = args.tasks, max(args.concurrency, 3)
    emus = bench.start_emulators(4, "single-pool")
    single = bench.start_gate("single-pool-gate", [e.url for e in emus])
    try:
        await _push_all([single.url], single.ws_url, [bench.workflow() for _ in range(min(n, 50))], c)
        one = await _push_all([single.url], single.ws_url, [bench.workflow() for _ in range(n)], c)
    finally:
        bench.release(single, *emus)
    stack = _stack(bench, "cluster-throughput", replicas=3, emulators=4)
    try:
        urls = [r.url for r in stack.replicas]
        await _push_all(urls, stack.replicas[0].ws_url, [bench.workflow() for _ in range(min(n, 50))], c)
        three = await _push_all(urls, stack.replicas[0].ws_url, [bench.workflow() for _ in range(n)], c)
        rss = [rss_kb(r.pid) / 1024 for r in stack.replicas]
        bench._shared["cluster_rss"] = rss
    finally:
        _close(bench, stack)
    return Result(
        "cluster_throughput",
        f"{three:.0f} tasks/s with 3 replicas vs {one:.0f} with 1 ({three / one:.2f}×)",
        "reported (no target: one machine's 2 cores run every replica, Redis and the emulators)",
        None if three <= 0 else True,
        {"tasks": n, "concurrency": c, "single_tasks_per_s": round(one, 1), "cluster_tasks_per_s": round(three, 1)},
    )


async def row_cluster_fanout(bench: Bench) -> Result:
    """Listeners on each of 3 replicas while tasks run: every listener gets every final update."""
    args = bench.args
    per_replica, rate, seconds = args.listeners, args.rate, args.fanout_seconds
    count = max(1, int(rate * seconds))
    stack = _stack(bench, "cluster-fanout", replicas=3, emulators=1)
    groups = []
    for i, replica in enumerate(stack.replicas):
        scratch = bench.workdir / f"cluster-listeners-{i}"
        scratch.mkdir(exist_ok=True)
        place = types.SimpleNamespace(workdir=scratch)  # ListenerProcs only needs a folder of its own
        # ``place`` stands in for a Bench: only its workdir is read.
        listeners = ListenerProcs(place, f"{replica.ws_url}/ws", per_replica, args.listener_procs)  # type: ignore[arg-type]
        groups.append(listeners)
    pool = HttpPool(stack.replicas[0].url, 8)
    try:
        connected = sum(await asyncio.gather(*(g.ready() for g in groups)))
        answers, _ = await submit_at_rate(bench, pool, count, rate)
        prompt_ids = {a["prompt_id"] for a in answers}

        async def arrived() -> int:
            return sum(await asyncio.gather(*(g.count() for g in groups)))

        await wait_deliveries(arrived, connected * count)
        results = [r for g in groups for r in await g.stop()]
        bench._shared["cluster_rss_fanout"] = [rss_kb(r.pid) / 1024 for r in stack.replicas]
    finally:
        for group in groups:
            group.kill()
        await pool.close()
    event_times = await asyncio.to_thread(history_success_times, stack.emulators[0].url, prompt_ids)
    _close(bench, stack)
    latencies, missing, _ = deliveries(results, prompt_ids, event_times)
    dropped = sum(len(r["closed"]) for r in results)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Result(
        "cluster_fanout",
        f"3×{per_replica} listeners: p99 {ms(p99)} ms, {dropped} dropped, {missing} missed",
        "every listener gets every update, none dropped",
        dropped == 0 and missing == 0,
        {
            "listeners": connected,
            "tasks": count,
            "rate": rate,
            "deliveries": len(latencies),
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max(latencies) if latencies else float("nan")),
        },
    )


async def _push_kept(urls: list[str], ws_url: str, bench: Bench, count: int) -> None:
    """``count`` tasks through ``urls`` in turn, at most ``KEPT_IN_FLIGHT`` unfinished at a time (``push_kept``:
    3 replicas, Redis, moto and the emulator share 2 cores here; pushed as fast as accepted, tens of thousands
    were left queued, the peak then held by the allocator)."""
    done = Completions()
    ws = await ws_connect(f"{ws_url}/ws", done.on_gate_frame)
    pools = [HttpPool(url, 4) for url in urls]
    try:
        await push_kept(count, lambda i: submit_gate(pools[i % len(pools)], bench.workflow()), done)
    finally:
        ws.close()
        for pool in pools:
            await pool.close()


async def row_cluster_memory(bench: Bench) -> Result:
    """Each replica's RSS after the throughput and fan-out rows, against single mode's memory target."""
    figures = bench._shared.get("cluster_rss") or []
    fanout = bench._shared.get("cluster_rss_fanout") or []
    if not figures and not fanout:
        stack = _stack(bench, "cluster-memory", replicas=3, emulators=1)
        try:
            urls = [r.url for r in stack.replicas]
            await _push_kept(urls, stack.replicas[0].ws_url, bench, bench.args.tasks)
            figures = [rss_kb(r.pid) / 1024 for r in stack.replicas]
        finally:
            _close(bench, stack)
    worst = max([*figures, *fanout])
    return Result(
        "cluster_memory",
        f"RSS per replica ≤ {worst:.0f} MB",
        f"within single mode's target (≤ {MEMORY_TARGET_MB} MB)",
        worst <= MEMORY_TARGET_MB,
        {
            "after_throughput_mb": [round(x, 1) for x in figures],
            "after_fanout_mb": [round(x, 1) for x in fanout],
        },
    )


CLUSTER_ROWS: dict[str, Callable[[Bench], Awaitable[Result]]] = {
    "cluster_latency": row_cluster_latency,
    "cluster_throughput": row_cluster_throughput,
    "cluster_fanout": row_cluster_fanout,
    "cluster_memory": row_cluster_memory,
}

__all__ = ["CLUSTER_ROWS"]
