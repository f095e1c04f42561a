"""Wire-format helpers: results, params and form fields (SSE: test_sse.py; forms: tests/api/test_viewcomfy_form.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from backends.viewcomfy.protocol import (
    FileOutput,
    PromptResult,
    parse_bool_field,
    parse_params_field,
    parse_workflow_api_field,
    result_to_json,
    split_viewcomfy_key,
    viewcomfy_key,
)
from core.errors import InvalidRequest
from security.safe_paths import sanitize_filename

RESULT: dict[str, Any] = {
    "prompt_id": "abc",
    "status": "success",
    "completed": True,
    "execution_time_seconds": 1.5,
    "prompt": {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}},
    "outputs": [{"filename": "a.png", "content_type": "image/png", "data": "aGk=", "size": 2}],
}

# --- results ---------------------------------------------------------------------------------------


def test_prompt_result_is_strict_like_the_published_client() -> None:
    assert PromptResult(**RESULT).outputs[0].filename == "a.png"
    with pytest.raises(ValidationError):
        PromptResult(**RESULT, extra_key=1)
    missing = dict(RESULT)
    del missing["completed"]
    with pytest.raises(ValidationError):
        PromptResult(**missing)


def test_result_to_json_has_exactly_the_six_keys() -> None:
    body = result_to_json(RESULT)
    assert list(body) == ["prompt_id", "status", "completed", "execution_time_seconds", "prompt", "outputs"]
    assert set(body["outputs"][0]) == {"filename", "content_type", "data", "size"}
    assert json.loads(json.dumps(body)) == body
    with pytest.raises(ValidationError):
        result_to_json({**RESULT, "error": "x"})


def test_file_output_from_bytes_and_lenient_outputs() -> None:
    out = FileOutput.from_bytes("x.bin", b"\x00\x01hello", "application/octet-stream")
    assert out.data == "AAFoZWxsbw==" and out.size == 7
    # S3-style outputs (filepath, no data) are accepted, as by the published client.
    s3 = PromptResult(
        **{**RESULT, "outputs": [{"filename": "v.mp4", "content_type": "video/mp4", "filepath": "s3://b/v"}]}
    )
    assert s3.outputs[0].data == "" and s3.outputs[0].model_extra == {"filepath": "s3://b/v"}


# --- params -----------------------------------------------------------------------------------------


def test_keys() -> None:
    assert viewcomfy_key("6", "text") == "6-inputs-text"
    assert viewcomfy_key(52, "image") == "52-inputs-image"
    assert split_viewcomfy_key("6-inputs-text") == ("6", "text")
    assert split_viewcomfy_key("12:3-inputs-noise_seed") == ("12:3", "noise_seed")
    assert split_viewcomfy_key("6-inputs-a-inputs-b") == ("6", "a-inputs-b")
    for key in ("_3-node-class_type-info", "_6-inputs-text", "text", "-inputs-x", "6-inputs-", ""):
        assert split_viewcomfy_key(key) is None


def test_parse_params_field() -> None:
    assert parse_params_field('{"6-inputs-text": "cat", "3-inputs-seed": 5}') == {
        "6-inputs-text": "cat",
        "3-inputs-seed": 5,
    }
    assert parse_params_field(None) == {} and parse_params_field("") == {}
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_params_field("{nope")
    with pytest.raises(InvalidRequest, match="got an array"):
        parse_params_field("[1, 2]")
    with pytest.raises(InvalidRequest, match="got a string"):
        parse_params_field('"x"')


def test_parse_workflow_api_and_bool_fields() -> None:
    assert parse_workflow_api_field("") is None
    assert parse_workflow_api_field(None) is None
    assert parse_workflow_api_field("null") is None
    assert parse_workflow_api_field('{"1": {}}') == {"1": {}}
    with pytest.raises(InvalidRequest, match="workflow_api must be a JSON object"):
        parse_workflow_api_field("[]")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_workflow_api_field("{")
    assert parse_bool_field("true") and parse_bool_field("True") and parse_bool_field(True)
    assert not parse_bool_field("false") and not parse_bool_field(None) and not parse_bool_field("")
    with pytest.raises(InvalidRequest):
        parse_bool_field("maybe")


def test_upload_names_are_sanitized_by_safe_paths() -> None:
    """One sanitiser for every outside name: viewcomfy uses safe_paths.sanitize_filename."""
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("/abs/path/x.png") == "x.png"
    assert sanitize_filename("C:\\Users\\me\\x.png") == "x.png"
    assert sanitize_filename("a\x00b.png") == "a_b.png"
    assert sanitize_filename("..") == "file" and sanitize_filename("", "d") == "d" and sanitize_filename(None) == "file"
    assert sanitize_filename(".hidden") == "hidden"
    long = sanitize_filename("x" * 300 + ".png")
    assert long.endswith(".png") and len(long.encode()) <= 200
