"""Server-Sent Events as ViewComfy speaks them: one-line events out, and the client's incremental parser.

Both ends must agree with ViewComfy's published Python client: ``data:`` is ONE line (the client
*overwrites* data on each ``data:`` line and strips whitespace around it), ``: ...`` comments are safe
keepalives. See ``/work/shared/viewcomfy-protocol.md``.

The parser is linear in the stream's size: each chunk is scanned once, and a line still waiting for its
end is kept as a list of pieces joined once when it ends (a 16 MB ``prompt_result`` line arrives in a few
hundred chunks, and rescanning the buffer for each cost seconds of CPU on the event loop).
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

__all__ = ["SSE_KEEPALIVE", "SSEEvent", "SSEParser", "sse_event"]

#: An SSE comment: ignored by every client, keeps proxies and load balancers from closing an idle stream.
SSE_KEEPALIVE = b": keepalive\n\n"

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
        self._pieces: list[str] = []  # the current line so far, never rescanned
        self._cr_pending = False  # the current line ended with a CR at a chunk end: maybe half a CRLF
        self._event = "message"
        self._data = ""
        self._started = False

    def feed(self, chunk: str | bytes) -> list[SSEEvent]:
        """Add a chunk (bytes may split a UTF-8 sequence or a CRLF); return the events it completed."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        events: list[SSEEvent] = []
        if self._cr_pending and text:
            self._cr_pending = False
            text = text.removeprefix("\n")
            self._end_line(events)
        position = 0
        for match in _LINE_BREAKS.finditer(text):
            self._pieces.append(text[position : match.start()])
            position = match.end()
            if match.group() == "\r" and position == len(text):
                self._cr_pending = True  # decided by the next chunk's first character
                return events
            self._end_line(events)
        if position < len(text):
            self._pieces.append(text[position:])
        return events

    def close(self) -> None:
        """End of stream: whatever was not completed by a blank line is dropped (spec and client agree)."""
        self._decoder.decode(b"", final=True)
        self._pieces, self._cr_pending, self._event, self._data = [], False, "message", ""

    def _end_line(self, events: list[SSEEvent]) -> None:
        line = "".join(self._pieces)
        self._pieces.clear()
        event = self._line(line)
        if event is not None:
            events.append(event)

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
