"""The benchmark suite runs end to end with tiny sizes and prints every row (timings not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.run import ROWS  # every row, the cluster ones (bench/cluster.py) included

PROJECT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout.split("\n\nrow ", 1)[1]
    for row in ROWS:
        assert f"\n{row} " in table, f"row {row} missing from:\n{table}"
    results = {r["row"]: r for r in json.loads(out.read_text())["results"]}
    # The latency row also reports ComfyGate's synchronous and same-host paths and comfy-api-proxy beside it.
    assert set(results) == set(ROWS) | {"latency-wait", "latency-inline", "latency-same-host", "peer-proxy"}
    assert results["peer-proxy"]["passed"] is not None, "comfy-api-proxy (requirements-dev.txt) did not run"
    for name, result in results.items():
        assert not result["measured"].startswith("error"), (name, result)
