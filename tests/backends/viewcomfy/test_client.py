"""ViewComfyClient against a real loopback fake of the ViewComfy API (tests/fake_viewcomfy.py)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.viewcomfy.client import ViewComfyClient, decode_outputs
from backends.viewcomfy.protocol import PromptResult
from core.errors import InvalidRequest, ViewComfyError, ViewComfyUnavailable
from tests.fake_viewcomfy import PNG_BYTES, DropAfterRequest, FakeViewComfy, closed_port, make_result

ID = "test-client-id"
SECRET = "s3cr3t-value-never-logged"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeViewComfy]:
    with FakeViewComfy(client_id=ID, client_secret=SECRET) as server:
        yield server


def client_for(fake: FakeViewComfy, path: str = "/infer", **kwargs: Any) -> ViewComfyClient:
    kwargs.setdefault("retry_backoff", 0.01)
    return ViewComfyClient(fake.url(path), ID, SECRET, **kwargs)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts attempts; optionally fails the first ``fail_first`` with a simulated ConnectError."""

    def __init__(self, fail_first: int = 0) -> None:
        self.attempts = 0
        self.fail_first = fail_first
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise httpx.ConnectError("simulated: connection refused", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- request encoding --------------------------------------------------------------------------------


async def test_infer_urlencoded_without_files(fake: FakeViewComfy) -> None:
    fake.clear()
    async with client_for(fake) as client:
        result = await client.infer(
            {"6-inputs-text": "a cat", "3-inputs-seed": 42, "_3-node-class_type-info": "KSampler"}
        )
    assert isinstance(result, PromptResult) and result.status == "success" and result.completed
    rec = fake.last()
    assert rec.media_type == "application/x-www-form-urlencoded"
    assert rec.headers["client_id"] == ID and rec.headers["client_secret"] == SECRET
    assert rec.fields == {
        "params": json.dumps({"6-inputs-text": "a cat", "3-inputs-seed": 42, "_3-node-class_type-info": "KSampler"}),
        "workflow_api": "",  # absent -> empty string, like the published client
        "logs": "false",
    }
    assert rec.files == {}


async def test_infer_multipart_with_files_named_by_key(fake: FakeViewComfy, tmp_path: Path) -> None:
    fake.clear()
    image = tmp_path / "sub" / "input image.png"
    image.parent.mkdir()
    image.write_bytes(PNG_BYTES)
    workflow = {"52": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    async with client_for(fake) as client:
        await client.infer(
            {"6-inputs-text": "x"},
            files={"52-inputs-image": image, "53-inputs-image": ("../../mask.png", b"MASK")},
            workflow_api=workflow,
        )
    rec = fake.last()
    assert rec.media_type == "multipart/form-data"
    assert rec.fields["logs"] == "false" and json.loads(rec.fields["workflow_api"]) == workflow
    assert json.loads(rec.fields["params"]) == {"6-inputs-text": "x"}
    assert rec.files["52-inputs-image"] == ("input image.png", PNG_BYTES, "image/png")
    assert rec.files["53-inputs-image"][:2] == ("mask.png", b"MASK")


async def test_our_request_parses_with_our_server_parser(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/parsed") as client:
        plain = await client.infer({"3-inputs-seed": 1})
        with_file = await client.infer(
            {"3-inputs-seed": 2}, files={"10-inputs-image": ("a.png", b"img")}, workflow_api={"1": {}}
        )
        streamed = await client.infer_with_logs({"3-inputs-seed": 3})
    assert plain.prompt == {
        "logs": False,
        "params": {"3-inputs-seed": 1},
        "workflow_api": None,
        "content_type": "urlencoded",
        "files": {},
    }
    assert with_file.prompt["content_type"] == "multipart" and with_file.prompt["workflow_api"] == {"1": {}}
    assert with_file.prompt["files"] == {
        "10-inputs-image": {"filename": "a.png", "size": 3, "content_type": "image/png"}
    }
    assert streamed.prompt["logs"] is True and streamed.prompt["params"] == {"3-inputs-seed": 3}


async def test_bad_inputs_fail_before_any_request(fake: FakeViewComfy, tmp_path: Path) -> None:
    fake.clear()
    async with client_for(fake) as client:
        with pytest.raises(InvalidRequest, match="cannot open"):
            await client.infer({"a": 1}, files={"1-inputs-image": tmp_path / "missing.png"})
        with pytest.raises(InvalidRequest, match="reserved"):
            await client.infer({"a": 1}, files={"params": ("p", b"x")})
        with pytest.raises(InvalidRequest, match="JSON-serialisable"):
            await client.infer({"a": object()})
    assert fake.requests == []


# --- responses ---------------------------------------------------------------------------------------


async def test_infer_with_logs_streams_callbacks_and_returns_result(fake: FakeViewComfy) -> None:
    fake.clear()
    logs: list[str] = []
    errors: list[str] = []

    async def on_error(text: str) -> None:
        errors.append(text)

    async with client_for(fake) as client:
        result = await client.infer_with_logs({"3-inputs-seed": 7}, on_log=logs.append, on_error=on_error)
    assert fake.last().fields["logs"] == "true"
    assert logs == ["loading checkpoint", "step 1/2", "step 2/2"]  # nothing after prompt_result
    assert errors == ["node 7: out of memory,\\nretrying on CPU"]
    assert result.status == "success" and base64.b64decode(result.outputs[0].data) == PNG_BYTES


async def test_stream_without_result_is_an_error(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/truncated") as client:
        with pytest.raises(ViewComfyError, match="stream ended without a result") as info:
            await client.infer_with_logs({"a": 1})
    assert type(info.value) is ViewComfyError
    assert info.value.status == 201 and info.value.body == {"errors": ["worker lost"]}


async def test_401_keeps_status_and_json_body(fake: FakeViewComfy) -> None:
    async with ViewComfyClient(fake.url(), ID, "wrong") as client:
        with pytest.raises(ViewComfyError) as info:
            await client.infer({"a": 1})
        with pytest.raises(ViewComfyError) as streamed:
            await client.infer_with_logs({"a": 1})
    for exc in (info.value, streamed.value):
        assert exc.status == 401
        assert exc.body == {"error": "Unauthorized", "message": "invalid client credentials"}
        assert "invalid client credentials" in exc.message
        assert exc.to_dict()["upstream_status"] == 401


async def test_500_keeps_status_and_text_body(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/boom") as client:
        with pytest.raises(ViewComfyError) as info:
            await client.infer({"a": 1})
    assert info.value.status == 500 and info.value.body == "Internal Server Error: worker crashed"


async def test_gateway_statuses_are_unavailable(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/boom?status=503") as client:
        with pytest.raises(ViewComfyUnavailable) as info:
            await client.infer({"a": 1})
    assert info.value.status == 503 and info.value.status_code == 503


async def test_server_may_ignore_the_logs_flag(fake: FakeViewComfy) -> None:
    logs: list[str] = []
    async with client_for(fake, "/infer?mode=json") as client:
        assert (await client.infer_with_logs({"a": 1}, on_log=logs.append)).completed
    assert logs == []
    async with client_for(fake, "/infer?mode=sse") as client:
        assert (await client.infer({"a": 1})).completed


async def test_200_is_not_success(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/ok200") as client:
        with pytest.raises(ViewComfyError) as info:
            await client.infer({"a": 1})
    assert info.value.status == 200 and set(info.value.body) == set(make_result())


async def test_result_with_extra_key_is_rejected(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/extra-key") as client:
        with pytest.raises(ViewComfyError, match="malformed result") as info:
            await client.infer({"a": 1})
    assert info.value.body["surprise"] == 1


async def test_slow_cold_start_is_waited_for(fake: FakeViewComfy) -> None:
    async with client_for(fake, "/slow?delay=0.4") as client:
        started = time.monotonic()
        result = await client.infer_with_logs({"a": 1})
    assert result.completed and time.monotonic() - started >= 0.4


# --- retries -----------------------------------------------------------------------------------------


async def test_no_retry_after_request_sent_read_timeout(fake: FakeViewComfy) -> None:
    fake.clear()
    async with client_for(fake, "/hang", timeout=0.3, connect_retries=3) as client:
        with pytest.raises(ViewComfyUnavailable, match="timed out waiting"):
            await client.infer({"a": 1})
    assert fake.count("/hang") == 1


async def test_no_retry_on_server_error(fake: FakeViewComfy) -> None:
    fake.clear()
    async with client_for(fake, "/boom", connect_retries=3) as client:
        with pytest.raises(ViewComfyError):
            await client.infer({"a": 1})
    assert fake.count("/boom") == 1


async def test_no_retry_when_connection_drops_after_sending() -> None:
    with DropAfterRequest() as server:
        async with ViewComfyClient(server.url(), ID, SECRET, connect_retries=3, retry_backoff=0.01) as client:
            with pytest.raises(ViewComfyError) as info:
                await client.infer({"a": 1})
    assert type(info.value) is ViewComfyError and "after the request was sent" in info.value.message
    assert server.connections == 1


async def test_connection_refused_is_retried_then_unavailable() -> None:
    transport = CountingTransport()
    http = httpx.AsyncClient(transport=transport)
    client = ViewComfyClient(
        f"http://127.0.0.1:{closed_port()}/infer",
        ID,
        SECRET,
        http=http,
        connect_retries=2,
        retry_backoff=0.01,
    )
    with pytest.raises(ViewComfyUnavailable, match="unreachable"):
        await client.infer({"a": 1})
    assert transport.attempts == 3
    await client.aclose()
    assert not http.is_closed  # a shared client is not ours to close
    await http.aclose()


async def test_connection_refused_then_recovers(fake: FakeViewComfy) -> None:
    fake.clear()
    transport = CountingTransport(fail_first=2)
    async with httpx.AsyncClient(transport=transport) as http:
        client = client_for(fake, http=http, connect_retries=2)
        result = await client.infer_with_logs({"a": 1}, files={"1-inputs-image": ("a.png", b"abc")})
    assert result.completed and transport.attempts == 3 and fake.count("/infer") == 1
    assert fake.last().files["1-inputs-image"][1] == b"abc"


async def test_retry_resends_path_files_from_the_start(fake: FakeViewComfy, tmp_path: Path) -> None:
    fake.clear()
    path = tmp_path / "in.png"
    path.write_bytes(b"0123456789")
    async with httpx.AsyncClient(transport=CountingTransport(fail_first=1)) as http:
        await client_for(fake, http=http).infer({"a": 1}, files={"1-inputs-image": path})
    assert fake.last().files["1-inputs-image"][:2] == ("in.png", b"0123456789")


# --- secrets -----------------------------------------------------------------------------------------


async def test_secret_not_in_repr_or_logs(fake: FakeViewComfy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = ViewComfyClient(f"http://user:pw@127.0.0.1:{closed_port()}/x", ID, SECRET, retry_backoff=0.01)
    assert SECRET not in repr(client) and "pw" not in repr(client) and "***" in repr(client)
    with pytest.raises(ViewComfyUnavailable) as refused:
        await client.infer({"a": 1})
    await client.aclose()
    async with ViewComfyClient(fake.url(), ID, SECRET) as ok:
        await ok.infer_with_logs({"a": 1})
    async with ViewComfyClient(fake.url(), ID, SECRET + "x") as bad:
        with pytest.raises(ViewComfyError) as denied:
            await bad.infer({"a": 1})
    assert caplog.records  # retries and SSE logs were logged...
    assert SECRET not in caplog.text  # ...without the secret
    for exc in (refused.value, denied.value):
        assert SECRET not in str(exc) and SECRET not in json.dumps(exc.to_dict(), default=str)


# --- decode_outputs ----------------------------------------------------------------------------------


def _result_with(outputs: list[dict[str, Any]]) -> PromptResult:
    return PromptResult(**{**make_result(), "outputs": outputs})


def _out(name: str, content: bytes) -> dict[str, Any]:
    return {
        "filename": name,
        "content_type": "image/png",
        "data": base64.b64encode(content).decode(),
        "size": len(content),
    }


def test_decode_outputs_is_safe(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (tmp_path / "evil.png").write_bytes(b"original")
    result = _result_with(
        [
            _out("../evil.png", b"one"),
            _out("/etc/passwd", b"two"),
            _out("dup.png", b"three"),
            _out("dup.png", b"four"),
            _out("nul\x00name.png", b"five"),
            _out("..", b"six"),
            {"filename": "remote.mp4", "content_type": "video/mp4", "filepath": "s3://bucket/remote.mp4"},
        ]
    )
    paths = decode_outputs(result, dest)
    assert [p.name for p in paths] == [
        "evil.png",
        "passwd",
        "dup.png",
        "dup_1.png",
        "nul_name.png",
        "output_5",
    ]
    assert all(p.parent == dest.resolve() for p in paths)
    assert [p.read_bytes() for p in paths] == [b"one", b"two", b"three", b"four", b"five", b"six"]
    assert (tmp_path / "evil.png").read_bytes() == b"original"
    again = decode_outputs(result.model_dump(), dest)  # a plain dict works too; nothing is overwritten
    assert again[0].name == "evil_1.png" and (dest / "evil.png").read_bytes() == b"one"


def test_decode_outputs_large_and_wrapped_base64(tmp_path: Path) -> None:
    content = bytes(range(256)) * 8000  # > one decode chunk
    wrapped = base64.encodebytes(content).decode()  # MIME style, newline every 76 chars
    paths = decode_outputs(_result_with([{**_out("big.bin", b""), "data": wrapped, "size": len(content)}]), tmp_path)
    assert paths[0].read_bytes() == content


def test_decode_outputs_bad_base64_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ViewComfyError, match="not valid base64"):
        decode_outputs(_result_with([{**_out("x.png", b""), "data": "!!!not base64!!!"}]), tmp_path)
    assert list(tmp_path.iterdir()) == []
