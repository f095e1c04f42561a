"""Run the benchmark suite: ``python -m bench [--smoke] [--only ROW,...] [--comfyui-url URL] [sizes]``.

Starts what each row needs on loopback (emulators and ComfyGate as subprocesses), runs the rows and
prints one table: measured figure, target, pass/fail. ``--json FILE`` keeps every detail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import rows  # noqa: E402
from bench.cluster import CLUSTER_ROWS  # noqa: E402
from bench.images import row_burst, row_latency  # noqa: E402
from bench.rows import Bench, Result  # noqa: E402

ROWS: dict[str, Callable[[Bench], Awaitable[Result | list[Result]]]] = {
    "latency": row_latency,
    "burst": row_burst,
    **rows.ROWS,
    **CLUSTER_ROWS,
}


FULL = {
    "runs": 200,
    "warmup": 20,
    "burst": 50,
    "burst_rounds": 3,
    "burst_idle": 5.0,
    "tasks": 2000,
    "concurrency": 8,
    "listeners": 1000,
    "rate": 50.0,
    "fanout_seconds": 10.0,
    "listener_procs": 2,
    "pool_tasks": 25,
    "workflow_ms": 200.0,
    "memory_tasks": 100_000,
    "size_mb": 200.0,
}
SMOKE = {
    "runs": 10,
    "warmup": 2,
    "burst": 5,
    "burst_rounds": 1,
    "burst_idle": 0.0,
    "tasks": 40,
    "concurrency": 4,
    "listeners": 10,
    "rate": 20.0,
    "fanout_seconds": 0.5,
    "listener_procs": 1,
    "pool_tasks": 2,
    "workflow_ms": 20.0,
    "memory_tasks": 100,
    "size_mb": 2.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", help=f"comma-separated rows: {','.join(ROWS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, shared processes: checks the suite runs")
    p.add_argument("--comfyui-url", help="run against this real ComfyUI (rows needing emulator controls skip)")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs of every process)")
    p.add_argument("--gate-log-level", default="info", help="ComfyGate's --log-level (default: its default)")
    p.add_argument(
        "--emulator-costs",
        choices=("realistic", "none"),
        help="the emulators' cost model for every row (default: realistic for latency, burst and big; none for "
        "throughput, fan-out, pool and memory, which measure ComfyGate's own capacity)",
    )
    p.add_argument("--gc-pauses", action="store_true", help="emulators pause 300-650 ms every ~10 s like ComfyUI")
    sizes = p.add_argument_group("sizes (defaults: the targets' sizes; --smoke: tiny)")
    sizes.add_argument("--runs", type=int, help="latency: sequential runs per side (200)")
    sizes.add_argument("--warmup", type=int, help="latency: warm-up runs per side (20)")
    sizes.add_argument("--burst", type=int, help="burst: images requested at once (50)")
    sizes.add_argument("--burst-rounds", type=int, help="burst: rounds of each path (3)")
    sizes.add_argument("--burst-idle", type=float, help="burst: seconds connections stay idle between rounds (5)")
    sizes.add_argument("--tasks", type=int, help="throughput: tasks per side (2000)")
    sizes.add_argument("--concurrency", type=int, help="throughput/memory: submitting connections (8)")
    sizes.add_argument("--listeners", type=int, help="fan-out: WebSocket listeners (1000)")
    sizes.add_argument("--rate", type=float, help="fan-out: tasks per second (50)")
    sizes.add_argument("--fanout-seconds", type=float, help="fan-out: seconds of load (10)")
    sizes.add_argument("--listener-procs", type=int, help="fan-out: processes holding the listeners (2)")
    sizes.add_argument("--pool-tasks", type=int, help="pool: tasks per backend (25)")
    sizes.add_argument("--workflow-ms", type=float, help="pool: duration of one workflow (200)")
    sizes.add_argument("--memory-tasks", type=int, help="memory: finished tasks kept (100000)")
    sizes.add_argument("--size-mb", type=float, help="big outputs: size of the output file (200)")
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.rows = [r.strip() for r in args.only.split(",")] if args.only else list(ROWS)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return args


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def verdict(result: Result) -> str:
    if result.measured.startswith("error"):
        return "ERROR"
    if result.passed is None:
        return "SKIP"
    return "PASS" if result.passed else "FAIL"


def table(results: list[Result], smoke: bool) -> str:
    rows = [("row", "measured", "target", "result")]
    for r in results:
        mark = verdict(r) if not smoke or verdict(r) in ("SKIP", "ERROR") else f"({verdict(r).lower()})"
        rows.append((r.row, r.measured if r.passed is not None else r.note, r.target, mark))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run_rows(bench: Bench) -> list[Result]:
    results: list[Result] = []
    for name in bench.args.rows:
        print(f"[bench] {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            outcome = await ROWS[name](bench)
        except Exception as exc:  # one broken row must not hide the others
            traceback.print_exc()
            outcome = Result(name, f"error: {type(exc).__name__}: {exc}"[:200], "", False)
        for result in outcome if isinstance(outcome, list) else [outcome]:
            result.details["row_seconds"] = round(time.monotonic() - t0, 1)
            print(f"[bench] {result.row}: {result.measured} {json.dumps(result.details)}", flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="comfygate-bench-"))
    bench = Bench(args, workdir)
    info = machine()
    print(f"[bench] machine: {info}; scratch: {workdir}", flush=True)
    try:
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            results = asyncio.run(run_rows(bench))
        else:
            results = uvloop.run(run_rows(bench))
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(table(results, args.smoke))
    if args.smoke:
        print("(smoke run: tiny sizes, targets not meaningful)")
    print(f"machine: {info['nproc']} × {info['cpu']}, load {info['load']} → {info['load_after']}")
    if args.json:
        payload: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "json"}}
        payload["results"] = [r.__dict__ for r in results]
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    failed = any(r.passed is False for r in results)
    if args.smoke:
        return 1 if any(r.measured.startswith("error") for r in results) else 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
