"""GET /api/input/{name}: an input image a backend holds, for the debugger's LoadImage preview."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import Gate


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_uploaded_image_is_served_back_from_the_backend(gate: Gate) -> None:
    data = png((10, 200, 30))
    answer = gate.client.post("/api/upload/image", files={"image": ("green dot.png", data, "image/png")})
    assert answer.status_code == 200, answer.text
    name = answer.json()["name"]
    got = gate.client.get(f"/api/input/{name}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"


def test_a_missing_input_image_is_404_with_a_hint(gate: Gate) -> None:
    answer = gate.client.get("/api/input/never_uploaded.png")
    assert answer.status_code == 404 and "upload it first" in answer.json()["message"]


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../x.png", ".hidden.png", "a/.b/c.png"])
def test_path_like_names_are_refused(gate: Gate, name: str) -> None:
    answer = gate.client.get(f"/api/input/{name}")
    assert answer.status_code in (400, 404), answer.text
    assert answer.status_code != 200


def test_only_images_are_previewed(gate: Gate) -> None:
    answer = gate.client.get("/api/input/page.svg")
    assert answer.status_code == 400 and "image" in answer.json()["message"]
