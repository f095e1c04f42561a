"""Wire-format helpers: results, SSE both ways, params, and parsing incoming infer requests."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backends.viewcomfy.protocol import (
    SSE_KEEPALIVE,
    FileOutput,
    PromptResult,
    SSEEvent,
    SSEParser,
    parse_bool_field,
    parse_infer_form,
    parse_params_field,
    parse_workflow_api_field,
    result_to_json,
    split_viewcomfy_key,
    sse_event,
    viewcomfy_key,
)
from core.errors import ComfyGateError, InvalidRequest, PayloadTooLarge
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


# --- SSE encoding -----------------------------------------------------------------------------------


def test_sse_event_is_one_data_line() -> None:
    raw = sse_event("log_message", "line one\nline two\r\nthree\rfour")
    assert raw == b"event: log_message\ndata: line one\\nline two\\nthree\\rfour\n\n"
    raw = sse_event("prompt_result", {"text": "a\nb", "n": 1, "u": "café"})
    lines = raw.decode().split("\n")
    assert lines[0] == "event: prompt_result" and lines[1].startswith("data: ") and lines[2:] == ["", ""]
    assert json.loads(lines[1][6:]) == {"text": "a\nb", "n": 1, "u": "café"}
    assert SSE_KEEPALIVE == b": keepalive\n\n"
    with pytest.raises(ValueError):
        sse_event("bad\nname", "x")


def test_sse_roundtrip_through_parser() -> None:
    parser = SSEParser()
    stream = SSE_KEEPALIVE + sse_event("log_message", "hi\nthere") + sse_event("prompt_result", RESULT)
    events = parser.feed(stream)
    assert events[0] == SSEEvent("log_message", "hi\\nthere")
    assert events[1].event == "prompt_result" and PromptResult(**events[1].json()).prompt_id == "abc"


# --- SSE decoding -----------------------------------------------------------------------------------


def test_parser_handles_crlf_cr_and_lf() -> None:
    parser = SSEParser()
    events = parser.feed("event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n")
    assert events == [SSEEvent("a", "1"), SSEEvent("b", "2"), SSEEvent("c", "3")]


def test_parser_byte_by_byte_with_split_crlf_and_utf8() -> None:
    raw = "event: log_message\r\ndata: café ✓\r\n\r\n".encode()
    parser = SSEParser()
    events: list[SSEEvent] = []
    for i in range(len(raw)):
        events += parser.feed(raw[i : i + 1])
    assert events == [SSEEvent("log_message", "café ✓")]


def test_parser_cr_at_chunk_end_is_not_a_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n") == []  # the CRLF ended the data line, no blank line yet
    assert parser.feed(b"\r\n") == [SSEEvent("message", "x")]


def test_parser_ignores_comments_and_unknown_fields_and_overwrites_data() -> None:
    parser = SSEParser()
    events = parser.feed(
        ": keepalive\n\n:another\nid: 7\nretry: 100\nfoo: bar\nevent: log_message\ndata: first\ndata: second\n\n"
    )
    assert events == [SSEEvent("log_message", "second")]  # overwritten, like ViewComfy's client


def test_parser_drops_empty_and_unterminated_events_and_resets_type() -> None:
    parser = SSEParser()
    assert parser.feed("event: log_message\n\n") == []  # no data: nothing dispatched
    assert parser.feed("data: plain\n\n") == [SSEEvent("message", "plain")]  # type was reset
    assert parser.feed("event: prompt_result\ndata: {}") == []
    parser.close()  # EOF without the blank line: dropped
    assert parser.feed("\n\n") == []


def test_parser_strips_whitespace_and_bom() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb\xbfevent:  error \ndata:   boom  \n\n") == [SSEEvent("error", "boom")]


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


# --- parse_infer_form ---------------------------------------------------------------------------------


async def _echo(request: Request) -> JSONResponse:
    try:
        parsed = await parse_infer_form(request, max_file_bytes=1000)
    except ComfyGateError as exc:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)
    return JSONResponse(
        {
            "logs": parsed.logs,
            "params": parsed.params,
            "workflow_api": parsed.workflow_api,
            "content_type": parsed.content_type,
            "files": {k: [f.key, f.filename, f.content.decode(), f.content_type] for k, f in parsed.files.items()},
        }
    )


@pytest.fixture
async def asgi() -> Any:
    app = Starlette(routes=[Route("/", _echo, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def test_parse_urlencoded(asgi: httpx.AsyncClient) -> None:
    resp = await asgi.post("/", data={"params": '{"6-inputs-text": "a"}', "workflow_api": "", "logs": "false"})
    assert resp.json() == {
        "logs": False,
        "params": {"6-inputs-text": "a"},
        "workflow_api": None,
        "content_type": "urlencoded",
        "files": {},
    }


async def test_parse_what_the_published_client_sends(asgi: httpx.AsyncClient) -> None:
    """The published client passes Python values to httpx: logs=True/False and workflow_api=None."""
    resp = await asgi.post("/", data={"logs": True, "params": json.dumps({"3-inputs-seed": 1}), "workflow_api": None})
    assert resp.json()["logs"] is True and resp.json()["workflow_api"] is None
    assert resp.json()["params"] == {"3-inputs-seed": 1}


async def test_parse_multipart_with_files(asgi: httpx.AsyncClient) -> None:
    resp = await asgi.post(
        "/",
        data={"params": "{}", "workflow_api": '{"1": {"inputs": {}}}', "logs": "true", "other": "ignored"},
        files=[("52-inputs-image", ("../../x.png", b"png!", "image/png"))],
    )
    body = resp.json()
    assert body["logs"] is True and body["workflow_api"] == {"1": {"inputs": {}}}
    assert body["content_type"] == "multipart"
    assert body["files"] == {"52-inputs-image": ["52-inputs-image", "x.png", "png!", "image/png"]}


async def test_parse_json_body(asgi: httpx.AsyncClient) -> None:
    resp = await asgi.post("/", json={"params": {"3-inputs-seed": 4}, "workflow_api": {"1": {}}, "logs": True})
    assert resp.json()["params"] == {"3-inputs-seed": 4} and resp.json()["logs"] is True
    resp = await asgi.post("/", json={"params": '{"3-inputs-seed": 4}', "workflow_api": ""})
    assert resp.json()["params"] == {"3-inputs-seed": 4} and resp.json()["workflow_api"] is None


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        (
            {"data": {"params": "[1]", "workflow_api": "", "logs": "false"}},
            400,
            "params must be a JSON object",
        ),
        ({"data": {"params": "{}", "workflow_api": "[]", "logs": "false"}}, 400, "workflow_api must be"),
        ({"data": {"params": "{}", "workflow_api": "{x", "logs": "false"}}, 400, "not valid JSON"),
        ({"data": {"params": "{}", "logs": "perhaps"}}, 400, "logs must be"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 400, "multipart/form-data"),
        ({"content": b"[1]", "headers": {"content-type": "application/json"}}, 400, "JSON body must be"),
        ({"files": [("params", ("p.json", b"{}"))]}, 400, "must be a text field"),
        ({"files": [("1-inputs-image", ("a.png", b"x" * 2000))]}, 413, "larger than 1000"),
        (
            {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
            400,
            "malformed",
        ),
    ],
)
async def test_parse_errors_are_friendly(
    asgi: httpx.AsyncClient, kwargs: dict[str, Any], status: int, needle: str
) -> None:
    resp = await asgi.post("/", **kwargs)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"]


async def test_payload_too_large_is_in_the_tree() -> None:
    assert issubclass(PayloadTooLarge, ComfyGateError)
