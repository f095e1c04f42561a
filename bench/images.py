"""Rows whose unit is an image in the client's hands: latency (with its breakdown) and bursts.

Every path is timed the way issue 18 measured a real ComfyUI: from "the client starts the submit" to
"the client holds the PNG bytes", the trivial EmptyImage → SaveImage workflow with a fresh colour per
run (nothing cached), paths alternating in one run. Each run is split into submit (until the submit
answer), until done (until the client knows the task ended and which file to fetch) and output fetch.

Paths: ComfyUI directly (``POST /prompt``, ``execution_success`` on its ``/ws`` with the file named by
``executed``, ``GET /view``), ComfyGate (``/api/workflow/submit``, ``completed`` on ``/ws``,
``GET /api/image``), ComfyGate synchronous (``?wait=true``, then ``/api/image``; or with
``output_format=base64``: the image in the one answer, as Salad's API does), and comfy-api-proxy (Comfy-Org's official
proxy, PyPI): ``POST /api/v2/jobs``, its SSE stream until the terminal status and outputs (then
``GET /api/v2/jobs/{id}`` if the stream ended without them, as its README says to), ``GET`` the output.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from bench.lean import HttpConn, split_url, ws_connect
from bench.procs import Proxy
from bench.rows import Bench, Completions, Result, gate_ws, ms, percentile

PNG = b"\x89PNG\r\n\x1a\n"
TERMINAL = ("succeeded", "failed", "canceled", "expired")


@dataclass
class Run:
    submit: float
    done: float
    fetch: float

    @property
    def total(self) -> float:
        return self.submit + self.done + self.fetch


@dataclass
class PathStats:
    name: str
    runs: list[Run] = field(default_factory=list)

    def med(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def p99(self) -> float:
        return percentile([r.total for r in self.runs], 99)

    def breakdown(self) -> str:
        return f"{ms(self.med('submit'))} / {ms(self.med('done'))} / {ms(self.med('fetch'))} ms"

    def details(self) -> dict[str, Any]:
        return {
            "median_ms": ms(self.med("total")),
            "p99_ms": ms(self.p99()),
            "submit_ms": ms(self.med("submit")),
            "until_done_ms": ms(self.med("done")),
            "fetch_ms": ms(self.med("fetch")),
        }


def image_workflow(color: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench/img"}},
    }


def check_png(status: int, body: bytes, what: str) -> None:
    if status != 200 or not body.startswith(PNG):
        raise RuntimeError(f"{what} answered {status} with {body[:80]!r}")


class ComfyImages(Completions):
    """ComfyUI's /ws for the direct path: execution_success/error, and the files each ``executed`` names."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, list[dict[str, Any]]] = {}

    def on_comfy_frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 1 and b'"type": "executed"' in payload[:40]:
            message = json.loads(payload)
            data = message["data"]
            self.files.setdefault(data["prompt_id"], []).extend((data.get("output") or {}).get("images", []))
            return
        super().on_comfy_frame(opcode, payload, now)


def split(t0: float, answered: float, done: float, fetched: float) -> Run:
    """The three parts; "done" before the submit answer arrived counts as zero (the client cannot act on it)."""
    done = max(done, answered)
    return Run(answered - t0, done - answered, fetched - done)


