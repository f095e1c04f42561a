"""GET /api/task/{id}?include=workflow and the history search of GET /api/tasks (q, workflow_name)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Gate, make_settings, start_gate, stop_gate
from tests.protocol import load_workflow, sd_workflow


def test_a_task_gives_back_the_workflow_it_ran(gate: Gate) -> None:
    answer = gate.submit(sd_workflow(), params={"6.text": "a kite", "3.seed": -1})
    assert answer.status_code == 200, answer.text
    task = gate.wait(answer.json()["task_id"])
    plain = gate.client.get(f"/api/task/{task['task_id']}").json()
    assert "workflow" not in plain
    body = gate.client.get(f"/api/task/{task['task_id']}", params={"include": "workflow"}).json()
    workflow = body["workflow"]
    assert workflow["6"]["inputs"]["text"] == "a kite"  # the values applied, the seed resolved
    assert workflow["3"]["inputs"]["seed"] == task["params"]["3.seed"]
    assert {k: v["class_type"] for k, v in workflow.items()} == {k: v["class_type"] for k, v in sd_workflow().items()}


def test_include_names_what_it_can_give(gate: Gate) -> None:
    task_id = gate.submit(load_workflow("trivial.json")).json()["task_id"]
    answer = gate.client.get(f"/api/task/{task_id}", params={"include": "secrets"})
    assert answer.status_code == 400
    assert "workflow" in answer.json()["message"]


def test_the_workflow_comes_back_from_sqlite_after_a_restart(emulator: object, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, [emulator.url], database_path=tmp_path / "tasks.db")  # type: ignore[attr-defined]
    gate = start_gate(settings)
    try:
        task_id = gate.submit(sd_workflow(seed=7)).json()["task_id"]
        gate.wait(task_id)
    finally:
        stop_gate(gate)
    again = start_gate(settings)
    try:
        body = again.client.get(f"/api/task/{task_id}", params={"include": "workflow"}).json()
        assert body["workflow"]["3"]["inputs"]["seed"] == 7
    finally:
        stop_gate(again)


def test_history_search_and_paging(gate: Gate) -> None:
    ids = []
    for i in range(7):
        text = "a NEEDLE in hay" if i == 3 else f"plain {i}"
        ids.append(gate.submit(sd_workflow(steps=1), params={"6.text": text}).json()["task_id"])
    for task_id in ids:
        gate.wait(task_id)
    found = gate.client.get("/api/tasks", params={"q": "needle"}).json()
    assert found["total"] == 1 and found["tasks"][0]["task_id"] == ids[3]
    by_id = gate.client.get("/api/tasks", params={"q": ids[5][:8]}).json()
    assert [t["task_id"] for t in by_id["tasks"]] == [ids[5]]
    page = gate.client.get("/api/tasks", params={"q": "plain", "limit": 4, "offset": 4}).json()
    assert page["total"] == 6 and [t["task_id"] for t in page["tasks"]] == [ids[1], ids[0]]
    none = gate.client.get("/api/tasks", params={"q": "plain", "status": "failed"}).json()
    assert none["total"] == 0
    named = gate.client.get("/api/tasks", params={"workflow_name": "nope.json"}).json()
    assert named["total"] == 0
    assert gate.client.get("/api/tasks", params={"q": "x" * 201}).status_code == 422
