"""Job labels (the contract's ``metadata``): string pairs given at submit, matched by list filters."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from api.v2.errors import V2Error

MAX_LABELS = 16
MAX_FILTERS = 3
MAX_VALUE = 256
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_FILTER = re.compile(r"^metadata\[(.*)\]$")


def printable(text: str) -> bool:
    """No control characters and no bidirectional embeddings, overrides or isolates."""
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


def check_labels(raw: Any) -> dict[str, str]:
    """The labels of a submit, or 422 ``metadata_invalid`` naming the key (or the count) at fault."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise V2Error(
            422, "metadata_invalid", '\'metadata\' must be an object of string labels, like {"client": "acme"}'
        )
    if len(raw) > MAX_LABELS:
        raise V2Error(422, "metadata_invalid", f"'metadata' has {len(raw)} labels; at most {MAX_LABELS}")
    for key, value in raw.items():
        if not KEY.match(key):
            raise V2Error(
                422,
                "metadata_invalid",
                f"metadata key {key!r}: 1-63 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
                {"key": key},
            )
        if not isinstance(value, str) or len(value) > MAX_VALUE or not printable(value):
            raise V2Error(
                422,
                "metadata_invalid",
                f"metadata {key!r}: the value must be a string of at most {MAX_VALUE} printable characters",
                {"key": key},
            )
    return dict(raw)


def parse_filters(params: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``metadata[k]=v`` query pairs: at most 3, each key once (else 400 ``invalid_metadata_filter``)."""
    filters: dict[str, str] = {}
    for name, value in params:
        match = _FILTER.match(name)
        if match is None:
            continue
        label = match.group(1)
        if label in filters or len(filters) >= MAX_FILTERS or not KEY.match(label) or not printable(value):
            raise V2Error(
                400,
                "invalid_metadata_filter",
                f"metadata filters: at most {MAX_FILTERS}, each key once, keys like metadata keys, printable values"
                f" (refused: {name!r})",
            )
        filters[label] = value
    return filters
