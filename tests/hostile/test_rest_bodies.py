"""Hostile JSON bodies and params on every REST route that takes them: submit, params, convert, update,
list filters. Generated (hypothesis): lone surrogates, NaN/Infinity, 1e400, 5000-digit integers, odd
keys and names, random nested JSON."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import (
    HOSTILE,
    HOSTILE_JSON,
    HOSTILE_SCALARS,
    HOSTILE_TEXT,
    PARAM_KEYS,
    assert_clear,
    canary,
    in_url,
    raw_json,
)
from tests.protocol import sd_workflow

JSON = {"content-type": "application/json"}


@HOSTILE
@given(params=st.dictionaries(PARAM_KEYS, HOSTILE_SCALARS, min_size=1, max_size=3), saved=st.booleans())
def test_submit_params(target: Gate, params: dict[str, Any], saved: bool) -> None:
    body: dict[str, Any] = {"params": params}
    body.update({"workflow_name": "sd_txt2img_api.json"} if saved else {"workflow": sd_workflow(steps=1)})
    before = target.client.get("/api/tasks?limit=1").json()["total"]
    response = target.client.post("/api/workflow/submit", content=raw_json(body), headers=JSON)
    assert_clear(response, repr(params)[:200])
    after = target.client.get("/api/tasks?limit=1").json()["total"]
    assert after == before + (1 if response.status_code == 200 else 0)  # refused means nothing was created
    canary(target)


@HOSTILE
@given(workflow=HOSTILE_JSON, route=st.sampled_from(["/api/workflow/params", "/api/workflow/convert", "submit"]))
def test_workflow_bodies(target: Gate, workflow: Any, route: str) -> None:
    if route == "submit":
        response = target.client.post("/api/workflow/submit", content=raw_json({"workflow": workflow}), headers=JSON)
    elif route == "/api/workflow/params":
        response = target.client.post(route, content=raw_json({"workflow": workflow}), headers=JSON)
    else:
        response = target.client.post(route, content=raw_json(workflow), headers=JSON)
    assert_clear(response)
    canary(target, submit=False)


@HOSTILE
@given(name=HOSTILE_TEXT, params=st.dictionaries(PARAM_KEYS, HOSTILE_SCALARS, max_size=2), replace=st.booleans())
def test_update(target: Gate, name: str, params: dict[str, Any], replace: bool) -> None:
    before = target.client.get("/api/workflow/sd_txt2img_api.json").json()
    body: dict[str, Any] = {"name": name if replace else "sd_txt2img_api", "params": params}
    if replace:
        body["workflow"] = sd_workflow()
    response = target.client.post("/api/workflow/update", content=raw_json(body), headers=JSON)
    assert_clear(response)
    if response.status_code == 200 and not replace:  # a valid update changed the library: put it back
        restore = {"name": "sd_txt2img_api", "workflow": before["workflow"]}
        assert target.client.post("/api/workflow/update", json=restore).status_code == 200
    canary(target)


@HOSTILE
@given(status=HOSTILE_TEXT, offset=st.one_of(st.integers(), HOSTILE_TEXT), limit=st.one_of(st.integers(), HOSTILE_TEXT))
def test_list_filters(target: Gate, status: str, offset: Any, limit: Any) -> None:
    query = f"status={in_url(status)}&offset={in_url(offset)}&limit={in_url(limit)}"
    for path in ("/api/tasks", "/api/history"):
        assert_clear(target.client.get(f"{path}?{query}"))
    canary(target, submit=False)


@HOSTILE
@given(task_id=HOSTILE_TEXT)
def test_task_ids(target: Gate, task_id: str) -> None:
    for method, path in (("GET", f"/api/task/{in_url(task_id)}"), ("POST", f"/api/interrupt/{in_url(task_id)}")):
        assert_clear(target.client.request(method, path))
    canary(target, submit=False)