class Paths:
    """The clients of every path, each with its own keep-alive connections and WebSocket."""

    def __init__(self, bench: Bench, url: str, gate: Any, proxy: Proxy | None, local: Any = None) -> None:
        self.bench, self.url, self.gate, self.proxy, self.local = bench, url, gate, proxy, local
        self.client_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.direct_events = ComfyImages()
        self.gate_events = Completions()
        self.local_events = Completions()
        self.direct_http, self.gate_http = HttpConn(url), HttpConn(gate.url)
        self.local_http = HttpConn(local.url) if local else None
        self.proxy_http = HttpConn(proxy.url) if proxy else None
        self.proxy_sse = HttpConn(proxy.url) if proxy else None
        self._ws: list[Any] = []
        self._color = int(time.time()) % 0xFFFF * 251

    async def open(self) -> None:
        host, port = split_url(self.url)
        self._ws.append(
            await ws_connect(f"ws://{host}:{port}/ws?clientId={self.client_id}", self.direct_events.on_comfy_frame)
        )
        self._ws.append(await gate_ws(self.gate, self.gate_events))
        if self.local is not None:
            self._ws.append(await gate_ws(self.local, self.local_events))

    async def close(self) -> None:
        for ws in self._ws:
            ws.close()
        for conn in (self.direct_http, self.gate_http, self.proxy_http, self.proxy_sse, self.local_http):
            if conn is not None:
                await conn.close()

    def workflow(self) -> dict[str, Any]:
        self._color = (self._color + 1) % 0xFFFFFF
        return image_workflow(self._color)

    # ------------------------------------------------------------------------------- the paths
    async def direct(self) -> Run:
        http, events = self.direct_http, self.direct_events
        prompt_id = str(uuid.uuid4())
        body = {"prompt": self.workflow(), "client_id": self.client_id, "prompt_id": prompt_id}
        t0 = time.time()
        status, answer = await http.json("POST", "/prompt", body)
        t1 = time.time()
        if status != 200:
            raise RuntimeError(f"ComfyUI refused a prompt: {status} {answer}")
        when, message = await events.wait(prompt_id)
        if message["type"] != "execution_success":
            raise RuntimeError(f"direct run failed: {message}")
        image = events.files.pop(prompt_id)[0]
        query = f"filename={quote(image['filename'])}&subfolder={quote(image['subfolder'])}&type={image['type']}"
        status, png = await http.request("GET", f"/view?{query}")
        check_png(status, png, "ComfyUI /view")
        return split(t0, t1, when, time.time())

    async def gate_socket(self) -> Run:
        return await self._via_socket(self.gate_http, self.gate_events)

    async def gate_local(self) -> Run:
        assert self.local_http is not None
        return await self._via_socket(self.local_http, self.local_events)

    async def _via_socket(self, http: HttpConn, events: Completions) -> Run:
        t0 = time.time()
        status, answer = await http.json("POST", "/api/workflow/submit", {"workflow": self.workflow()})
        t1 = time.time()
        if status != 200:
            raise RuntimeError(f"ComfyGate refused a submission: {status} {answer}")
        when, message = await events.wait(answer["task_id"])
        if message["status"] != "completed":
            raise RuntimeError(f"ComfyGate task ended {message['status']}: {message.get('error')}")
        status, png = await http.request("GET", message["outputs"][0]["url"])
        check_png(status, png, "ComfyGate /api/image")
        return split(t0, t1, when, time.time())

    async def gate_wait(self) -> Run:
        http = self.gate_http
        t0 = time.time()
        status, answer = await http.json("POST", "/api/workflow/submit?wait=true", {"workflow": self.workflow()})
        t1 = time.time()
        if status != 200 or answer.get("status") != "completed":
            raise RuntimeError(f"ComfyGate ?wait=true answered {status}: {str(answer)[:300]}")
        status, png = await http.request("GET", answer["outputs"][0]["url"])
        check_png(status, png, "ComfyGate /api/image")
        return Run(t1 - t0, 0.0, time.time() - t1)

    async def gate_inline(self) -> Run:
        """One request: ``?wait=true&output_format=base64`` answers with the image in the JSON (as Salad's API does)."""
        http = self.gate_http
        t0 = time.time()
        status, answer = await http.json(
            "POST", "/api/workflow/submit?output_format=base64", {"workflow": self.workflow()}
        )
        if status != 200 or answer.get("status") != "completed":
            raise RuntimeError(f"ComfyGate ?output_format=base64 answered {status}: {str(answer)[:300]}")
        png = base64.b64decode(answer["outputs"][0]["data"])
        check_png(200, png, "ComfyGate inline output")
        return Run(time.time() - t0, 0.0, 0.0)

    async def via_proxy(self) -> Run:
        assert self.proxy_http is not None and self.proxy_sse is not None
        http = self.proxy_http
        t0 = time.time()
        status, job = await http.json("POST", "/api/v2/jobs", {"workflow": self.workflow()})
        t1 = time.time()
        if status != 201:
            raise RuntimeError(f"comfy-api-proxy refused a job: {status} {job}")
        job_id = job["id"]
        status, stream = await self.proxy_sse.request("GET", f"/api/v2/jobs/{job_id}/events")
        state, outputs = sse_outcome(stream.decode())
        while state not in TERMINAL or not outputs:  # the stream ended early: poll, as its README says
            status, job = await http.json("GET", f"/api/v2/jobs/{job_id}")
            state, outputs = job.get("status"), job.get("outputs") or []
            if state not in TERMINAL:
                await asyncio.sleep(0.001)
        when = time.time()
        if state != "succeeded":
            raise RuntimeError(f"comfy-api-proxy job ended {state}: {job}")
        status, png = await http.request("GET", urlsplit(outputs[0]["url"]).path)
        check_png(status, png, "comfy-api-proxy asset content")
        return split(t0, t1, when, time.time())


