"""The current ViewComfy API's shapes: exact keys where the published client builds objects from them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backends.viewcomfy.current_protocol import (
    RECORD_KEYS,
    Event,
    LinkOutput,
    LinkResult,
    Scheduled,
    from_record,
    message,
    result_json,
    snake,
    to_record,
)

RESULT = LinkResult(
    prompt_id="6f1c1a9e-3c0e-4d1e-9d7c-1b7a2b3c4d5e",
    status="success",
    completed=True,
    execution_time_seconds=1.5,
    prompt={"3": {"class_type": "KSampler", "inputs": {"seed": 1}}},
    outputs=[LinkOutput(filename="a.png", content_type="image/png", size=3, filepath="http://h/f/a.png")],
)


def test_result_json_has_the_clients_keys_and_no_error_data_on_success() -> None:
    body = result_json(RESULT)
    assert list(body) == ["prompt_id", "status", "completed", "execution_time_seconds", "prompt", "outputs"]
    assert body["outputs"] == [
        {"filename": "a.png", "content_type": "image/png", "size": 3, "filepath": "http://h/f/a.png"}
    ]
    failed = result_json(RESULT.model_copy(update={"status": "error", "error_data": {"message": "boom"}}))
    assert failed["error_data"] == {"message": "boom"}


def test_result_refuses_an_extra_key_like_the_client() -> None:
    with pytest.raises(ValidationError):
        LinkResult.model_validate({**result_json(RESULT), "extra": 1})
    with pytest.raises(ValidationError):
        Scheduled.model_validate({"prompt_id": "p", "message": "m", "workflow": None, "more": 1})


def test_record_round_trip_is_exactly_the_documented_camel_case_keys() -> None:
    record = to_record(RESULT, created_at="2026-01-01T00:00:00Z", workflow="wf", client_id=None, user=None)
    assert tuple(record) == RECORD_KEYS
    assert record["outputs"][0] == {
        "filename": "a.png",
        "contentType": "image/png",
        "size": 3,
        "filepath": "http://h/f/a.png",
    }
    back = from_record(record)
    assert back == RESULT
    with pytest.raises(ValidationError):
        from_record({**record, "somethingElse": 1})


def test_events_and_messages() -> None:
    assert [e.value for e in Event] == [
        "infer_log_message",
        "infer_error_message",
        "infer_executed_message",
        "infer_result_message",
        "infer_canceled_message",
    ]
    assert message("p", "line") == {"prompt_id": "p", "data": "line"}
    assert snake("executionTimeSeconds") == "execution_time_seconds" and snake("promptId") == "prompt_id"
