"""Hostile webhook URLs at submit: refused before the task exists (422), never fetched."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_TEXT, assert_clear, canary, raw_json
from tests.hostile.test_url_inputs import HOSTS
from tests.protocol import sd_workflow

URLS = st.one_of(
    st.builds(lambda h, port: f"http://{h}:{port}/hook", HOSTS, st.integers(min_value=0, max_value=70000)),
    st.sampled_from(["javascript:alert(1)", "file:///etc/passwd", "http://[::1", "", "x" * 3000]),
    HOSTILE_TEXT,
)


@HOSTILE
@given(url=URLS)
def test_submit_webhooks(target: Gate, url: str) -> None:
    before = target.client.get("/api/tasks?limit=1").json()["total"]
    body = raw_json({"workflow": sd_workflow(steps=1), "webhook": url})
    response = target.client.post("/api/workflow/submit", content=body, headers={"content-type": "application/json"})
    assert_clear(response)
    if response.status_code != 200:
        assert target.client.get("/api/tasks?limit=1").json()["total"] == before
    canary(target)
