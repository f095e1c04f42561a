"""Async client for the ViewComfy serverless API (plain and SSE-with-logs), as a ComfyGate backend.

Speaks the wire format of ViewComfy's published Python client (``backends.viewcomfy.protocol``, ``.sse``).
Every failure surfaces as ``ViewComfyError`` / ``ViewComfyUnavailable``; no httpx exception escapes.

Retries are deliberately narrow: a POST starts a *paid* run, so only failures that prove the request
never left (``ConnectError``, ``ConnectTimeout``) are retried. Anything later is reported, not repeated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
from pydantic import ValidationError

from backends.viewcomfy.protocol import FORM_FIELDS, PromptResult
from backends.viewcomfy.sse import SSEParser
from core.errors import InvalidRequest, ViewComfyError, ViewComfyUnavailable
from security.safe_paths import sanitize_filename

__all__ = ["FileSpec", "LogCallback", "ViewComfyClient", "decode_outputs"]

logger = logging.getLogger(__name__)

FileSpec = str | Path | tuple[str, bytes]
LogCallback = Callable[[str], Awaitable[None] | None]

_BODY_EXCERPT = 2000  # characters of a non-JSON error body kept on the exception


class ViewComfyClient:
    """One ViewComfy deployment endpoint. Share one instance; it is safe for concurrent calls."""

    def __init__(
        self,
        endpoint_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 2400.0,
        stream_timeout: float = 24000.0,
        connect_retries: int = 2,
        connect_timeout: float = 10.0,
        retry_backoff: float = 0.5,
    ) -> None:
        absolute_url(endpoint_url, "the ViewComfy endpoint URL")
        if connect_retries < 0:
            raise ValueError("connect_retries must be >= 0")
        self.endpoint_url = endpoint_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._http = http if http is not None else httpx.AsyncClient()
        self._owns_http = http is None
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.connect_retries = connect_retries
        self.connect_timeout = connect_timeout
        self.retry_backoff = retry_backoff

    def __repr__(self) -> str:
        url = httpx.URL(self.endpoint_url)
        if url.password:
            url = url.copy_with(password="***")
        secret = "'***'" if self._client_secret else "None"
        shown = str(url)
        return f"ViewComfyClient(endpoint_url={shown!r}, client_id={self.client_id!r}, client_secret={secret})"

    async def __aenter__(self) -> ViewComfyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client, but only if this instance created it."""
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------------------
    # Public calls
    # ------------------------------------------------------------------------------------------

    async def infer(
        self,
        params: Mapping[str, Any],
        *,
        files: Mapping[str, FileSpec] | None = None,
        workflow_api: Mapping[str, Any] | None = None,
    ) -> PromptResult:
        """Run the workflow and wait for the whole result (``logs=false``; 201 JSON body)."""
        async with self._post(params, files, workflow_api, logs=False) as response:
            if response.status_code != 201:
                raise await _status_error(response)
            if _is_event_stream(response):  # the server streamed anyway: read it, without callbacks
                return await self._consume_stream(response, None, None)
            try:
                body = await response.aread()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, sent=True) from None
            return _parse_result_body(body, response.status_code)

    async def infer_with_logs(
        self,
        params: Mapping[str, Any],
        *,
        files: Mapping[str, FileSpec] | None = None,
        workflow_api: Mapping[str, Any] | None = None,
        on_log: LogCallback | None = None,
        on_error: LogCallback | None = None,
    ) -> PromptResult:
        """Run the workflow with ``logs=true`` and stream its SSE logs to the callbacks.

        ``log_message`` -> ``on_log``; ``error`` -> ``on_error`` (a failure line, the run goes on);
        the final ``prompt_result`` is returned, even if its ``status`` is ``"error"``. Callbacks may
        be sync or async; an exception they raise propagates and closes the stream.
        """
        async with self._post(params, files, workflow_api, logs=True) as response:
            if response.status_code != 201:
                raise await _status_error(response)
            if not _is_event_stream(response):  # logs ignored by the server: a plain result is fine
                try:
                    body = await response.aread()
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, sent=True) from None
                return _parse_result_body(body, response.status_code)
            return await self._consume_stream(response, on_log, on_error)

    # ------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream"}
        if self.client_id is not None:
            headers["client_id"] = self.client_id
        if self._client_secret is not None:
            headers["client_secret"] = self._client_secret
        return headers

    @contextlib.asynccontextmanager
    async def _post(
        self,
        params: Mapping[str, Any],
        files: Mapping[str, FileSpec] | None,
        workflow_api: Mapping[str, Any] | None,
        *,
        logs: bool,
    ) -> AsyncIterator[httpx.Response]:
        """Send the POST (retrying only connection failures) and yield the streaming response."""
        data = _form_fields(params, workflow_api, logs)
        read_timeout = self.stream_timeout if logs else self.timeout
        timeout = httpx.Timeout(read_timeout, connect=self.connect_timeout)
        with _open_files(files) as parts:
            attempt = 0
            while True:
                request = self._http.build_request(
                    "POST",
                    self.endpoint_url,
                    data=data,
                    files=parts or None,
                    headers=self._headers(),
                    timeout=timeout,
                )
                try:
                    response = await self._http.send(request, stream=True, follow_redirects=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    # Nothing was sent: safe to try again (a POST would otherwise start a second paid run).
                    if attempt >= self.connect_retries:
                        raise _transport_error(exc, sent=False) from None
                    delay = self.retry_backoff * (2**attempt)
                    attempt += 1
                    logger.warning(
                        "ViewComfy endpoint %s unreachable (%s); retry %d/%d in %.2fs",
                        _safe_url(self.endpoint_url),
                        type(exc).__name__,
                        attempt,
                        self.connect_retries,
                        delay,
                    )
                    for _, (_name, handle) in parts:
                        if hasattr(handle, "seek"):
                            handle.seek(0)
                    await asyncio.sleep(delay)
                    continue
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, sent=True) from None
                except (httpx.InvalidURL, httpx.StreamError) as exc:  # not HTTPError subclasses
                    raise ViewComfyError(f"could not send the request to ViewComfy: {exc}") from None
                break
            try:
                yield response
            except httpx.HTTPError as exc:  # any read inside the caller's block
                raise _transport_error(exc, sent=True) from None
            finally:
                await response.aclose()

    async def _consume_stream(
        self,
        response: httpx.Response,
        on_log: LogCallback | None,
        on_error: LogCallback | None,
    ) -> PromptResult:
        parser = SSEParser()
        errors: list[str] = []
        try:
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if event.event == "prompt_result":
                        return _parse_result_data(event.data)
                    if event.event == "log_message":
                        await _call(on_log, event.data, logging.DEBUG, "ViewComfy log: %s")
                    elif event.event == "error":
                        errors.append(event.data)
                        await _call(on_error, event.data, logging.WARNING, "ViewComfy error event: %s")
                    else:
                        logger.debug("ignoring unknown ViewComfy SSE event %r", event.event)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, sent=True) from None
        parser.close()
        raise ViewComfyError(
            "stream ended without a result",
            status=response.status_code,
            body={"errors": errors[-20:]} if errors else None,
        )


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _form_fields(params: Mapping[str, Any], workflow_api: Mapping[str, Any] | None, logs: bool) -> dict[str, str]:
    """The three form fields exactly as the published client sends them."""
    if not isinstance(params, Mapping):
        raise InvalidRequest("params must be a mapping of '<node_id>-inputs-<input>' keys to values")
    try:
        params_json = json.dumps(dict(params))
        workflow_json = json.dumps(dict(workflow_api)) if workflow_api else ""
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"params/workflow_api must be JSON-serialisable: {exc}") from None
    return {"params": params_json, "workflow_api": workflow_json, "logs": "true" if logs else "false"}


