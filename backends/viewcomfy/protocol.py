"""The ViewComfy serverless API wire format, shared by the client and the ViewComfy-compatible endpoint.

Everything here is pure (no network): both directions must agree byte for byte with ViewComfy's
published clients, so the rules live in one place. See ``/work/shared/viewcomfy-protocol.md``.

Rules worth remembering (they come from the published Python client, which existing users run):

* Success is HTTP 201. The result has EXACTLY six keys, because the client calls
  ``PromptResult(**result)``: an extra key is a ``TypeError`` there, so it is a validation error here.
* SSE ``data:`` must be ONE line: the client *overwrites* data on each ``data:`` line instead of
  appending, and strips whitespace around it. Comment lines (``: ...``) are safe keepalives.
* Form fields: ``params`` is ONE JSON string, ``workflow_api`` is a JSON string or ``""`` (= absent),
  ``logs`` is ``"true"``/``"false"``. Files are parts named by their parameter key.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from core.errors import InvalidRequest, PayloadTooLarge
from security.limits import safe_json_loads
from security.safe_paths import sanitize_filename

__all__ = [
    "FORM_FIELDS",
    "PARAM_KEY_SEPARATOR",
    "RESULT_KEYS",
    "SSE_KEEPALIVE",
    "FileOutput",
    "InferFile",
    "InferRequest",
    "PromptResult",
    "SSEEvent",
    "SSEParser",
    "parse_bool_field",
    "parse_infer_form",
    "parse_params_field",
    "parse_workflow_api_field",
    "result_to_json",
    "split_viewcomfy_key",
    "sse_event",
    "viewcomfy_key",
]

#: Form field names with a fixed meaning; a file part may not use them.
FORM_FIELDS: frozenset[str] = frozenset({"params", "workflow_api", "logs"})
PARAM_KEY_SEPARATOR = "-inputs-"
#: An SSE comment: ignored by every client, keeps proxies and load balancers from closing an idle stream.
SSE_KEEPALIVE = b": keepalive\n\n"

# --------------------------------------------------------------------------------------------------
# Result objects
# --------------------------------------------------------------------------------------------------


class FileOutput(BaseModel):
    """One output file, base64 inline.

    Lenient on purpose (extra keys kept, defaults like the published client's ``.get``): ViewComfy
    also sends S3-style outputs (``filepath`` instead of ``data``), and the published client accepts
    any output dict. Only the top-level result must have exact keys.
    """

    model_config = ConfigDict(extra="allow")

    filename: str = ""
    content_type: str = ""
    data: str = ""
    size: int = 0

    @classmethod
    def from_bytes(cls, filename: str, content: bytes, content_type: str = "application/octet-stream") -> FileOutput:
        """Build an output from raw bytes (server side): standard base64, size = decoded length."""
        return cls(
            filename=filename,
            content_type=content_type,
            data=base64.b64encode(content).decode("ascii"),
            size=len(content),
        )


class PromptResult(BaseModel):
    """The result object. ``extra="forbid"`` mirrors ``PromptResult(**result)`` in the published client."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str
    status: str  # "success" or "error"; kept as str so an unknown status from upstream is not fatal
    completed: bool
    execution_time_seconds: float
    prompt: dict[str, Any]
    outputs: list[FileOutput]


#: The exact top-level keys of a result, in wire order.
RESULT_KEYS: tuple[str, ...] = tuple(PromptResult.model_fields)


def result_to_json(result: PromptResult | Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready dict with exactly the six result keys (validated), for a 201 body or a ``prompt_result``.

    Accepts a mapping so the endpoint can build results as plain dicts and still get them checked:
    a stray key here would break every published client downstream.
    """
    model = result if isinstance(result, PromptResult) else PromptResult.model_validate(dict(result))
    return model.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------
# SSE
# --------------------------------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def sse_event(event: str, data: Any) -> bytes:
    """Encode one SSE event whose ``data`` is guaranteed to be a single line.

    ``str`` is sent as text with CR/LF escaped as ``\\r``/``\\n`` (the client would otherwise keep only
    the last line); anything else (dict, list, number, pydantic model) as compact JSON, which never
    contains a raw newline. Multi-line logs can also be sent as one event per line instead.
    """
    if not event or _LINE_BREAKS.search(event) or event.startswith(":"):
        raise ValueError(f"invalid SSE event name {event!r}")
    if isinstance(data, str):
        text = data.replace("\r\n", "\\n").replace("\r", "\\r").replace("\n", "\\n")
    else:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str

    def json(self) -> Any:
        """Decode ``data`` as JSON (raises ``json.JSONDecodeError``, a ValueError)."""
        return json.loads(self.data)


class SSEParser:
    """Incremental SSE parser that reads a stream the way ViewComfy's Python client does.

    Lines end with LF, CRLF or CR (a CR at a chunk boundary waits for the next chunk). Each line is
    stripped; ``event:`` sets the type, ``data:`` REPLACES the data (the client does not append),
    ``id:``/``retry:``/unknown fields and ``:`` comments are ignored. A blank line dispatches the event
    if it has non-empty data; the type then resets to ``message``. An unterminated event at EOF is
    dropped, as in the SSE spec and the client.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = "message"
        self._data = ""
        self._started = False

    def feed(self, chunk: str | bytes) -> list[SSEEvent]:
        """Add a chunk (bytes may split a UTF-8 sequence or a CRLF); return the events it completed."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        events: list[SSEEvent] = []
        while True:
            match = _LINE_BREAKS.search(self._buffer)
            if match is None:
                break
            # A lone CR at the very end may be the first half of a CRLF split across chunks.
            if match.group() == "\r" and match.end() == len(self._buffer):
                break
            line = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        """End of stream: whatever was not completed by a blank line is dropped (spec and client agree)."""
        self._decoder.decode(b"", final=True)
        self._buffer, self._event, self._data = "", "message", ""

    def _line(self, raw: str) -> SSEEvent | None:
        line = raw.strip()
        if not line:
            event = SSEEvent(self._event, self._data) if self._data else None
            self._event, self._data = "message", ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "event":
            self._event = value.strip() or "message"
        elif name == "data":
            self._data = value.strip()
        return None


# --------------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------------


def viewcomfy_key(node_id: str | int, input_name: str) -> str:
    """``"6", "text"`` -> ``"6-inputs-text"``."""
    return f"{node_id}{PARAM_KEY_SEPARATOR}{input_name}"


def split_viewcomfy_key(key: str) -> tuple[str, str] | None:
    """``"6-inputs-text"`` -> ``("6", "text")``; ``None`` for context keys (``_...``) and anything else.

    Splits at the FIRST separator: node ids are simple (``"12"``, ``"12:3"``), input names are freer.
    """
    if not key or key.startswith("_"):
        return None
    node_id, sep, input_name = key.partition(PARAM_KEY_SEPARATOR)
    if not sep or not node_id or not input_name:
        return None
    return node_id, input_name


def parse_params_field(raw: str | None) -> dict[str, Any]:
    """The ``params`` form field (one JSON string) -> dict. Absent or ``""`` -> ``{}``."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = safe_json_loads(raw)  # ValueError when nested too deep: no RecursionError
    except ValueError as exc:
        raise InvalidRequest(
            f"params must be a JSON object encoded as a string; it is not valid JSON ({exc})", field="params"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f'params must be a JSON object like {{"6-inputs-text": "a cat"}}, got {_json_type(value)}',
            field="params",
        )
    return value


def parse_workflow_api_field(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``workflow_api`` field -> dict, or ``None`` when absent (``""``/``null``, as the client sends)."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise InvalidRequest(
            f"workflow_api must be a JSON object (an API-format workflow), got {_json_type(raw)}",
            field="workflow_api",
        )
    if not raw.strip():
        return None
    try:
        value = safe_json_loads(raw)  # ValueError when nested too deep: no RecursionError
    except ValueError as exc:
        raise InvalidRequest(
            f"workflow_api must be an API-format workflow as a JSON string; it is not valid JSON ({exc})",
            field="workflow_api",
        ) from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"workflow_api must be a JSON object (an API-format workflow), got {_json_type(value)}",
            field="workflow_api",
        )
    return value


def parse_bool_field(raw: str | bool | None, name: str = "logs") -> bool:
    """``"true"``/``"false"`` (any case), ``"1"``/``"0"``, real bools; absent or ``""`` -> False."""
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, str):
        value = raw.strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off", ""):
            return False
    raise InvalidRequest(f'{name} must be "true" or "false", got {raw!r}', field=name)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------------
