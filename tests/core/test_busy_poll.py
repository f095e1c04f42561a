"""The loop polls (never sleeps) for the window after a request to a backend, yielding to everything else."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from comfyui_client import ComfyUIClient
from core import busy_poll
from core.busy_poll import BusyPoll, ThreadsFirst
from emulator.server import EmulatorThread

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
}


async def _turns_while(seconds: float) -> int:
    """Loop turns that pass while this coroutine sleeps ``seconds`` (a sleeping loop makes ~1)."""
    turns = 0
    stop = asyncio.get_running_loop().time() + seconds

    def tick() -> None:
        nonlocal turns
        turns += 1
        if asyncio.get_running_loop().time() < stop:
            asyncio.get_running_loop().call_soon(tick)

    asyncio.get_running_loop().call_soon(tick)
    await asyncio.sleep(seconds)
    return turns


async def test_polls_for_the_window_then_stops_one_task_for_many_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the window here: on a loaded machine (CI runs three test workers on two cores) the poll rightly ends
    # early when it keeps losing the CPU (CONTENDED_TURNS, tested below with every CPU busy). Windows of
    # 0.3 s: a sleep that overshoots by tens of milliseconds under load still lands where it should.
    monkeypatch.setattr(busy_poll, "CONTENDED_TURNS", 10**9)
    poll = BusyPoll(0.3)
    poll.expect_answer()
    task = poll._task
    for _ in range(5):
        poll.expect_answer()  # the window moves on, no second poller
        assert poll._task is task
    assert poll.polling
    await asyncio.sleep(0.1)
    poll.expect_answer()  # extended: still polling after the first window would have ended
    await asyncio.sleep(0.22)
    assert poll.polling
    await asyncio.sleep(0.3)
    assert not poll.polling and task is not None and task.done()


async def test_zero_turns_it_off() -> None:
    poll = BusyPoll(0)
    poll.expect_answer()
    assert not poll.polling


@pytest.fixture
def every_cpu_busy() -> Iterator[None]:
    """Another process spinning on every CPU, as ComfyUI and clients are on a loaded 2-core machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


async def _thread_round_trip() -> float:
    """The median time of a tiny job in a worker thread, from the loop's side."""
    waits = []
    for _ in range(21):
        began = time.perf_counter()
        await asyncio.to_thread(sum, range(1000))
        waits.append(time.perf_counter() - began)
    return sorted(waits)[10]


async def test_other_coroutines_and_threads_run_while_it_polls() -> None:
    """The poll is one loop turn at a time: coroutines and callbacks progress, worker threads run (through the
    executor the app installs: on a loaded machine, e.g. beside another test worker, a plain one waits a tick)."""
    poll = BusyPoll(0.5)
    executor = ThreadsFirst(poll)
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        poll.expect_answer()
        turns = await _turns_while(0.05)
        assert turns > 10  # other callbacks ran many times, not once per wake-up
        assert await _thread_round_trip() < 0.002
        poll._until = 0  # end it (unless a long turn, a thread holding the GIL, ended it already)
        await asyncio.sleep(0.01)
        assert not poll.polling
    finally:
        executor.shutdown(wait=False)


async def test_when_every_cpu_is_wanted_the_loop_and_its_threads_still_get_theirs(every_cpu_busy: None) -> None:
    """Polling on a machine with no CPU to spare neither stalls the loop nor delays ComfyGate's threads: a job
    handed to the loop's executor (ThreadsFirst, as the app installs it) ends the poll, and a tiny one comes
    back at once. With a plain executor it came back after the scheduler's tick (4 ms here): woken on the
    poll's CPU, it waited behind it, yield or not."""
    poll = BusyPoll(0.5)
    executor = ThreadsFirst(poll)
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        poll.expect_answer()
        assert await _turns_while(0.05) > 10
        waits = []
        for _ in range(21):
            poll.expect_answer()  # a request to a backend just left, as in a burst
            began = time.perf_counter()
            await asyncio.to_thread(sum, range(1000))
            waits.append(time.perf_counter() - began)
        typical = sorted(waits)[10]
        assert typical < 0.002, f"a worker thread's job took {typical * 1000:.1f} ms (median) while the loop polled"
    finally:
        executor.shutdown(wait=False)


@pytest.mark.parametrize("window", [0.0, 0.03])
async def test_a_post_to_comfyui_starts_it(window: float, emulator: EmulatorThread) -> None:
    """ComfyUIClient's own keep-alive POST (the one on every task's path) polls for its answer."""
    poll = BusyPoll(window)
    async with httpx.AsyncClient() as http:
        client = ComfyUIClient(emulator.url, http, busy_poll=poll)
        try:
            answer = await client.post_prompt(WORKFLOW, client_id="busy-poll-test")
            assert answer["prompt_id"]
            assert poll.polling is (window > 0)
        finally:
            client.close()
