"""Hostile names wherever a name reaches the disk: output files, saved workflows (get, delete)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_TEXT, assert_clear, canary, in_url

NAMES = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from(["..%2f..%2fetc%2fpasswd", "%2e%2e", "a%00.png", "x.svg", "/etc/passwd", "C:%5Cwin.ini"]),
)


@HOSTILE
@given(name=NAMES, kind=st.sampled_from(["output", "temp", "input", "../x", ""]))
def test_output_files(target: Gate, name: str, kind: str) -> None:
    response = target.client.get(f"/api/image/{in_url(name)}?type={in_url(kind)}")
    assert_clear(response)
    if response.status_code == 200:
        assert response.headers["x-content-type-options"] == "nosniff"
    canary(target, submit=False)


@HOSTILE
@given(name=NAMES, method=st.sampled_from(["GET", "DELETE"]))
def test_saved_workflows(target: Gate, name: str, method: str) -> None:
    before = sorted(p.name for p in target.settings.workflows_dir.iterdir())
    response = target.client.request(method, f"/api/workflow/{in_url(name)}")
    assert_clear(response)
    if method == "DELETE":
        assert response.status_code != 200, "no hostile name may delete an example workflow"
        assert sorted(p.name for p in target.settings.workflows_dir.iterdir()) == before
    canary(target)