# Incoming request (server side)
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class InferFile:
    """One uploaded file part. ``filename`` is already a safe basename; ``key`` is the parameter key."""

    key: str
    filename: str
    content: bytes
    content_type: str | None = None


@dataclass(slots=True)
class InferRequest:
    logs: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    workflow_api: dict[str, Any] | None = None
    files: dict[str, InferFile] = field(default_factory=dict)
    content_type: Literal["urlencoded", "multipart", "json"] = "urlencoded"
    #: Every other text field (the current API's prompt_id, view_comfy_api_url, sid; context otherwise).
    fields: dict[str, str] = field(default_factory=dict)


_DEFAULT_MAX_FIELD_BYTES = 32 * 1024 * 1024  # workflow_api can be far larger than Starlette's 1 MiB default


async def parse_infer_form(
    request: Request,
    *,
    max_files: int = 64,
    max_file_bytes: int | None = None,
    max_field_bytes: int = _DEFAULT_MAX_FIELD_BYTES,
) -> InferRequest:
    """Parse a ViewComfy infer request the way ViewComfy's server accepts it.

    ``application/x-www-form-urlencoded`` (the Python client with no files), ``multipart/form-data``
    (with files) and, as an extra, ``application/json`` with the same field names (``params`` and
    ``workflow_api`` may then be objects or JSON strings, ``logs`` a bool). Unknown text fields are
    ignored (clients send context along); file parts are keyed by their parameter key and read into
    memory. Raises ``InvalidRequest`` / ``PayloadTooLarge``.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return await _parse_json_body(request, max_field_bytes)
    if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise InvalidRequest(
            "a ViewComfy request must be multipart/form-data or application/x-www-form-urlencoded "
            f"(or application/json), got {media_type or 'no content-type'!r}"
        )
    try:
        form = await request.form(max_files=max_files, max_fields=1000, max_part_size=max_field_bytes)
    except HTTPException as exc:  # Starlette wraps multipart errors when running inside an app
        raise _form_error(str(exc.detail)) from None
    except Exception as exc:  # MultiPartException outside an app, or a malformed body
        raise _form_error(str(getattr(exc, "message", exc))) from None

    try:
        text: dict[str, str] = {}
        files: dict[str, InferFile] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key in FORM_FIELDS:
                    raise InvalidRequest(f"{key!r} must be a text field, not a file", field=key)
                if key in files:
                    raise InvalidRequest(f"more than one file for parameter {key!r}", field=key)
                if max_file_bytes is not None and (value.size or 0) > max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {key!r} is larger than {max_file_bytes} bytes", field=key, limit=max_file_bytes
                    )
                content = await value.read()
                if max_file_bytes is not None and len(content) > max_file_bytes:
                    raise PayloadTooLarge(
                        f"file {key!r} is larger than {max_file_bytes} bytes", field=key, limit=max_file_bytes
                    )
                files[key] = InferFile(
                    key=key,
                    filename=sanitize_filename(value.filename or "", default=sanitize_filename(key, "upload")),
                    content=content,
                    content_type=value.content_type,
                )
            else:
                text[key] = value
    finally:
        await form.close()

    return InferRequest(
        logs=parse_bool_field(text.get("logs")),
        params=parse_params_field(text.get("params")),
        workflow_api=parse_workflow_api_field(text.get("workflow_api")),
        files=files,
        content_type="multipart" if media_type == "multipart/form-data" else "urlencoded",
        fields={k: v for k, v in text.items() if k not in FORM_FIELDS},
    )


def _form_error(message: str) -> InvalidRequest:
    if "maximum size" in message or "Too many" in message:
        return PayloadTooLarge(f"request form too large: {message}")
    return InvalidRequest(f"malformed form body: {message}")


async def _parse_json_body(request: Request, max_bytes: int) -> InferRequest:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"JSON body is larger than {max_bytes} bytes", limit=max_bytes)
    try:
        payload = safe_json_loads(body) if body.strip() else {}
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidRequest(f"JSON body must be an object with params/workflow_api/logs, got {_json_type(payload)}")
    raw_params = payload.get("params")
    if isinstance(raw_params, dict):
        params = raw_params
    elif raw_params is None or isinstance(raw_params, str):
        params = parse_params_field(raw_params)
    else:
        raise InvalidRequest(f"params must be a JSON object, got {_json_type(raw_params)}", field="params")
    return InferRequest(
        logs=parse_bool_field(payload.get("logs")),
        params=params,
        workflow_api=parse_workflow_api_field(payload.get("workflow_api")),
        files={},
        content_type="json",
        fields={k: v for k, v in payload.items() if k not in FORM_FIELDS and isinstance(v, str)},
    )
