"""Hostile requests to the ViewComfy-compatible endpoint: form fields, JSON strings inside them, file
parts, credential headers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_JSON, HOSTILE_TEXT, PARAM_KEYS, assert_clear, canary, raw_json
from tests.protocol import sd_workflow

WORKFLOW = json.dumps(sd_workflow(steps=1))


def wire(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


@HOSTILE
@given(
    params=st.one_of(HOSTILE_JSON.map(lambda v: raw_json(v).decode()), HOSTILE_TEXT.map(wire)),
    workflow=st.one_of(st.just(WORKFLOW), HOSTILE_JSON.map(lambda v: raw_json(v).decode()), st.just("")),
    logs=st.sampled_from(["", "true", "false", "maybe"]),
    key=PARAM_KEYS.map(wire),
    as_json=st.booleans(),
)
def test_infer(target: Gate, params: str, workflow: str, logs: str, key: str, as_json: bool) -> None:
    if as_json:
        raw_params = params if params[:1] in "[{" else json.dumps(params)
        body = f'{{"params": {raw_params}, "workflow_api": {json.dumps(workflow)}}}'
        response = target.client.post(
            "/api/viewcomfy/infer", content=body.encode(), headers={"content-type": "application/json"}
        )
    else:
        form = {"params": params, "workflow_api": workflow, "logs": logs}
        response = target.client.post(
            "/api/viewcomfy/infer", data=form, files={key: ("x.png", b"\x89PNG", "image/png")}
        )
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        assert response.status_code == 201 and "prompt_result" in response.text
    else:
        assert_clear(response)
    canary(target)


@HOSTILE
@given(client_id=HOSTILE_TEXT.map(wire), secret=HOSTILE_TEXT.map(wire), dash=st.booleans())
def test_credentials(target: Gate, client_id: str, secret: str, dash: bool) -> None:
    sep = "-" if dash else "_"
    headers: dict[str, Any] = {}
    for name, value in ((f"client{sep}id", client_id), (f"client{sep}secret", secret)):
        safe = "".join(c for c in value if " " <= c <= "~").strip()  # what an HTTP parser lets through
        if safe:
            headers[name] = safe
    form = {"workflow_api": WORKFLOW, "params": "{}"}
    response = target.client.post("/api/viewcomfy/infer", data=form, headers=headers)
    assert_clear(response)
    canary(target)
