"""Hostile multipart bodies: the submit form (request field + file parts), image uploads, workflow
uploads. Names, subfolders, bytes and JSON are generated."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import Gate
from tests.hostile.support import HOSTILE, HOSTILE_JSON, HOSTILE_TEXT, PARAM_KEYS, assert_clear, canary, raw_json
from tests.protocol import sd_workflow


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


FILE_BYTES = st.one_of(st.binary(max_size=256), st.just(png()), st.just(b""), st.just(png()[:40]))
FILE_NAMES = st.one_of(HOSTILE_TEXT, st.sampled_from(["x.png", "../x.png", "a/b.png", "con.png", ".png"]))


def wire(text: str) -> str:
    """What a client can put in a multipart header: lone surrogates cannot be encoded, so send U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


@HOSTILE
@given(request=st.one_of(HOSTILE_JSON, st.just({"workflow": sd_workflow(steps=1)})), key=PARAM_KEYS, data=FILE_BYTES)
def test_submit_form(target: Gate, request: Any, key: str, data: bytes) -> None:
    files = {"request": (None, raw_json(request), "application/json"), wire(key): ("img.png", data, "image/png")}
    assert_clear(target.client.post("/api/workflow/submit", files=files))
    canary(target)


@HOSTILE
@given(name=FILE_NAMES, data=FILE_BYTES, subfolder=st.one_of(st.just(""), HOSTILE_TEXT), overwrite=st.booleans())
def test_image_upload(target: Gate, name: str, data: bytes, subfolder: str, overwrite: bool) -> None:
    form = {"subfolder": wire(subfolder), "overwrite": str(overwrite).lower()}
    response = target.client.post("/api/upload/image", files={"image": (wire(name), data, "image/png")}, data=form)
    assert_clear(response)
    if response.status_code == 200:
        local = response.json()["local_filename"]
        assert "/" not in local and (target.settings.uploads_dir / local).read_bytes() == data
    canary(target)


@HOSTILE
@given(name=FILE_NAMES, content=st.one_of(HOSTILE_JSON.map(raw_json), st.binary(max_size=128)), overwrite=st.booleans())
def test_workflow_upload(target: Gate, name: str, content: bytes, overwrite: bool) -> None:
    before = sorted(p.name for p in target.settings.workflows_dir.iterdir())
    form = {"overwrite": str(overwrite).lower(), "name": wire(name)}
    response = target.client.post(
        "/api/workflow/upload", files={"file": (wire(name), content, "application/json")}, data=form
    )
    assert_clear(response)
    if response.status_code == 200:  # only a real workflow is stored: take it out again
        saved = response.json()["name"]
        assert json.loads((target.settings.workflows_dir / saved).read_text())
        if saved not in before:
            assert target.client.delete(f"/api/workflow/{saved}").status_code == 200
    canary(target)