@contextlib.contextmanager
def _open_files(
    files: Mapping[str, FileSpec] | None,
) -> Iterator[list[tuple[str, tuple[str, IO[bytes] | bytes]]]]:
    """Multipart parts named by parameter key, filename = basename; path files are opened lazily."""
    parts: list[tuple[str, tuple[str, IO[bytes] | bytes]]] = []
    handles: list[IO[bytes]] = []
    try:
        for key, spec in (files or {}).items():
            if key in FORM_FIELDS:
                raise InvalidRequest(f"a file cannot use the reserved field name {key!r}")
            if isinstance(spec, tuple):
                name, content = spec
                if not isinstance(content, bytes | bytearray):
                    raise InvalidRequest(f"file {key!r}: expected (filename, bytes)")
                parts.append((key, (os.path.basename(str(name).replace("\\", "/")), bytes(content))))
            elif isinstance(spec, str | os.PathLike):
                path = Path(spec)
                try:
                    handle = path.open("rb")
                except OSError as exc:
                    raise InvalidRequest(f"file {key!r}: cannot open {path}: {exc.strerror}") from None
                handles.append(handle)
                parts.append((key, (path.name, handle)))
            else:
                raise InvalidRequest(f"file {key!r}: expected a path or (filename, bytes)")
        yield parts
    finally:
        for opened in handles:
            opened.close()


async def _call(callback: LogCallback | None, text: str, level: int, fmt: str) -> None:
    if callback is None:
        logger.log(level, fmt, text)
        return
    result = callback(text)
    if inspect.isawaitable(result):
        await result


def absolute_url(value: str, what: str) -> httpx.URL:
    """``value`` as an absolute http(s) URL, else a ValueError naming ``what``."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{what} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{what} must be an absolute http(s) URL")
    return url


def _is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def _safe_url(url: str) -> str:
    """The URL without userinfo or query, for log lines."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None))


