"""Hostile image inputs given as content: URLs (private, IPv6 forms, odd schemes), data URLs, base64."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_TEXT, assert_clear, canary, raw_json

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}
HOSTS = st.sampled_from(
    [
        "127.0.0.1",
        "[::1]",
        "[64:ff9b::7f00:1]",
        "[::ffff:0:7f00:1]",
        "[::7f00:1]",
        "169.254.169.254",
        "10.0.0.1",
        "localhost",
        "0",
        "2130706433",
        "[fe80::1%25lo]",
        "example.invalid",
        "user:pass@127.0.0.1",
    ]  # fmt: skip
)
VALUES = st.one_of(
    st.builds(lambda h, p: f"http://{h}/{p}", HOSTS, HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "replace").hex())),
    st.sampled_from(["file:///etc/passwd", "ftp://x/y.png", "gopher://x", "http://", "https://[::1", "//x/y.png"]),
    st.builds(lambda b: "data:image/png;base64," + b, st.text(alphabet="AZaz09+/=", max_size=80)),
    st.sampled_from(["data:image/png;base64,!!!", "data:,", "data:text/html,<script>", "iVBORw0KGgo" + "A" * 20]),
    HOSTILE_TEXT,
)


@HOSTILE
@given(value=VALUES)
def test_image_params(target: Gate, value: str) -> None:
    body = raw_json({"workflow": WORKFLOW, "params": {"1.image": value}})
    response = target.client.post("/api/workflow/submit", content=body, headers={"content-type": "application/json"})
    assert_clear(response)
    assert response.status_code != 200 or response.json()["params"]["1.image"] != value or "://" not in value
    canary(target)