def sse_outcome(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The last status and every output of an SSE stream from comfy-api-proxy."""
    state: str | None = None
    outputs: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        event = data = None
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        if event == "status" and data:
            state = data.get("status")
        elif event == "output" and data:
            outputs.append(data)
    return state, outputs


def start_proxy(bench: Bench, url: str) -> Proxy | None:
    if importlib.util.find_spec("comfy_api_proxy") is None:
        return None
    return bench.start_proxy("proxy", url)


# ----------------------------------------------------------------------------------- latency
async def row_latency(bench: Bench) -> list[Result]:
    """Every path, alternating, one image at a time; ComfyGate's rows compared with the direct one."""
    args = bench.args
    url, emu, gate = bench.stack("latency", fresh=not args.smoke)
    # Against the emulator, each peer has a server of its own, as in issue 18's pairs on the real server (the
    # direct client and one path): a ComfyUI broadcasts every queue change to all its WebSocket clients, and
    # peers idling on the same server would each wake on every run of the others, on the same 2 cores.
    proxy_url = url
    local = None
    peer_emus: list[Any] = []
    if emu is not None:
        proxy_emu, local_emu = bench.start_emulators(2, "latency-peer-emulator")
        peer_emus = [proxy_emu, local_emu]
        proxy_url = proxy_emu.url
        # the same-host fast path: a second ComfyGate told where its emulator's outputs are
        env = {"COMFYUI_COMFYUI_OUTPUT_DIR": str(local_emu.base_dir / "output")}
        local = bench.start_gate("latency-gate-local", [local_emu.url], env=env)
    proxy = start_proxy(bench, proxy_url)
    paths = Paths(bench, url, gate, proxy, local)
    await paths.open()
    named: list[tuple[str, Callable[[], Awaitable[Run]]]] = [
        ("direct", paths.direct),
        ("gate", paths.gate_socket),
        ("gate_wait", paths.gate_wait),
        ("gate_inline", paths.gate_inline),
    ]
    if proxy is not None:
        named.append(("proxy", paths.via_proxy))
    if local is not None:
        named.append(("gate_local", paths.gate_local))
    stats = {name: PathStats(name) for name, _ in named}
    try:
        for _ in range(args.warmup):
            for _, fn in named:
                await fn()
        for i in range(args.runs):
            k = i % len(named)
            for name, fn in named[k:] + named[:k]:  # rotate who goes first
                stats[name].runs.append(await fn())
                await asyncio.sleep(0.005)  # let the trailing events of a run settle
    finally:
        await paths.close()
        bench.release(gate, emu, proxy, local, *peer_emus)
    direct = stats["direct"]
    d_med, d_p99 = direct.med("total"), direct.p99()
    peers = {n: s.med("total") - d_med for n, s in stats.items() if n != "direct"}
    results = []
    for name, label, target in (
        ("gate", "latency", "added median ≤ 2 ms, p99 ≤ 10 ms, below every peer"),
        ("gate_wait", "latency-wait", "added median ≤ 2 ms, p99 ≤ 10 ms"),
        ("gate_inline", "latency-inline", "added median ≤ 2 ms, p99 ≤ 10 ms"),
        ("gate_local", "latency-same-host", "added median ≤ 2 ms, p99 ≤ 10 ms"),
    ):
        if name not in stats:
            continue
        s = stats[name]
        added, added_p99 = s.med("total") - d_med, s.p99() - d_p99
        passed = added <= 0.002 and added_p99 <= 0.010
        if name == "gate" and "proxy" in peers:
            passed = passed and added < peers["proxy"]
        results.append(
            Result(
                label,
                f"added median {ms(added)} ms, p99 {ms(added_p99)} ms; submit / until done / fetch "
                f"{s.breakdown()} (direct {direct.breakdown()})",
                target,
                passed,
                {
                    "runs": len(s.runs),
                    "direct": direct.details(),
                    "path": s.details(),
                    "ratio": round(s.med("total") / d_med, 2),
                },
            )
        )
    if proxy is None:
        results.append(
            Result("peer-proxy", "skipped", "measured beside ComfyGate", None, note="pip install comfy-api-proxy")
        )
    else:
        s = stats["proxy"]
        results.append(
            Result(
                "peer-proxy",
                f"comfy-api-proxy added median {ms(peers['proxy'])} ms, p99 {ms(s.p99() - d_p99)} ms; "
                f"submit / until done / fetch {s.breakdown()}",
                "(a peer: for comparison)",
                True,
                {"direct": direct.details(), "path": s.details(), "ratio": round(s.med("total") / d_med, 2)},
            )
        )
    return results


# ----------------------------------------------------------------------------------- bursts
async def burst(n: int, one: Callable[[int], Awaitable[Any]]) -> tuple[float, int, str]:
    """``n`` at once; seconds from the first start to the last image, failures, the first failure's text."""
    t0 = time.time()
    outcomes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return time.time() - t0, len(errors), (f"{type(errors[0]).__name__}: {errors[0]}" if errors else "")


async def row_burst(bench: Bench) -> Result:  # noqa: C901 (one row: set-up, both sides, the report)
    """``--burst`` images at once, ``--burst-rounds`` times with keep-alive connections idle in between."""
    args = bench.args
    n = args.burst
    url, emu, gate = bench.stack("burst", fresh=not args.smoke)
    client_id = f"bench-{uuid.uuid4().hex[:8]}"
    direct_events, gate_events = ComfyImages(), Completions()
    host, port = split_url(url)
    ws = [
        await ws_connect(f"ws://{host}:{port}/ws?clientId={client_id}", direct_events.on_comfy_frame),
        await gate_ws(gate, gate_events),
    ]
    direct_conns = [HttpConn(url) for _ in range(n)]
    gate_conns = [HttpConn(gate.url) for _ in range(n)]
    wait_conns = [HttpConn(gate.url) for _ in range(n)]
    color = [int(time.time()) % 0xFFFF * 97]

    def workflow() -> dict[str, Any]:
        color[0] = (color[0] + 1) % 0xFFFFFF
        return image_workflow(color[0])

    async def direct(i: int) -> None:
        http = direct_conns[i]
        prompt_id = str(uuid.uuid4())
        body = {"prompt": workflow(), "client_id": client_id, "prompt_id": prompt_id}
        status, answer = await http.json("POST", "/prompt", body)
        if status != 200:
            raise RuntimeError(f"ComfyUI answered {status}")
        _, message = await direct_events.wait(prompt_id, timeout=120)
        image = direct_events.files.pop(prompt_id)[0]
        status, png = await http.request(
            "GET", f"/view?filename={quote(image['filename'])}&subfolder={quote(image['subfolder'])}&type=output"
        )
        check_png(status, png, "/view")

    async def via_socket(i: int) -> None:
        http = gate_conns[i]
        status, answer = await http.json("POST", "/api/workflow/submit", {"workflow": workflow()})
        if status != 200:
            raise RuntimeError(f"ComfyGate answered {status}: {answer}")
        _, message = await gate_events.wait(answer["task_id"], timeout=120)
        if message["status"] != "completed":
            raise RuntimeError(f"task ended {message['status']}")
        status, png = await http.request("GET", message["outputs"][0]["url"])
        check_png(status, png, "/api/image")

    async def via_wait(i: int) -> None:
        http = wait_conns[i]
        status, answer = await http.json("POST", "/api/workflow/submit?wait=true", {"workflow": workflow()})
        if status != 200 or answer.get("status") != "completed":
            raise RuntimeError(f"ComfyGate answered {status}: {str(answer)[:200]}")
        status, png = await http.request("GET", answer["outputs"][0]["url"])
        check_png(status, png, "/api/image")

    times: dict[str, list[float]] = {"direct": [], "gate": [], "gate_wait": []}
    cpu = {"gate": 0.0, "gate_wait": 0.0}
    failures = 0
    first_error = ""
    try:
        for round_no in range(args.burst_rounds):
            if round_no:
                await asyncio.sleep(args.burst_idle)  # every pooled connection idle as long as this
            paths = [("direct", direct), ("gate", via_socket), ("gate_wait", via_wait)]
            # Who goes first rotates (first after the idle wait, and first after the emulator's last burst).
            for name, fn in paths[round_no % 3 :] + paths[: round_no % 3]:
                cpu0 = gate.cpu()
                seconds, failed, error = await burst(n, fn)
                if name != "direct":  # ComfyGate's CPU per image: steadier than times on a shared machine
                    cpu[name] += gate.cpu() - cpu0
                times[name].append(seconds)
                failures += failed
                first_error = first_error or error
                await asyncio.sleep(0.2)
    finally:
        for reader in ws:
            reader.close()
        for conn in direct_conns + gate_conns + wait_conns:
            await conn.close()
        bench.release(gate, emu)
    d, g, w = (statistics.median(times[k]) for k in ("direct", "gate", "gate_wait"))
    passed = failures == 0 and g <= d and w <= d
    return Result(
        "burst",
        f"{n} at once: direct {ms(d)} ms, ComfyGate /ws {ms(g)} ms, ?wait=true {ms(w)} ms; {failures} failed",
        "no later than direct, 0 failed",
        passed,
        {
            "burst": n,
            "rounds": args.burst_rounds,
            "idle_between_s": args.burst_idle,
            "direct_ms": [ms(t) for t in times["direct"]],
            "gate_ms": [ms(t) for t in times["gate"]],
            "gate_wait_ms": [ms(t) for t in times["gate_wait"]],
            "failures": failures,
            "first_failure": first_error,
            "gate_cpu_ms_per_image": round(cpu["gate"] * 1000 / (n * args.burst_rounds), 2),
            "gate_wait_cpu_ms_per_image": round(cpu["gate_wait"] * 1000 / (n * args.burst_rounds), 2),
        },
    )
