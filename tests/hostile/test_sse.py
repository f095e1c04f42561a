"""Hostile SSE requests: task ids, Last-Event-ID headers and query values; a real task's stream still
ends with its final event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_TEXT, assert_clear, canary, in_url

LAST_IDS = st.one_of(HOSTILE_TEXT, st.integers().map(str), st.sampled_from(["-1", "1e400", "NaN", "9" * 5000]))


def header_safe(text: str) -> str:
    """What reaches the app in a header: printable ASCII (HTTP parsers refuse the rest before any app)."""
    return "".join(c for c in text if " " <= c <= "~").strip()[:200] or "0"


@HOSTILE
@given(last=LAST_IDS, query=HOSTILE_TEXT, real=st.booleans())
def test_streams(target: Gate, last: str, query: str, real: bool) -> None:
    task_id = canary(target) if real else "no-such-task"
    url = f"/api/task/{task_id}/events?last_event_id={in_url(query)}"
    with target.client.stream("GET", url, headers={"Last-Event-ID": header_safe(last)}, timeout=30) as response:
        if response.status_code >= 400:
            response.read()
            assert_clear(response)
            return
        assert response.status_code in (200, 204)
        text = "".join(response.iter_text())  # the stream ends: with the task's final event, or at once
    if real and response.status_code == 200:
        assert "task_update" in text or "event:" in text
    canary(target, submit=False)


@HOSTILE
@given(task_id=HOSTILE_TEXT)
def test_unknown_task_ids(target: Gate, task_id: str) -> None:
    with target.client.stream("GET", f"/api/task/{in_url(task_id)}/events", timeout=30) as response:
        response.read()
        assert_clear(response)
    canary(target, submit=False)
