"""What the emulator's answers cost in time, so a benchmark against it predicts a real ComfyUI.

The figures come from recordings of ComfyUI 0.3.64 on a 2-core CPU machine
(``shared/comfyui-protocol/transcripts/50_*``-``56_*``): ``POST /prompt`` answers after ~5.4 ms (or
~2 ms, when the answer leaves before the worker thread takes the GIL), the prompt starts about when
the answer leaves, ``/view`` of a small file takes ~5 ms, ``/history/{id}`` ~2 ms, history is written
slightly after ``execution_success`` (11 of 100 immediate reads saw ``{}``), and the server pauses for
garbage collection every ~10 s under load.

Waiting in the real server (GIL hand-over, executor hops) is modelled as ``asyncio.sleep``: latency
without CPU, so the figures do not depend on this machine's load and the emulator does not take CPU
from the process measured beside it. Only a GC pause blocks the loop, as the real one does. Every
random draw comes from one seeded ``random.Random``: the same sequence of calls gives the same delays.

The delays are added to what the emulator itself costs (~1 ms per request), and uvloop's timers are
millisecond-grained; ``realistic()`` was calibrated by measuring the emulator the way the recordings
measured the real server (see BENCHMARKS.md, "The emulator's costs").
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Per node class, milliseconds of execution beyond what the emulator's own Python costs.
# PreviewAny turns a tensor into text, the slow part of the recorded trivial workflow (8.75 vs 5.92 ms).
REALISTIC_NODE_MS = {"PreviewAny": 2.5}


@dataclass
class Costs:
    """Delays in milliseconds; all zero (``Costs()``) is the instant emulator."""

    post_ms: float = 0.0  # POST /prompt: arrival → answer, the slow mode
    post_fast_ms: float = 0.0  # the fast mode (answer left before the worker took the GIL)
    post_fast_share: float = 0.0  # how often the fast mode happens
    post_jitter_ms: float = 0.0
    validate_ms: float = 0.0  # POST /prompt: validation in the server's one loop, one request at a time
    start_ms: float = 0.0  # POST /prompt arrival → the worker may start the prompt
    prompt_gap_ms: float = 0.0  # end of a prompt → the next may start (the worker's bookkeeping)
    node_ms: float = 0.0  # every executed node
    class_ms: dict[str, float] = field(default_factory=dict)  # per class, instead of node_ms
    history_ms: float = 0.0  # GET /history[/id]: answer after reading the state
    history_lag_share: float = 0.0  # share of prompts whose history lands late
    history_lag_ms: float = 0.0
    view_ms: float = 0.0  # GET /view: before the first byte
    route_ms: float = 0.0  # cheap reads of the queue (GET /prompt, GET /queue)
    gc_pauses: bool = False  # block the loop after a prompt when ≥ gc_interval_s since the last pause
    gc_interval_s: float = 10.0
    gc_pause_ms: tuple[float, float] = (300.0, 650.0)
    gc_idle_pause_ms: tuple[float, float] = (10.0, 130.0)  # the first prompt after ≥ interval of idleness
    seed: int = 0
    name: str = "none"

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._loop_busy: asyncio.Lock | None = None
        self._last_gc = time.monotonic()
        self._last_prompt = time.monotonic()

    @classmethod
    def none(cls) -> Costs:
        return cls()

    @classmethod
    def realistic(cls, *, gc_pauses: bool = False, seed: int = 0) -> Costs:
        return cls(
            post_ms=3.2,
            post_fast_ms=1.0,
            post_fast_share=0.3,
            post_jitter_ms=0.15,
            validate_ms=1.0,
            start_ms=3.4,
            prompt_gap_ms=3.0,
            class_ms=dict(REALISTIC_NODE_MS),
            history_ms=1.5,
            history_lag_share=0.11,
            history_lag_ms=2.0,
            view_ms=3.6,
            route_ms=0.3,
            gc_pauses=gc_pauses,
            seed=seed,
            name="realistic",
        )

    @classmethod
    def named(cls, name: str, *, gc_pauses: bool = False, seed: int = 0) -> Costs:
        if name == "realistic":
            return cls.realistic(gc_pauses=gc_pauses, seed=seed)
        if name == "none":
            return cls(gc_pauses=gc_pauses, seed=seed)
        raise ValueError(f"unknown cost model {name!r}: use realistic or none")

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    # ---------------------------------------------------------------------------- draws
    def _jitter(self) -> float:
        return self._rng.uniform(-self.post_jitter_ms, self.post_jitter_ms) if self.post_jitter_ms else 0.0

    def post_answer_ms(self) -> float:
        """Arrival → answer of one POST /prompt."""
        if not self.post_ms:
            return 0.0
        fast = self._rng.random() < self.post_fast_share
        return max(0.0, (self.post_fast_ms if fast else self.post_ms) + self._jitter())

    def node_cost_ms(self, class_type: str) -> float:
        return self.class_ms.get(class_type, self.node_ms)

    def history_lags(self) -> bool:
        return bool(self.history_lag_share) and self._rng.random() < self.history_lag_share

    # ---------------------------------------------------------------------------- waits
    @staticmethod
    async def wait_ms(ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    async def wait_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (loop time), if it is still ahead."""
        delay = deadline - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def validate(self) -> None:
        """The share of POST /prompt that occupies the real server's loop: bursts queue behind each other."""
        if not self.validate_ms:
            return
        if self._loop_busy is None:
            self._loop_busy = asyncio.Lock()
        async with self._loop_busy:
            await asyncio.sleep(self.validate_ms / 1000)

    def gc_after_prompt(self) -> float:
        """ComfyUI's prompt_worker: ``gc.collect()`` (GIL held) when ≥ interval since the last one.

        Blocks the calling loop like the real pause does; returns the pause in ms (0: none).
        """
        now = time.monotonic()
        idle = now - self._last_prompt >= self.gc_interval_s
        self._last_prompt = now
        if not self.gc_pauses or now - self._last_gc < self.gc_interval_s:
            return 0.0
        low, high = self.gc_idle_pause_ms if idle else self.gc_pause_ms
        pause = self._rng.uniform(low, high)
        time.sleep(pause / 1000)  # the whole server stops, on purpose
        self._last_gc = time.monotonic()
        return pause
