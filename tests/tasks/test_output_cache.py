"""The in-memory copies of just-finished outputs: bounded in total and per entry, least recently used first."""

from __future__ import annotations

import hashlib
import os
from email.utils import formatdate
from pathlib import Path

from tasks.output_cache import OutputCache


def test_entries_are_bounded_in_total_and_each() -> None:
    cache = OutputCache(max_bytes=10, max_entry=4)
    cache.put("big", b"12345", 1.0)
    assert cache.get("big") is None and cache.size == 0  # above max_entry: never kept
    for key in "abc":
        cache.put(key, b"1234", 1.0)
    assert cache.get("a") is None and cache.size == 8  # the oldest went
    assert cache.get("b") is not None  # now the most recently used
    cache.put("d", b"1234", 1.0)
    assert cache.get("c") is None and cache.get("b") is not None and len(cache) == 2
    cache.discard("b")
    assert cache.size == 4 and cache.get("b") is None


def test_off_when_it_has_no_room() -> None:
    cache = OutputCache(max_bytes=0, max_entry=1024)
    cache.put("a", b"x", 1.0)
    assert cache.get("a") is None and not cache.fits(1)


def test_validators_are_the_ones_a_file_response_derives_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"pixels")
    stat = os.stat(path)
    cache = OutputCache()
    cache.put("x.png", b"pixels", stat.st_mtime)
    item = cache.get("x.png")
    assert item is not None
    expected = hashlib.md5(f"{stat.st_mtime}-{stat.st_size}".encode(), usedforsecurity=False).hexdigest()
    assert item.etag == f'"{expected}"' and item.last_modified == formatdate(stat.st_mtime, usegmt=True)
