"""One submit route reads JSON or multipart by content type, and OpenAPI documents both bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute

from main import create_app
from tests.conftest import Gate, make_settings
from tests.protocol import load_workflow


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (newer FastAPI keeps them nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and hasattr(inner, "routes"):
            found += _api_routes(list(inner.routes))
    return found


def test_one_route_and_both_bodies_documented(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, ["http://127.0.0.1:9"]))
    routes = [r for r in _api_routes(app.routes) if r.path == "/api/workflow/submit"]
    assert len(routes) == 1 and type(routes[0]) is APIRoute  # no route overriding matches(), no router order
    body = app.openapi()["paths"]["/api/workflow/submit"]["post"]["requestBody"]
    content = body["content"]
    assert list(content) == ["application/json", "multipart/form-data"]
    json_schema = content["application/json"]["schema"]
    assert json_schema["title"] == "SubmitRequest"
    assert {"workflow", "workflow_name", "params", "wait", "webhook"} <= set(json_schema["properties"])
    assert content["multipart/form-data"]["schema"]["required"] == ["request"]


def test_json_multipart_and_other_content_types(gate: Gate) -> None:
    workflow = load_workflow("invert_save.json")
    as_json = gate.client.post("/api/workflow/submit", json={"workflow": workflow})
    assert as_json.status_code == 200, as_json.text
    no_type = gate.client.post("/api/workflow/submit", content=json.dumps({"workflow": workflow}).encode())
    assert no_type.status_code == 200, no_type.text  # FastAPI read a body without content type as JSON
    as_multipart = gate.client.post(
        "/api/workflow/submit", files={"request": (None, json.dumps({"workflow": workflow}))}
    )
    assert as_multipart.status_code == 200, as_multipart.text  # the request field alone, no file part
    urlencoded = gate.client.post("/api/workflow/submit", data={"request": json.dumps({"workflow": workflow})})
    assert urlencoded.status_code == 422 and "multipart/form-data" in urlencoded.json()["message"]
    text = gate.client.post("/api/workflow/submit", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 422 and "application/json" in text.json()["message"]
    empty = gate.client.post("/api/workflow/submit", content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 422 and empty.json()["problems"][0]["field"] == "body"
    bad_field = gate.client.post(
        "/api/workflow/submit", files={"x": ("a.png", b"x")}, data={"request": json.dumps({"timeout": -1})}
    )
    assert bad_field.status_code == 422 and bad_field.json()["message"].startswith("request.timeout")
