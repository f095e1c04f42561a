"""``apply_event``: ComfyUI's events applied to a task, with no server at all."""

from __future__ import annotations

from backends.comfyui_events import ComfyUIEvent
from core.task import Task, TaskStatus
from tasks.progress import End, apply_event

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {}, "_meta": {"title": "Blank"}},
    "2": {"class_type": "KSampler", "inputs": {}},
    "3": {"class_type": "SaveImage", "inputs": {}},
    "4": {"class_type": "PreviewImage", "inputs": {}},
}


def task(status: TaskStatus = TaskStatus.QUEUED) -> Task:
    return Task(task_id="t" * 32, prompt_id="p1", workflow=WORKFLOW, status=status)


def ev(kind: str, **data: object) -> ComfyUIEvent:
    return ComfyUIEvent(kind, {"prompt_id": "p1", **data})


def test_start_from_queued_runs_and_resets_progress() -> None:
    t = task()
    out = apply_event(t, ev("execution_start"))
    assert t.status == TaskStatus.RUNNING and t.started_at is not None
    assert t.progress == {"percent": 0.0, "nodes_done": 0, "nodes_total": 4}
    assert out.update and out.status and out.runs is True and out.messages == [] and out.end is None


def test_start_before_the_post_answer_shows_queued_first() -> None:
    t = task(TaskStatus.PENDING)
    out = apply_event(t, ev("execution_start"))
    assert [m["status"] for m in out.messages] == ["queued"]  # listeners see queued, then running
    assert t.status == TaskStatus.RUNNING and t.queued_at is not None


def test_cached_nodes_count_as_done() -> None:
    t = task()
    apply_event(t, ev("execution_start"))
    out = apply_event(t, ev("execution_cached", nodes=["1", "3"]))
    assert out.update and t.cached_nodes == ["1", "3"] and t.progress["percent"] == 50.0


def test_executing_and_progress_name_the_node_and_step() -> None:
    t = task()
    apply_event(t, ev("execution_start"))
    apply_event(t, ev("executing", node="1"))
    assert t.progress["node_title"] == "Blank" and t.progress["node_class"] == "EmptyImage"
    out = apply_event(t, ev("progress", node="2", value=5, max=10))
    assert out.update and t.progress["node"] == "2" and t.progress["node_title"] == "KSampler"
    assert t.progress["percent"] == 12.5  # 0 of 4 nodes done, half of the second
    assert not apply_event(t, ev("executing", node=None)).update  # end of prompt: success/error decides


def test_progress_state_never_lowers_nodes_done() -> None:
    t = task()
    apply_event(t, ev("execution_start"))
    apply_event(t, ev("progress_state", nodes={"1": {"state": "finished"}, "2": {"state": "finished"}}))
    assert t.progress["nodes_done"] == 2
    apply_event(t, ev("progress_state", nodes={"1": {"state": "finished"}}))
    assert t.progress["nodes_done"] == 2


def test_executed_records_the_output_and_sends_it() -> None:
    t = task(TaskStatus.RUNNING)
    output = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    out = apply_event(t, ev("executed", node="3", output=output))
    assert t.node_outputs == {"3": output}
    assert not out.update and out.messages == [
        {"type": "node_output", "task_id": t.task_id, "node": "3", "output": output}
    ]


def test_endings() -> None:
    assert apply_event(task(TaskStatus.RUNNING), ev("execution_success")).end is End.SUCCESS
    out = apply_event(
        task(TaskStatus.RUNNING),
        ev("execution_error", node_id="2", node_type="KSampler", exception_type="ValueError", exception_message="bad"),
    )
    assert out.end is End.ERROR and out.runs is False
    assert out.error is not None and out.error["message"] == "node 2 (KSampler) raised ValueError: bad"
    out = apply_event(task(TaskStatus.RUNNING), ev("execution_interrupted"))
    assert out.end is End.INTERRUPTED and out.error == {"type": "interrupted", "message": "interrupted on request"}


def test_an_interrupt_caused_by_our_timeout_is_no_second_end() -> None:
    t = task(TaskStatus.RUNNING)
    t.extra["interrupt_reason"] = "timeout"
    out = apply_event(t, ev("execution_interrupted"))
    assert out.end is None and out.runs is False and "interrupt_reason" not in t.extra


def test_preview_and_text_go_to_listeners_only() -> None:
    t = task(TaskStatus.RUNNING)
    t.progress["node"] = "4"
    out = apply_event(t, ComfyUIEvent("preview", {}, image=b"\x89PNG", image_type="image/png"))
    assert out.messages[0]["image"] == "data:image/png;base64,iVBORw==" and out.messages[0]["node"] == "4"
    assert apply_event(t, ComfyUIEvent("preview", {})).messages == []
    text = apply_event(t, ComfyUIEvent("text", {"node": "4", "text": "hi"}))
    assert text.messages == [{"type": "text", "task_id": t.task_id, "node": "4", "text": "hi"}]


def test_unknown_events_change_nothing() -> None:
    t = task(TaskStatus.RUNNING)
    before = (t.status, dict(t.progress))
    out = apply_event(t, ev("some_future_event", x=1))
    assert (t.status, t.progress) == before and out == type(out)()