def _transport_error(exc: httpx.HTTPError, *, sent: bool) -> ViewComfyError:
    """Map an httpx failure; the message names the failure, never headers or credentials."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        where = "connecting to" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "waiting for"
        return ViewComfyUnavailable(f"timed out {where} ViewComfy ({kind})")
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol) or not sent:
        return ViewComfyUnavailable(f"ViewComfy endpoint unreachable ({kind}: {exc})")
    return ViewComfyError(f"connection to ViewComfy failed after the request was sent ({kind}: {exc})")


async def _status_error(response: httpx.Response) -> ViewComfyError:
    """Non-201: keep the status and the body (parsed JSON, else text)."""
    try:
        raw = await response.aread()
    except httpx.HTTPError:
        raw = b""
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", errors="replace")[:_BODY_EXCERPT]
    detail = ""
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                detail = f": {body[key]}"
                break
    elif isinstance(body, str) and body.strip():
        detail = f": {body.strip()[:200]}"
    status = response.status_code
    message = f"ViewComfy answered HTTP {status}{detail}"
    if status in (502, 503, 504):
        return ViewComfyUnavailable(message, status=status, body=body)
    return ViewComfyError(message, status=status, body=body)


def _parse_result_body(raw: bytes, status: int) -> PromptResult:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ViewComfyError(
            "ViewComfy answered 201 with a body that is not JSON",
            status=status,
            body=raw.decode("utf-8", errors="replace")[:_BODY_EXCERPT],
        ) from None
    return _validate_result(data, status)


def _parse_result_data(data: str) -> PromptResult:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise ViewComfyError(
            "ViewComfy sent a prompt_result event that is not JSON", status=201, body=data[:_BODY_EXCERPT]
        ) from None
    return _validate_result(parsed, 201)


def _validate_result(data: Any, status: int) -> PromptResult:
    try:
        return PromptResult.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'result'}: {e['msg']}" for e in exc.errors())
        raise ViewComfyError(f"ViewComfy returned a malformed result ({problems})", status=status, body=data) from None


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

_DECODE_CHUNK = 4 * 256 * 1024  # base64 characters per step (a multiple of 4)


def decode_outputs(result: PromptResult | Mapping[str, Any], dest_dir: str | Path, *, prefix: str = "") -> list[Path]:
    """Write each base64 output to ``dest_dir`` and return the paths, in output order.

    ``prefix`` (already safe, e.g. a task id's first 8 characters and ``_``) is put before each name,
    so outputs of different tasks sharing one folder stay apart, as ComfyGate names ComfyUI outputs.

    Names come from upstream, so they are untrusted: basename only, no NUL/control characters, never
    an existing file (``name_1.png``, ``name_2.png``...; created with O_EXCL). Each file is decoded in
    chunks, so peak memory stays near one base64 string. Outputs without inline ``data`` (S3-style
    ``filepath``) are skipped with a warning. Blocking: from async code use ``asyncio.to_thread``.
    """
    model = result if isinstance(result, PromptResult) else _validate_result(dict(result), 201)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[Path] = []
    for index, output in enumerate(model.outputs):
        if not output.data:
            logger.warning("output %d (%r) has no inline data; skipped", index, output.filename)
            continue
        name = prefix + sanitize_filename(output.filename, default=f"output_{index}")
        path, handle = _create_unique(root, name)
        try:
            with handle:
                size = _decode_into(output.data, handle)
        except binascii.Error as exc:
            path.unlink(missing_ok=True)
            raise ViewComfyError(
                f"output {index} ({name}) is not valid base64: {exc}", body={"filename": output.filename}
            ) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if output.size and size != output.size:
            logger.warning("output %s: %d bytes decoded, %d announced", name, size, output.size)
        written.append(path)
    return written


def _create_unique(root: Path, name: str) -> tuple[Path, IO[bytes]]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    for n in range(10_000):
        candidate = root / (name if n == 0 else f"{stem}_{n}{suffix}")
        if candidate.parent != root:  # defence in depth; sanitize_filename already prevents this
            raise ViewComfyError(f"refusing output name {name!r}")
        try:
            return candidate, candidate.open("xb")
        except FileExistsError:
            continue
    raise ViewComfyError(f"too many files named like {name!r} in {root}")


def _decode_into(data: str, handle: IO[bytes]) -> int:
    if " " in data or "\n" in data or "\r" in data or "\t" in data:  # MIME-style wrapped base64
        data = "".join(data.split())
    total = 0
    for start in range(0, len(data), _DECODE_CHUNK):
        piece = base64.b64decode(data[start : start + _DECODE_CHUNK], validate=True)
        handle.write(piece)
        total += len(piece)
    return total
