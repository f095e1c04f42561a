"""Image parameters as a file part, base64, data URL or URL (downloaded through the SSRF guard)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from security.url_guard import is_public
from tests.conftest import Gate
from tests.servers import AppServer


def png(width: int, height: int = 20) -> bytes:
    buf = BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def size_workflow(image: str = "placeholder.png") -> dict[str, Any]:
    """LoadImage → GetImageSize → PreviewAny: the task's node output tells which image was loaded."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }


def loaded_width(task: dict[str, Any]) -> int:
    assert task["status"] == "completed", task
    return int(task["node_outputs"]["3"]["text"][0])


async def _slow(request: Request) -> Response:
    await asyncio.sleep(1.0)
    return Response(png(5), media_type="image/png")


URL_APP = Starlette(
    routes=[
        Route("/img.png", lambda r: Response(png(41), media_type="image/png")),
        Route("/hop", lambda r: RedirectResponse("/img.png", status_code=302)),
        Route("/text", lambda r: Response(b"hello, not an image " * 10, media_type="text/plain")),
        Route("/big.png", lambda r: Response(png(60) + b"\0" * 300_000, media_type="image/png")),
        Route("/missing.png", lambda r: Response(b"", status_code=404)),
        Route("/slow.png", _slow),
    ]
)


@pytest.fixture
def url_server() -> Iterator[AppServer]:
    with AppServer(URL_APP) as server:
        yield server


@pytest.fixture
def open_gate(emulator: Any, gate_factory: Callable[..., Gate]) -> Gate:
    return gate_factory([emulator.url], allow_private_urls=True, remote_input_timeout=0.5, max_upload_bytes=200_000)


def run(gate: Gate, params: dict[str, Any]) -> dict[str, Any]:
    response = gate.submit(size_workflow(), params=params, wait=True)
    assert response.status_code == 200, response.text
    return response.json()


def test_data_url_and_bare_base64(open_gate: Gate) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png(33)).decode()
    task = run(open_gate, {"1.image": data_url})
    assert loaded_width(task) == 33
    name = task["params"]["1.image"]
    assert name.startswith("cg_") and name.endswith(".png")
    assert (open_gate.settings.uploads_dir / name).read_bytes() == png(33)
    assert loaded_width(run(open_gate, {"1-inputs-image": base64.b64encode(png(34)).decode()})) == 34


def test_url_download_follows_a_checked_redirect(open_gate: Gate, url_server: AppServer) -> None:
    assert loaded_width(run(open_gate, {"1.image": f"{url_server.url}/hop"})) == 41


def test_multipart_file_part_with_wait_query(open_gate: Gate) -> None:
    response = open_gate.client.post(
        "/api/workflow/submit?wait=true",
        data={"request": json.dumps({"workflow": size_workflow()})},
        files={"1.image": ("photo.png", png(29), "image/png")},
    )
    assert response.status_code == 200, response.text
    assert loaded_width(response.json()) == 29


def test_multipart_problems(open_gate: Gate) -> None:
    wf = json.dumps({"workflow": size_workflow()})
    not_image_input = open_gate.client.post(
        "/api/workflow/submit", data={"request": wf}, files={"3.source": ("a.png", png(5), "image/png")}
    )
    assert not_image_input.status_code == 422 and not_image_input.json()["error"] == "invalid_parameters"
    no_request = open_gate.client.post("/api/workflow/submit", files={"1.image": ("a.png", png(5), "image/png")})
    assert no_request.status_code == 400
    bad_json = open_gate.client.post(
        "/api/workflow/submit", data={"request": "{nope"}, files={"1.image": ("a.png", png(5), "image/png")}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/text", 400, "invalid_request"),  # does not decode as an image
        ("/missing.png", 422, "remote_input_failed"),
        ("/big.png", 413, "payload_too_large"),
        ("/slow.png", 422, "remote_input_failed"),
    ],
)
def test_bad_remote_images_are_refused(
    open_gate: Gate, url_server: AppServer, path: str, status: int, error: str
) -> None:
    response = open_gate.submit(size_workflow(), params={"1.image": url_server.url + path})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_guard_refuses_non_public_addresses_by_default(gate: Gate, url_server: AppServer) -> None:
    for url in (
        f"{url_server.url}/img.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/meta-data.png",
        f"http://[::1]:{url_server.port}/img.png",
        "http://localhost:9/img.png",
    ):
        response = gate.submit(size_workflow(), params={"1.image": url})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"] == "url_not_allowed", response.text
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
                    "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1"):  # fmt: skip
        assert not is_public(ipaddress.ip_address(address)), address
    assert is_public(ipaddress.ip_address("93.184.216.34")) and is_public(ipaddress.ip_address("2606:4700::1111"))


def test_plain_names_and_non_image_inputs_pass_through(open_gate: Gate) -> None:
    up = open_gate.client.post("/api/upload/image", files={"image": ("plain.png", png(23), "image/png")}).json()
    assert loaded_width(run(open_gate, {"1.image": up["name"]})) == 23
