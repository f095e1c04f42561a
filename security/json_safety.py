"""JSON values ComfyGate can store and answer with: no lone surrogates, no NaN/Infinity, no huge numbers.

Why: Python's ``json`` accepts ``"\\ud800"`` (a lone UTF-16 surrogate, not valid Unicode), ``NaN``,
``Infinity`` and ``1e400`` (which becomes infinity). None of them can be written back as UTF-8 JSON, so
a task holding one answers 500 on every listing it appears in, forever. They are refused where JSON
enters (422 naming the field), and whatever is read back from disk is scrubbed.

Cheap for ordinary bodies: :func:`needs_scan` is one regular-expression search over the raw bytes; only a
body that might hold such a value is parsed (again) and walked to name the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from core.errors import UnsafeJSONValue

MAX_INT_DIGITS = 4300  # Python's own int/str conversion limit (sys.int_info.default_max_str_digits)

# \uD800-\uDFFF escapes (pairs included: a pair is checked properly by the walk).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
# After every digit became 0: exponents of three digits or more, and digit runs of 300 or more.
_BIG_NUMBERS = (b"e000", b"E000", b"e+000", b"E+000", b"0" * 300)
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """A JSON text holding a value ComfyGate refuses; ``field`` is where (dotted path, "body" for the top)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def as_error(self) -> UnsafeJSONValue:
        """The 422 an API answers with."""
        return UnsafeJSONValue(str(self), field=self.field)


class _Marker:
    __slots__ = ("text", "problem")

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem


def _constant(text: str) -> _Marker:
    return _Marker(text, f"{text} is not a JSON number; send a finite number (or a string)")


def _float(text: str) -> float | _Marker:
    value = float(text)
    if math.isinf(value):
        return _Marker(text, f"the number {_short(text)} is too large for a 64-bit float")
    return value


def _int(text: str) -> int | _Marker:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Marker(text, f"an integer with {digits} digits (the limit is {MAX_INT_DIGITS})")
    return int(text)


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:20]}…"


def may_hold_surrogates(text: str) -> bool:
    """True when parsing ``text`` may give a lone surrogate (it has a \\uD800-\\uDFFF escape)."""
    return "\\u" in text and _SURROGATE_ESCAPE.search(text.encode("utf-8", "surrogatepass")) is not None


def needs_scan(raw: bytes | str) -> bool:
    """True when ``raw`` might hold a value :func:`find_unsafe` refuses (false positives are fine)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data) is not None:
        return True
    if b"NaN" in data or b"Infinity" in data:
        return True
    flat = data.translate(_ZERO_DIGITS)  # substring searches (memchr-fast) instead of a regex scan
    return any(pattern in flat for pattern in _BIG_NUMBERS)


def _path(parts: list[str | int]) -> str:
    text = ".".join(str(p) for p in parts) or "body"
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)  # a key may be the culprit


def _surrogate_problem(text: str) -> str | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        f"holds a lone UTF-16 surrogate (\\u{ord(match.group()):04x}) at character {match.start()}, "
        "which is not valid Unicode; send the character itself, or a complete surrogate pair"
    )


def find_unsafe(value: Any, root: str | None = None) -> UnsafeJSON | None:
    """The first refused value in a parsed JSON value (iterative: no recursion), or None."""
    stack: list[tuple[list[str | int], Any]] = [([root] if root else [], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                problem = _surrogate_problem(key) if isinstance(key, str) else None
                if problem:
                    return UnsafeJSON(_path([*path, key]), f"the key {problem}")
                stack.append(([*path, key], child))
        elif isinstance(item, list | tuple):
            stack.extend(([*path, index], item[index]) for index in range(len(item) - 1, -1, -1))
        else:
            problem = _scalar_problem(item)
            if problem:
                return UnsafeJSON(_path(path), problem)
    return None


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return _surrogate_problem(item)
    if isinstance(item, _Marker):
        return item.problem
    if isinstance(item, float) and not math.isfinite(item):
        return f"{item!r} is not a finite number"
    return None


def strict_loads(text: str | bytes, root: str | None = None) -> Any:
    """``json.loads`` that raises :class:`UnsafeJSON` for values ComfyGate cannot store or answer with.

    Plain ``ValueError`` (``json.JSONDecodeError``) for text that is not JSON at all.
    """
    value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    problem = find_unsafe(value, root)
    if problem is not None:
        raise problem
    return value


def check_body(raw: bytes) -> UnsafeJSON | None:
    """The refused value of a raw JSON body, or None (also None when it is not JSON: the app says so)."""
    if not needs_scan(raw):
        return None
    try:
        strict_loads(raw)
    except UnsafeJSON as exc:
        return exc
    except (ValueError, RecursionError):
        return None
    return None


def scrub(value: Any) -> Any:
    """A copy of a JSON-like value that can always be written as JSON: lone surrogates become U+FFFD,
    non-finite floats become None. For values read back from disk or about to be echoed in an error."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
