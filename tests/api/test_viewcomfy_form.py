"""Reading incoming ViewComfy infer requests (urlencoded, multipart, JSON) in the API layer."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.viewcomfy_form import parse_infer_form
from core.errors import ComfyGateError, PayloadTooLarge

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
