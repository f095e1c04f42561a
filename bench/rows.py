"""The benchmark rows. Each measures ComfyGate next to ComfyUI (the emulator) called directly.

Every row returns a ``Result``; a row that cannot run in the current setup (e.g. it needs emulator
controls but runs against a real ComfyUI) returns a skipped result with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lean import HttpConn, HttpPool, WsReader, split_url, ws_connect
from bench.procs import PROJECT, Emulator, Gate, Proxy, http_json, reset_peak_rss, rss_kb

FINAL = ("completed", "failed", "interrupted", "timeout")
FINAL_BYTES = tuple(f'"status":"{s}"'.encode() for s in FINAL)


@dataclass
class Result:
    row: str
    measured: str
    target: str
    passed: bool | None  # None: skipped
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); p99 of 200 samples is the 2nd largest."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ----------------------------------------------------------------------------------- completions
class Completions:
    """Arrival times of final events, keyed by task id (ComfyGate) or prompt id (ComfyUI)."""

    def __init__(self) -> None:
        self.times: dict[str, tuple[float, dict[str, Any]]] = {}
        self._waiters: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self._count_waiter: tuple[int, asyncio.Future[None]] | None = None

    def arrived(self, key: str, when: float, message: dict[str, Any]) -> None:
        if key in self.times:
            return
        self.times[key] = (when, message)
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((when, message))
        if self._count_waiter is not None and len(self.times) >= self._count_waiter[0]:
            if not self._count_waiter[1].done():
                self._count_waiter[1].set_result(None)

    async def wait(self, key: str, timeout: float = 60.0) -> tuple[float, dict[str, Any]]:
        if key in self.times:
            return self.times[key]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        return await asyncio.wait_for(waiter, timeout)

    async def wait_count(self, count: int, timeout: float) -> None:
        if len(self.times) >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._count_waiter = (count, waiter)
        await asyncio.wait_for(waiter, timeout)

    # Frame handlers for lean.WsReader ------------------------------------------------------------
    def on_gate_frame(self, opcode: int, payload: bytes, now: float) -> None:
        """ComfyGate /ws: a task_update with a final status."""
        if opcode != 1 or not payload.startswith(b'{"type":"task_update"'):
            return
        if not any(s in payload for s in FINAL_BYTES):
            return
        message = json.loads(payload)
        self.arrived(message["task_id"], now, message)

    def on_comfy_frame(self, opcode: int, payload: bytes, now: float) -> None:
        """ComfyUI /ws: execution_success or execution_error."""
        if opcode != 1 or (b"execution_success" not in payload and b"execution_error" not in payload):
            return
        message = json.loads(payload)
        if message.get("type") in ("execution_success", "execution_error"):
            self.arrived(message["data"]["prompt_id"], now, message)


# ----------------------------------------------------------------------------------- context
class Bench:
    """Options, scratch folder and every process started, stopped at the end."""

    def __init__(self, args: Any, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.comfyui_url: str | None = args.comfyui_url
        self._color = 0
        self._procs: list[Emulator | Gate | Proxy] = []
        self._shared: dict[str, Any] = {}

    @property
    def real(self) -> bool:
        return self.comfyui_url is not None

    def workflow(self, color: int | None = None) -> dict[str, Any]:
        """The trivial workflow (EmptyImage → PreviewAny) with a fresh color, so nothing is cached."""
        if color is None:
            self._color = (self._color + 1) % 0xFFFFFF
            color = self._color
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }

    def start_emulators(self, count: int, prefix: str, *, wait: bool = True, **options: Any) -> list[Emulator]:
        """``options``: step_delay, node_delay, costs ("realistic" unless --emulator-costs says otherwise)."""
        options.setdefault("costs", self.args.emulator_costs or "realistic")
        options.setdefault("gc_pauses", self.args.gc_pauses)
        emus = [Emulator(self.workdir, f"{prefix}-{i + 1}", **options) for i in range(count)]
        self._procs += emus
        for emu in emus if wait else ():
            emu.wait_ready()
        return emus

    def start_gate(self, name: str, servers: list[str], *, wait: bool = True, **kwargs: Any) -> Gate:
        """ComfyGate may start before its emulators are up: it connects with backoff, like in production."""
        gate = Gate(self.workdir, name, servers, log_level=self.args.gate_log_level, **kwargs)
        self._procs.append(gate)
        return gate.wait_ready() if wait else gate

    def start_proxy(self, name: str, comfyui_url: str) -> Proxy:
        proxy = Proxy(self.workdir, name, comfyui_url)
        self._procs.append(proxy)
        return proxy.wait_ready()

    def stack(
        self, name: str, fresh: bool, *, costs: str = "realistic", **gate_kwargs: Any
    ) -> tuple[str, Emulator | None, Gate]:
        """A ComfyUI (emulator, or the real one) and a ComfyGate in front of it.

        ``fresh=False`` reuses the stack of an earlier row (smoke runs: start-up dominates them).
        ``costs``: the emulator's cost model ("realistic": a real server's timings; "none": instant, for rows
        that measure ComfyGate's own capacity); ``--emulator-costs`` overrides it for every row.
        """
        if not fresh and "stack" in self._shared:
            return self._shared["stack"]
        if self.real:
            assert self.comfyui_url is not None
            url, emu = self.comfyui_url, None
        else:
            emu = self.start_emulators(1, f"{name}-emulator", wait=False, costs=self.args.emulator_costs or costs)[0]
            url = emu.url
        gate = self.start_gate(f"{name}-gate", [url], wait=False, **gate_kwargs)
        if emu is not None:
            emu.wait_ready()
        gate.wait_ready()
        result = (url, emu, gate)
        if not fresh:
            self._shared["stack"] = result
        return result

    def release(self, *procs: Emulator | Gate | Proxy | None) -> None:
        """Stop processes a row no longer needs (unless shared)."""
        shared = self._shared.get("stack", ())
        for proc in procs:
            if proc is not None and proc not in shared:
                proc.stop()
                if proc in self._procs:
                    self._procs.remove(proc)

    def close(self) -> None:
        for stack in self._shared.pop("cluster_stacks", []):  # bench/cluster.py's
            with contextlib.suppress(Exception):
                stack.close()
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self._procs.clear()


async def gate_ws(gate: Gate, completions: Completions, query: str = "") -> WsReader:
    return await ws_connect(f"{gate.ws_url}/ws{query}", completions.on_gate_frame)


async def comfy_ws(url: str, client_id: str, completions: Completions) -> WsReader:
    host, port = split_url(url)
    return await ws_connect(f"ws://{host}:{port}/ws?clientId={client_id}", completions.on_comfy_frame)


async def submit_gate(pool: HttpPool | HttpConn, workflow: dict[str, Any], retry_busy: bool = True) -> dict[str, Any]:
    """POST /api/workflow/submit; a 503 (ComfyGate full) is retried: 'as fast as accepted'."""
    while True:
        status, body = await pool.json("POST", "/api/workflow/submit", {"workflow": workflow})
        if status == 200:
            return body
        if status == 503 and retry_busy:
            await asyncio.sleep(0.01)
            continue
        raise RuntimeError(f"ComfyGate refused a submission: {status} {body}")


async def submit_comfy(pool: HttpPool | HttpConn, workflow: dict[str, Any], client_id: str) -> str:
    prompt_id = str(uuid.uuid4())
    status, body = await pool.json(
        "POST", "/prompt", {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
    )
    if status != 200:
        raise RuntimeError(f"ComfyUI refused a prompt: {status} {body}")
    return prompt_id


async def push(count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run ``one(i)`` for i in 0..count-1 with ``concurrency`` workers, as fast as each is accepted."""
    results: list[Any] = [None] * count
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            results[i] = await one(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results


KEPT_IN_FLIGHT = 200  # unfinished tasks at a time in the memory rows: they measure tasks kept, not a backlog


async def push_kept(count: int, submit: Callable[[int], Awaitable[Any]], done: Completions) -> None:
    """``count`` submissions, at most ``KEPT_IN_FLIGHT`` unfinished at a time. Pushed as fast as accepted, a
    ComfyGate that accepts faster than its emulator runs queues tens of thousands of whole tasks at ComfyUI, and
    the allocator keeps that peak: the row would measure the backlog, not the tasks kept."""

    async def one(i: int) -> None:
        answer = await submit(i)
        await done.wait(answer["task_id"], timeout=120)

    await push(count, KEPT_IN_FLIGHT, one)


# ----------------------------------------------------------------------------------- throughput
async def run_throughput_direct(bench: Bench, url: str, count: int, concurrency: int) -> tuple[float, float]:
    done = Completions()
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    ws = await comfy_ws(url, client_id, done)
    pool = HttpPool(url, concurrency)
    workflows = [bench.workflow() for _ in range(count)]
    try:
        t0 = time.time()
        ids = await push(count, concurrency, lambda i: submit_comfy(pool, workflows[i], client_id))
        accepted = time.time()
        await done.wait_count(count, timeout=60 + count * 0.05)
        t_end = max(done.times[p][0] for p in ids)
    finally:
        ws.close()
        await pool.close()
    return count / (t_end - t0), count / (accepted - t0)


async def run_throughput_gate(bench: Bench, gate: Gate, count: int, concurrency: int) -> tuple[float, float]:
    workflows = [bench.workflow() for _ in range(count)]
    return await push_to_gates([gate.url], gate.ws_url, workflows, concurrency)


async def push_to_gates(
    urls: list[str], ws_url: str, workflows: list[dict[str, Any]], concurrency: int
) -> tuple[float, float]:
    """(completed, accepted) tasks/s: submissions spread over ``urls`` in turn, completions seen on ``ws_url``
    (one ComfyGate, or replicas of a cluster: every replica's /ws hears every task)."""
    count = len(workflows)
    done = Completions()
    ws = await ws_connect(f"{ws_url}/ws", done.on_gate_frame)
    pools = [HttpPool(url, max(1, concurrency // len(urls))) for url in urls]
    try:
        t0 = time.time()
        answers = await push(count, concurrency, lambda i: submit_gate(pools[i % len(pools)], workflows[i]))
        accepted = time.time()
        await done.wait_count(count, timeout=60 + count * 0.05)
        ids = [a["task_id"] for a in answers]
        failed = [done.times[t][1] for t in ids if done.times[t][1]["status"] != "completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} tasks did not complete, e.g. {failed[0]}")
        t_end = max(done.times[t][0] for t in ids)
    finally:
        ws.close()
        for pool in pools:
            await pool.close()
    return count / (t_end - t0), count / (accepted - t0)


async def row_throughput(bench: Bench) -> Result:
    """Instant workflow, ``--tasks`` pushed as fast as accepted, direct vs. through ComfyGate."""
    args = bench.args
    url, emu, gate = bench.stack("throughput", fresh=not args.smoke, costs="none")
    n, c = args.tasks, args.concurrency
    try:
        await run_throughput_direct(bench, url, min(n, 50), c)  # warm both paths up
        await run_throughput_gate(bench, gate, min(n, 50), c)
        cpu0 = (emu.cpu() if emu else 0.0, gate.cpu())
        direct, direct_accept = await run_throughput_direct(bench, url, n, c)
        cpu1 = (emu.cpu() if emu else 0.0, gate.cpu())
        through, gate_accept = await run_throughput_gate(bench, gate, n, c)
        cpu2 = (emu.cpu() if emu else 0.0, gate.cpu())
    finally:
        bench.release(gate, emu)
    ratio = through / direct
    cpu = {
        "emulator_cpu_ms_per_task_direct": round((cpu1[0] - cpu0[0]) * 1000 / n, 2),
        "emulator_cpu_ms_per_task_via_gate": round((cpu2[0] - cpu1[0]) * 1000 / n, 2),
        "gate_cpu_ms_per_task": round((cpu2[1] - cpu1[1]) * 1000 / n, 2),
    }
    return Result(
        "throughput",
        f"{ratio:.0%} of direct ({through:.0f} vs {direct:.0f} tasks/s)",
        "≥ 90% of direct",
        ratio >= 0.9,
        {
            "tasks": n,
            "concurrency": c,
            "direct_tasks_per_s": round(direct, 1),
            "gate_tasks_per_s": round(through, 1),
            "direct_accept_per_s": round(direct_accept, 1),
            "gate_accept_per_s": round(gate_accept, 1),
            **(cpu if emu else {"gate_cpu_ms_per_task": cpu["gate_cpu_ms_per_task"]}),
        },
    )


# ----------------------------------------------------------------------------------- fan-out
class ListenerProcs:
    """The fan-out listeners, split over a few processes so the client side is not the bottleneck."""

    def __init__(self, bench: Bench, ws_url: str, total: int, processes: int) -> None:
        self.procs: list[tuple[subprocess.Popen[str], Path]] = []
        per = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
        for i, count in enumerate(c for c in per if c):
            out = bench.workdir / f"listeners-{i}.json"
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.listeners", "--url", ws_url, "--count", str(count), "--out", str(out)],
                cwd=PROJECT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append((proc, out))

    def _ask(self, proc: subprocess.Popen[str], line: str | None, expect: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        if line is not None:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        answer = proc.stdout.readline().strip()
        if not answer.startswith(expect):
            raise RuntimeError(f"listener process said {answer!r}, expected {expect}")
        return answer

    async def ready(self) -> int:
        answers = await asyncio.gather(*(asyncio.to_thread(self._ask, p, None, "READY") for p, _ in self.procs))
        return sum(int(a.split()[1]) for a in answers)

    async def count(self) -> int:
        answers = await asyncio.gather(*(asyncio.to_thread(self._ask, p, "COUNT", "COUNT") for p, _ in self.procs))
        return sum(int(a.split()[1]) for a in answers)

    async def stop(self) -> list[dict[str, Any]]:
        await asyncio.gather(*(asyncio.to_thread(self._ask, p, "STOP", "DONE") for p, _ in self.procs))
        results = []
        for proc, out in self.procs:
            proc.wait(10)
            results.append(json.loads(out.read_text()))
        self.procs = []
        return results

    def kill(self) -> None:
        for proc, _ in self.procs:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)


def history_success_times(url: str, prompt_ids: set[str]) -> dict[str, float]:
    """ComfyUI's own clock for each prompt's execution_success (ms resolution) from /history."""
    status, history = http_json(f"{url}/history?max_items={len(prompt_ids) + 1000}", timeout=60)
    if status != 200:
        raise RuntimeError(f"GET /history answered {status}")
    times: dict[str, float] = {}
    for prompt_id, entry in history.items():
        if prompt_id not in prompt_ids:
            continue
        for name, data in entry.get("status", {}).get("messages", []):
            if name == "execution_success":
                times[prompt_id] = data["timestamp"] / 1000
    return times


async def submit_at_rate(bench: Bench, pool: HttpPool, count: int, rate: float) -> tuple[list[Any], float]:
    """Open loop: ``count`` submissions on a fixed schedule, whatever the answers' speed; (answers, worst lag)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    jobs = []
    lag = 0.0
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        jobs.append(asyncio.create_task(submit_gate(pool, bench.workflow())))
    return list(await asyncio.gather(*jobs)), lag


async def wait_deliveries(count: Callable[[], Awaitable[int]], expected: int) -> None:
    """Until every delivery arrived, or deliveries stopped coming for 3 s."""
    loop = asyncio.get_running_loop()
    last, last_change = -1, loop.time()
    while True:
        got = await count()
        if got >= expected:
            return
        if got != last:
            last, last_change = got, loop.time()
        elif loop.time() - last_change > 3:
            return
        await asyncio.sleep(0.2)


def deliveries(
    results: list[dict[str, Any]], prompt_ids: set[str], event_times: dict[str, float]
) -> tuple[list[float], int, int]:
    """(latencies from ComfyUI's event to each arrival, deliveries missing, deliveries duplicated)."""
    latencies: list[float] = []
    missing = duplicates = 0
    for result in results:
        for prompt_id in prompt_ids:
            arrivals = result["arrivals"].get(prompt_id, [])
            missing += max(0, result["listeners"] - len(arrivals))
            duplicates += max(0, len(arrivals) - result["listeners"])
            if prompt_id in event_times:
                latencies += [t - event_times[prompt_id] for t in arrivals]
    return latencies, missing, duplicates


async def row_fanout(bench: Bench) -> Result:
    """``--listeners`` WebSockets on ComfyGate while ``--rate`` tasks/s run: event → every listener."""
    args = bench.args
    url, emu, gate = bench.stack("fanout", fresh=not args.smoke, costs="none")
    n_listeners, rate, seconds = args.listeners, args.rate, args.fanout_seconds
    count = max(1, int(rate * seconds))
    listeners = ListenerProcs(bench, f"{gate.ws_url}/ws", n_listeners, args.listener_procs)
    pool = HttpPool(gate.url, 8)
    try:
        connected = await listeners.ready()
        cpu0 = gate.cpu()
        answers, lag = await submit_at_rate(bench, pool, count, rate)
        prompt_ids = {a["prompt_id"] for a in answers}
        await wait_deliveries(listeners.count, connected * count)
        gate_cpu = gate.cpu() - cpu0
        results = await listeners.stop()
    finally:
        listeners.kill()
        await pool.close()
    event_times = await asyncio.to_thread(history_success_times, url, prompt_ids)
    bench.release(gate, emu)
    latencies, missing, duplicates = deliveries(results, prompt_ids, event_times)
    dropped = sum(len(r["closed"]) for r in results)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    passed = p99 <= 0.050 and dropped == 0 and missing == 0
    return Result(
        "fanout",
        f"p99 {ms(p99)} ms, {dropped} dropped, {missing} missed",
        "p99 ≤ 50 ms, none dropped",
        passed,
        {
            "listeners": connected,
            "tasks": count,
            "rate": rate,
            "deliveries": len(latencies),
            "duplicate_completed": duplicates,
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max(latencies) if latencies else float("nan")),
            "messages_per_listener": round(sum(r["messages"] for r in results) / max(connected, 1), 1),
            "submit_lag_ms": ms(lag),
            "gate_cpu_us_per_delivery": round(gate_cpu * 1e6 / max(len(latencies), 1), 1),
            "event_clock": "ComfyUI's execution_success timestamp (ms, rounded down: figures ≤ 1 ms pessimistic)",
        },
    )


# ----------------------------------------------------------------------------------- pool scaling
async def timed_batch(bench: Bench, gate: Gate, count: int) -> float:
    """Submit ``count`` tasks at once; tasks/s from the first submit to the last completion."""
    done = Completions()
    ws = await gate_ws(gate, done)
    pool = HttpPool(gate.url, 16)
    try:
        t0 = time.time()
        answers = await push(count, 16, lambda i: submit_gate(pool, bench.workflow()))
        await done.wait_count(count, timeout=120)
        t_end = max(done.times[a["task_id"]][0] for a in answers)
        bad = [done.times[a["task_id"]][1] for a in answers if done.times[a["task_id"]][1]["status"] != "completed"]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks did not complete, e.g. {bad[0]}")
    finally:
        ws.close()
        await pool.close()
    return count / (t_end - t0)


async def row_pool(bench: Bench) -> Result:
    """4 emulators with 200 ms workflows vs. 1, through ComfyGate."""
    if bench.real:
        return Result("pool", "skipped", "≥ 3.6× one backend", None, note="needs 4 emulators with workflow delays")
    args = bench.args
    node_delay = args.workflow_ms / 2000  # the trivial workflow runs two nodes
    emus = bench.start_emulators(4, "pool-emulator", node_delay=node_delay, costs="none")
    per = args.pool_tasks
    try:
        one = bench.start_gate("pool-gate-1", [emus[0].url], wait=False)
        four = bench.start_gate("pool-gate-4", [e.url for e in emus], wait=False)
        for gate in (one, four):
            gate.wait_ready()
        rate_one = await timed_batch(bench, one, per)
        bench.release(one)
        rate_four = await timed_batch(bench, four, 4 * per)
        bench.release(four)
    finally:
        bench.release(*emus)
    scale = rate_four / rate_one
    return Result(
        "pool",
        f"{scale:.2f}× ({rate_four:.2f} vs {rate_one:.2f} tasks/s)",
        "≥ 3.6× one backend",
        scale >= 3.6,
        {"workflow_ms": args.workflow_ms, "tasks_one": per, "tasks_four": 4 * per},
    )


# ----------------------------------------------------------------------------------- memory
async def row_memory(bench: Bench) -> Result:
    """RSS of ComfyGate holding ``--memory-tasks`` finished tasks (real instant tasks)."""
    args = bench.args
    n = args.memory_tasks
    url, emu, gate = bench.stack("memory", fresh=not args.smoke, costs="none", history_limit=max(n + 1000, 200_000))
    done = Completions()
    ws = await gate_ws(gate, done)
    pool = HttpPool(gate.url, args.concurrency)
    try:
        await push(20, 4, lambda i: submit_gate(pool, bench.workflow()))
        await done.wait_count(20, 30)
        base = gate.rss_mb()
        t0 = time.time()
        await push_kept(n, lambda i: submit_gate(pool, bench.workflow()), done)
        elapsed = time.time() - t0
        await asyncio.sleep(0.5)
        status, body = await pool.json("GET", "/api/tasks?limit=1")
        kept = body["total"] if status == 200 else -1
        rss, peak = gate.rss_mb(), gate.rss_mb("VmHWM")
    finally:
        ws.close()
        await pool.close()
        bench.release(gate, emu)
    per_task_kb = (rss - base) * 1024 / max(n, 1)
    return Result(
        "memory",
        f"RSS {rss:.0f} MB with {kept} tasks kept",
        "RSS ≤ 250 MB at 100,000 tasks",
        rss <= 250 and kept >= n,
        {
            "tasks": n,
            "kept": kept,
            "rss_before_mb": round(base, 1),
            "rss_mb": round(rss, 1),
            "peak_mb": round(peak, 1),
            "per_task_kb": round(per_task_kb, 2),
            "projected_100k_mb": round(base + per_task_kb * 100_000 / 1024, 1),
            "seconds": round(elapsed, 1),
        },
    )


# ----------------------------------------------------------------------------------- big outputs
class RssSampler:
    """The peak of a process's RSS, sampled every few ms in a thread (VmHWM reset as a cross-check)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = reset_peak_rss(pid)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self._stop.wait(0.003)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        peak = max(self.peak_kb, rss_kb(self.pid, "VmHWM") if self.hwm_reset else 0)
        return peak / 1024


def plain_copy_seconds(src: Path, dst: Path, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        shutil.copyfile(src, dst)
        best = min(best, time.perf_counter() - t0)
        dst.unlink()
    return best


async def row_big(bench: Bench) -> Result:
    """A ``--size-mb`` output through /view → outputs/ → /api/image: RSS growth and throughput."""
    if bench.real:
        return Result("big", "skipped", "≤ 20 MB RSS, ≥ 50% of a copy", None, note="needs the emulator's extra_output")
    args = bench.args
    size = int(args.size_mb * 1024 * 1024)
    url, emu, gate = bench.stack("big", fresh=not args.smoke)
    assert emu is not None
    done = Completions()
    ws = await gate_ws(gate, done)
    http = HttpConn(gate.url)
    received = 0

    def sink(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)

    async def one() -> tuple[float, float, float, int]:
        nonlocal received
        received = 0
        t0 = time.time()
        answer = await submit_gate(http, bench.workflow(), retry_busy=False)
        t1, message = await done.wait(answer["task_id"], timeout=300)
        if message["status"] != "completed":
            raise RuntimeError(f"big-output task ended {message['status']}: {message.get('error')}")
        output = next(o for o in message["outputs"] if o["comfyui"].get("filename", "").startswith("bench_big"))
        status, _ = await http.request("GET", output["url"], sink=sink)
        if status != 200:
            raise RuntimeError(f"GET {output['url']} answered {status}")
        return t0, t1, time.time(), received

    try:
        # Warm-up with a 1 MB file: code paths, connections and buffers exist before the baseline.
        await asyncio.to_thread(
            http_json, f"{emu.url}/emulator/extra_output", {"filename": "bench_big_warm.bin", "size": 1 << 20}
        )
        await one()
        await asyncio.to_thread(
            http_json, f"{emu.url}/emulator/extra_output", {"filename": "bench_big.bin", "size": size}, 300
        )
        await asyncio.sleep(0.2)
        base = gate.rss_mb()
        sampler = RssSampler(gate.pid)
        t0, t1, t2, got = await one()
        peak = sampler.stop()
        await asyncio.to_thread(http_json, f"{emu.url}/emulator/extra_output", {})
        src = emu.base_dir / "output" / "bench_big.bin"
        copy_s = await asyncio.to_thread(plain_copy_seconds, src, bench.workdir / "copy.bin")
    finally:
        ws.close()
        await http.close()
        bench.release(gate, emu)
    if got != size:
        raise RuntimeError(f"/api/image sent {got} bytes, expected {size}")
    growth = peak - base
    mb = size / (1 << 20)
    through = mb / (t2 - t0)
    copy = mb / copy_s
    ratio = through / copy
    return Result(
        "big",
        f"RSS +{growth:.1f} MB, {through:.0f} MB/s = {ratio:.0%} of a copy",
        "RSS growth ≤ 20 MB, ≥ 50% of a copy",
        growth <= 20 and ratio >= 0.5,
        {
            "size_mb": round(mb, 1),
            "rss_before_mb": round(base, 1),
            "rss_peak_mb": round(peak, 1),
            "submit_to_completed_s": round(t1 - t0, 3),
            "api_image_s": round(t2 - t1, 3),
            "end_to_end_mb_per_s": round(through, 1),
            "plain_copy_mb_per_s": round(copy, 1),
        },
    )


ROWS: dict[str, Callable[[Bench], Awaitable[Result | list[Result]]]] = {
    "throughput": row_throughput,
    "fanout": row_fanout,
    "pool": row_pool,
    "memory": row_memory,
    "big": row_big,
}

# The Comfy API v2 row lives in its own module (it needs comfy-sdk and comfy-api-proxy); imported last: it
# uses this module's Bench and Result.
from bench.apiv2_sdk import row_sdk  # noqa: E402

ROWS["sdk"] = row_sdk
