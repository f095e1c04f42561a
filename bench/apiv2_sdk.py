"""Bench row ``sdk``: the official comfy-sdk's ``run()`` through ComfyGate's Comfy API v2 vs. through
Comfy-Org's comfy-api-proxy, both in front of the same emulator.

Measured per run: from ``client.run(workflow)`` to every output's bytes in hand (``to_bytes``), one
run after another (``--runs``) and a burst of 50 concurrent runs (``AsyncComfy``). Also, as details:
the same through ``job.events()`` (outputs taken from the stream as they come), which is how an app
shows results live. The proxy is ``comfy-api-proxy`` from PyPI (``bench.procs.Proxy``); without it the
row is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

from bench.procs import Proxy

if TYPE_CHECKING:  # bench.rows imports this module to register the row: no import back at load time
    from bench.rows import Bench, Result

BURST = 50


def workflow(color: int) -> dict[str, Any]:
    """EmptyImage → SaveImage, a fresh color each run (never cached): one PNG output."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sdkbench"}},
    }


def _client(base_url: str, asynchronous: bool = False) -> Any:
    from comfy_sdk import AsyncComfy, Comfy

    os.environ["COMFY_BASE_URL"] = base_url  # read at construction: the SDK's only way to pick a host
    os.environ.pop("COMFY_API_KEY", None)
    return AsyncComfy() if asynchronous else Comfy()


class Runs:
    """Times of the runs that brought their outputs, and how the others ended (e.g. "expired": the
    reference proxy's race between its history and queue reads, which the SDK's run() raises as JobFailed)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.failed: dict[str, int] = {}

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1

    def summary(self) -> dict[str, Any]:
        from bench.rows import ms, percentile

        body: dict[str, Any] = {"n": len(self.times), "failed": self.failed}
        if self.times:
            body |= {"median_ms": ms(statistics.median(self.times)), "p95_ms": ms(percentile(self.times, 95))}
        return body


def _why(exc: Exception) -> str:
    """How a run failed: the status it ended with ("job … ended expired"), else the error code."""
    text = str(exc)
    return text.rsplit(" ", 1)[-1] if " ended " in text else str(getattr(exc, "code", None) or type(exc).__name__)


def _outputs_ok(got: list[bytes]) -> bool:
    return bool(got) and got[0].startswith(b"\x89PNG")


def _sequential(base_url: str, runs: int, warmup: int, first_color: int, live: bool) -> Runs:
    """One run after another: ``run()`` then the outputs' bytes; or (``live``) ``submit()`` + ``events()``,
    taking the outputs from the stream, and from the job when the stream brought none (the proxy's case)."""
    from comfy_sdk import ComfyError, Output, OutputReady, Workflow

    result = Runs()
    with _client(base_url) as client:
        for i in range(warmup + runs):
            started = time.perf_counter()
            try:
                if live:
                    job = client.submit(Workflow(workflow(first_color + i)))
                    streamed = [e.output for e in job.events() if isinstance(e, OutputReady)]
                    got = [o.to_bytes() for o in streamed if isinstance(o, Output)]
                    if not got:
                        job.wait()
                        got = [o.to_bytes() for o in job.outputs]
                else:
                    job = client.run(Workflow(workflow(first_color + i)))
                    got = [o.to_bytes() for o in job.outputs]
            except ComfyError as exc:
                result.fail(_why(exc))
                continue
            elapsed = time.perf_counter() - started
            if not _outputs_ok(got):
                result.fail(f"{job.status} without outputs")
            elif i >= warmup:
                result.times.append(elapsed)
    return result


async def _burst(base_url: str, count: int, first_color: int) -> tuple[float, Runs]:
    from comfy_sdk import ComfyError, Workflow

    result = Runs()
    async with _client(base_url, asynchronous=True) as client:

        async def one(i: int) -> None:
            started = time.perf_counter()
            try:
                job = await client.run(Workflow(workflow(first_color + i)))
                got = [await o.to_bytes() for o in job.outputs]
            except ComfyError as exc:
                result.fail(_why(exc))
                return
            if _outputs_ok(got):
                result.times.append(time.perf_counter() - started)
            else:
                result.fail(f"{job.status} without outputs")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started, result


async def row_sdk(bench: Bench) -> Result:
    """comfy-sdk ``run()`` → outputs in hand: ComfyGate's /api/v2 vs. comfy-api-proxy, sequential and burst."""
    from bench.rows import Result, ms

    if importlib.util.find_spec("comfy_api_proxy") is None:
        return Result(
            "sdk", "-", "ComfyGate ≤ proxy", None, note="comfy-api-proxy is not installed (pip install comfy-api-proxy)"
        )
    try:
        import comfy_sdk  # noqa: F401
    except ImportError:
        return Result("sdk", "-", "ComfyGate ≤ proxy", None, note="comfy-sdk is not installed (requirements-dev.txt)")
    args = bench.args
    runs, warmup = max(3, args.runs // 4), max(1, args.warmup // 4)
    burst = 5 if args.smoke else BURST
    url, emu, gate = bench.stack("sdk", fresh=True)
    proxy = Proxy(bench.workdir, "sdk-proxy", url).wait_ready()
    try:
        sides = {"comfygate": gate.url, "proxy": proxy.url}
        details: dict[str, Any] = {"runs": runs, "burst": burst}
        color = 1
        for name, base in sides.items():
            seq = await asyncio.to_thread(_sequential, base, runs, warmup, color, False)
            color += runs + warmup
            live = await asyncio.to_thread(_sequential, base, runs, warmup, color, True)
            color += runs + warmup
            total, each = await _burst(base, burst, color)
            color += burst
            details[name] = {
                "run_sequential": seq.summary(),
                "events_sequential": live.summary(),
                "burst_total_ms": ms(total),
                "burst_each": each.summary(),
            }
    finally:
        proxy.stop()
        bench.release(emu, gate)
    g, p = details["comfygate"], details["proxy"]

    def med(side: dict[str, Any], key: str) -> float:
        return float(side[key].get("median_ms", float("nan")))

    def lost(side: dict[str, Any]) -> int:
        return sum(sum(side[k]["failed"].values()) for k in ("run_sequential", "events_sequential", "burst_each"))

    measured = (
        f"run() median {med(g, 'run_sequential')} vs {med(p, 'run_sequential')} ms; "
        f"events {med(g, 'events_sequential')} vs {med(p, 'events_sequential')} ms; "
        f"burst of {burst} {g['burst_total_ms']} vs {p['burst_total_ms']} ms; "
        f"runs without outputs {lost(g)} vs {lost(p)} (ComfyGate vs proxy)"
    )
    passed = (
        lost(g) == 0
        and med(g, "run_sequential") <= med(p, "run_sequential") * 1.1
        and g["burst_total_ms"] <= p["burst_total_ms"] * 1.1
    )
    return Result("sdk", measured, "ComfyGate ≤ proxy (+10%)", passed, details)
