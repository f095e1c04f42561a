"""Test equipment that may be missing (../shared recordings, a browser, a dev package): skip locally, FAIL in CI.

On a developer's machine a test whose equipment is absent skips with the reason. With ``CI=true`` the
same absence is a failure: CI installs everything (``.ci/run``), so a skip there would hide lost coverage.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, *, module_level: bool = False) -> NoReturn:
    """Skip (locally) or fail (CI=true) because ``reason``; at module level the whole file goes."""
    if IN_CI:
        pytest.fail(f"{reason} — CI=true: the tests' equipment must be there (.ci/run installs it)", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def import_or_missing(name: str, reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` that fails in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(reason or f"{name} is not installed ({exc})", module_level=True)
