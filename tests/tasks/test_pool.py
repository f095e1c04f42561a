"""Several ComfyUI emulators behind one ComfyGate: routing, pinning, holding, and faults."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import FINAL, Emulators, Gate, history_of, submit_ok
from tests.protocol import load_workflow, sd_workflow


def invert(color: int = 0) -> dict[str, Any]:
    wf = load_workflow("invert_save.json")
    wf["1"]["inputs"]["color"] = color
    return wf


def wait_health(gate: Gate, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = gate.client.get("/api/health").json()
        if predicate(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"health never matched: {health}")
        time.sleep(0.05)


def test_tasks_spread_over_three_backends_least_loaded_first(emulators: Emulators, gate_factory: Any) -> None:
    emus = emulators(3, step_delay=0.03)
    gate = gate_factory([e.url for e in emus])
    bodies = [submit_ok(gate, sd_workflow(steps=6, seed=i)) for i in range(9)]
    health = gate.client.get("/api/health").json()
    assert health["status"] == "ok" and health["totals"]["backends"] == 3 and health["totals"]["healthy"] == 3
    tasks = [gate.wait(b["task_id"], timeout=20) for b in bodies]
    assert all(t["status"] == "completed" for t in tasks), tasks
    per_backend = Counter(t["backend"] for t in tasks)
    assert set(per_backend) == {"comfyui-1", "comfyui-2", "comfyui-3"}
    assert max(per_backend.values()) - min(per_backend.values()) <= 1, per_backend
    for emu in emus:  # each ran what ComfyGate says it ran
        name = f"comfyui-{emus.index(emu) + 1}"
        assert {t["prompt_id"] for t in tasks if t["backend"] == name} == set(history_of(emu))
    info = gate.client.get("/api/system/info").json()
    assert info["totals"]["backends"] == 3 and info["totals"]["reachable"] == 3
    queue = gate.client.get("/api/queue").json()
    assert set(queue["backends"]) == {"comfyui-1", "comfyui-2", "comfyui-3"} and queue["total_held"] == 0


def test_capability_routing_and_pinning(emulators: Emulators, gate_factory: Any) -> None:
    lacking = emulators(2, exclude_classes={"ImageInvert"})
    able = emulators(1)
    gate = gate_factory([e.url for e in (*lacking, *able)])
    described = {b["name"]: b for b in gate.client.get("/api/health").json()["backends"]}
    assert described["comfyui-1"]["node_classes"] == described["comfyui-3"]["node_classes"] - 1
    ids = [submit_ok(gate, invert(i))["task_id"] for i in range(4)]
    tasks = [gate.wait(i) for i in ids]
    assert all(t["status"] == "completed" and t["backend"] == "comfyui-3" for t in tasks), tasks
    # pinned by name and by URL
    by_name = gate.wait(submit_ok(gate, load_workflow("trivial_save.json"), backend="comfyui-2")["task_id"])
    assert by_name["status"] == "completed" and by_name["backend"] == "comfyui-2"
    by_url = gate.wait(submit_ok(gate, load_workflow("trivial_save.json"), backend=lacking[0].url)["task_id"])
    assert by_url["backend"] == "comfyui-1"
    assert gate.submit(load_workflow("trivial_save.json"), backend="nope").status_code == 404
    # pinned to a backend without the class: refused up front, not sent
    refused = gate.submit(invert(), backend="comfyui-1")
    assert refused.status_code == 422 and "ImageInvert" in refused.text


def test_held_while_no_backend_is_up_then_run_or_rejected(emulators: Emulators, gate_factory: Any) -> None:
    [emu] = emulators(1)
    gate = gate_factory([emu.url], backend_down_grace=30.0)
    assert gate.wait(submit_ok(gate, invert())["task_id"])["status"] == "completed"  # object_info known
    emu.stop()
    wait_health(gate, lambda h: h["status"] == "down")
    held = submit_ok(gate, invert(7))
    assert held["status"] == "pending"
    rejected = submit_ok(gate, load_workflow("invalid_bad_value.json"))
    assert rejected["status"] == "pending"
    queue = gate.client.get("/api/queue").json()
    assert [t["task_id"] for t in queue["comfygate"]["pending"]] == [held["task_id"], rejected["task_id"]]
    assert gate.client.get("/api/health").json()["totals"]["pending"] == 2
    emu.start()
    assert gate.wait(held["task_id"], timeout=10)["status"] == "completed"
    failed = gate.wait(rejected["task_id"], timeout=10)
    assert failed["status"] == "failed" and failed["error"]["type"] == "prompt_rejected"
    assert failed["error"]["node_errors"] and failed["error"]["comfyui_error"]["type"]


def test_pending_queue_limit_gives_503_with_retry_after(emulators: Emulators, gate_factory: Any) -> None:
    [emu] = emulators(1, step_delay=0.03)
    gate = gate_factory([emu.url], max_backend_queue=1, max_pending_tasks=2)
    first = submit_ok(gate, sd_workflow(steps=8, seed=1))
    second = submit_ok(gate, sd_workflow(steps=8, seed=2))
    third = submit_ok(gate, sd_workflow(steps=8, seed=3))
    assert first["status"] in {"queued", "running"}
    assert second["status"] == third["status"] == "pending"
    full = gate.submit(sd_workflow(steps=8, seed=4))
    assert full.status_code == 503 and int(full.headers["retry-after"]) > 0
    assert full.json()["error"] == "service_busy" and "queue is full" in full.json()["message"]
    # a held task can be cancelled; the others run one at a time
    assert gate.client.post(f"/api/interrupt/{third['task_id']}").status_code == 200
    assert gate.wait(third["task_id"])["status"] == "interrupted"
    done = [gate.wait(b["task_id"], timeout=15) for b in (first, second)]
    assert [t["status"] for t in done] == ["completed", "completed"]
    assert done[1]["queued_at"] >= done[0]["finished_at"] - 0.5  # held until the backend had room
    assert set(history_of(emu)) == {first["prompt_id"], second["prompt_id"]}


def test_unfinished_tasks_are_bounded_even_without_a_limit_per_backend(emulators: Emulators, gate_factory: Any) -> None:
    """With no limit per backend (the default) every task goes to ComfyUI's queue at once, and ComfyGate holds
    each until it ends: COMFYUI_MAX_UNFINISHED_TASKS bounds them (a 503 to retry, nothing posted); one ending
    makes room again."""
    [emu] = emulators(1, step_delay=0.03)
    gate = gate_factory([emu.url], max_unfinished_tasks=3)
    accepted = [submit_ok(gate, sd_workflow(steps=8, seed=seed)) for seed in (1, 2, 3)]
    assert all(t["status"] in {"queued", "running"} for t in accepted)  # handed to ComfyUI, none held
    full = gate.submit(sd_workflow(steps=8, seed=4))
    assert full.status_code == 503 and int(full.headers["retry-after"]) > 0
    body = full.json()
    assert body["error"] == "service_busy" and "COMFYUI_MAX_UNFINISHED_TASKS" in body["message"]
    assert body["unfinished"] == 3
    assert gate.wait(accepted[0]["task_id"], timeout=15)["status"] == "completed"
    later = submit_ok(gate, sd_workflow(steps=8, seed=5))
    assert gate.wait(later["task_id"], timeout=20)["status"] == "completed"
    assert set(history_of(emu)) == {t["prompt_id"] for t in [*accepted, later]}  # the refused one never posted


def test_backend_killed_mid_run_and_restarted(emulators: Emulators, gate_factory: Any) -> None:
    emu, other = emulators(2, step_delay=0.05)
    gate = gate_factory([emu.url, other.url])
    running = submit_ok(gate, sd_workflow(steps=40, seed=1), backend="comfyui-1")
    queued = submit_ok(gate, sd_workflow(steps=2, seed=2), backend="comfyui-1")
    gate.wait(running["task_id"], {"running"})
    emu.restart()  # history and queue wiped
    emu.set_delays(step_delay=0.0)
    failed = gate.wait(running["task_id"], timeout=10)
    assert failed["status"] == "failed" and failed["error"]["type"] in {"backend_restarted", "backend_unreachable"}
    assert "ComfyUI" in failed["error"]["message"]
    resubmitted = gate.wait(queued["task_id"], timeout=10)
    assert resubmitted["status"] == "completed" and resubmitted["attempts"] == 2, resubmitted
    assert set(history_of(emu)) == {resubmitted["prompt_id"]}
    assert gate.wait(submit_ok(gate, invert())["task_id"])["status"] == "completed"


def test_backend_down_for_good_moves_queued_tasks(emulators: Emulators, gate_factory: Any) -> None:
    doomed, survivor = emulators(2, step_delay=0.04)
    gate = gate_factory([doomed.url, survivor.url], backend_down_grace=1.0)
    bodies = [submit_ok(gate, sd_workflow(steps=10, seed=i)) for i in range(4)]
    on_doomed = [b for b in bodies if gate.task(b["task_id"])["backend"] == "comfyui-1"]
    assert len(on_doomed) == 2
    gate.wait(on_doomed[0]["task_id"], {"running"})
    doomed.stop()
    started = time.monotonic()
    lost = gate.wait(on_doomed[0]["task_id"], timeout=10)
    assert lost["status"] == "failed" and lost["error"]["type"] == "backend_unreachable"
    moved = gate.wait(on_doomed[1]["task_id"], timeout=15)
    assert moved["status"] == "completed" and moved["backend"] == "comfyui-2", moved
    assert moved["prompt_id"] != on_doomed[1]["prompt_id"] and "down" in moved["requeued"]
    assert moved["prompt_id"] in history_of(survivor)
    assert time.monotonic() - started < 10
    others = [gate.wait(b["task_id"], timeout=15) for b in bodies if b not in on_doomed]
    assert all(t["status"] == "completed" for t in others)
    assert gate.client.get("/api/health").json()["status"] == "degraded"


def test_two_hundred_submissions_none_lost_or_duplicated(emulators: Emulators, gate_factory: Any) -> None:
    emus = emulators(3)
    gate = gate_factory([e.url for e in emus])

    def one(i: int) -> str:
        response = gate.client.post("/api/workflow/submit", json={"workflow": invert(i)})
        assert response.status_code == 200, response.text
        return response.json()["task_id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(200)))
    assert len(set(ids)) == 200
    deadline = time.monotonic() + 60
    while True:  # one listing per round rather than 200 task reads
        listing = gate.client.get("/api/tasks", params={"limit": 1000}).json()
        tasks = [t for t in listing["tasks"] if t["status"] in FINAL]
        if len(tasks) == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert listing["total"] == 200 and {t["task_id"] for t in tasks} == set(ids)
    assert all(t["status"] == "completed" for t in tasks)
    ran: Counter[str] = Counter()
    for emu in emus:
        ran.update(history_of(emu).keys())
    assert set(ran) == {t["prompt_id"] for t in tasks}
    assert max(ran.values()) == 1  # every prompt ran exactly once, on one backend
    assert len({t["backend"] for t in tasks}) == 3
