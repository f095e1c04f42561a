"""One real gate and emulator per hostile module (keys off and on), memory checked at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Gate
from tests.hostile.support import KEY, MEMORY_GROWTH_LIMIT_MB, rss_mb, settle, start


@pytest.fixture(scope="module", params=["keys off", "keys on"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    keys = {"api_keys": [KEY]} if request.param == "keys on" else {}
    for gate, _ in start(tmp_path_factory.mktemp("hostile"), **keys):
        before = rss_mb()
        yield gate
        settle(gate)  # every canary ran to the end: nothing lost, nothing hanging
        grown = rss_mb() - before
        assert grown < MEMORY_GROWTH_LIMIT_MB, f"memory grew by {grown:.0f} MB over the module"
