"""Redis replies as the Python values cluster mode uses: str, lists of str, stream entries.

The clients are made without ``decode_responses`` (task records and events stay bytes until read), while
redis-py types each reply as every shape any client could get (``bytes | str | ...``, or ``Any``). These
helpers say once which shape a command returns here and check it, instead of a cast at every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Fields = dict[bytes, bytes]  # a stream entry's fields
Entry = tuple[str, Fields]  # (entry id, fields)


def text(value: Any) -> str:
    """A string reply (bytes, decoded as UTF-8)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {type(value).__name__}")


def text_or_none(value: Any) -> str | None:
    """A string reply that may be nil (a missing key or hash field)."""
    return None if value is None else text(value)


def texts(values: Iterable[Any]) -> list[str]:
    """An array of strings (ZRANGE, SMEMBERS, ...)."""
    return [text(v) for v in values]


def field(fields: Mapping[bytes, bytes], name: bytes) -> str:
    """One field of a stream entry, "" when it has none (older entries lack newer fields)."""
    raw = fields.get(name)
    return raw.decode() if raw is not None else ""


def entries(answer: Any) -> list[Entry]:
    """The entries of an XRANGE reply (nil: none), ids decoded; fields as redis-py's client gives them (a dict)
    or as Redis sends them (a flat list: field, value, ...)."""
    return [(text(entry_id), _fields(fields)) for entry_id, fields in answer or ()]


def _fields(fields: Any) -> Fields:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}


def stream_entries(answer: Any) -> list[Entry]:
    """The entries of an XREAD reply over one or more streams (nil: none came within the block): a map of
    stream → entries (RESP3, as redis-py 8 speaks by default) or a list of [stream, entries] (RESP2)."""
    streams = answer.values() if isinstance(answer, dict) else (found for _stream, found in answer or ())
    return [entry for found in streams for entry in entries(found)]
