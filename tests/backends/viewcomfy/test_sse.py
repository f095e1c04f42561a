"""ViewComfy's SSE framing: one-line events out, the client's parser in (linear in the stream's size)."""

from __future__ import annotations

import json
import time

import pytest

from backends.viewcomfy.protocol import PromptResult
from backends.viewcomfy.sse import SSE_KEEPALIVE, SSEEvent, SSEParser, sse_event

RESULT = {
    "prompt_id": "abc",
    "status": "success",
    "completed": True,
    "execution_time_seconds": 1.5,
    "prompt": {},
    "outputs": [],
}

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


def test_parser_cr_then_crlf_across_chunks() -> None:
    parser = SSEParser()
    assert parser.feed("data: x\r") == []
    assert parser.feed("") == []  # an empty chunk decides nothing
    assert parser.feed("\r\n") == [SSEEvent("message", "x")]  # CR ended the line, CRLF is the blank line


@pytest.mark.parametrize("chunk_size", [65536, 4096])
def test_a_16_mb_line_parses_in_linear_time(chunk_size: int) -> None:
    """A big prompt_result line arrives in many chunks; each chunk must not rescan what came before."""
    payload = {"outputs": [{"data": "A" * (16 * 1024 * 1024)}]}
    raw = sse_event("log_message", "starting") + sse_event("prompt_result", payload)
    parser = SSEParser()
    events: list[SSEEvent] = []
    started = time.process_time()
    for i in range(0, len(raw), chunk_size):
        events += parser.feed(raw[i : i + chunk_size])
    elapsed = time.process_time() - started
    assert [e.event for e in events] == ["log_message", "prompt_result"]
    assert len(events[1].json()["outputs"][0]["data"]) == 16 * 1024 * 1024
    assert elapsed < 1.0, f"{elapsed:.2f} s of CPU for a 16 MB line in {chunk_size}-byte chunks"


def test_many_short_lines_in_one_chunk_parse_in_linear_time() -> None:
    raw = b"".join(sse_event("log_message", f"step {i}") for i in range(200_000))
    started = time.process_time()
    events = SSEParser().feed(raw)
    elapsed = time.process_time() - started
    assert len(events) == 200_000 and events[-1].data == "step 199999"
    assert elapsed < 2.0, f"{elapsed:.2f} s of CPU for 200000 events in one chunk"
