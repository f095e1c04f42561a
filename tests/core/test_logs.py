"""Log records are written by one thread, never by the caller (the event loop), in order, all of them."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from core.logs import log_off_the_loop


class Recording(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def write(self, text: str) -> int:
        self.threads.add(threading.get_ident())
        return super().write(text)


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_records_are_written_by_the_writer_thread_in_order(root_restored: None) -> None:
    out = Recording()
    writer = log_off_the_loop("info", out)
    log = logging.getLogger("comfygate.test.access")  # uvicorn's own may have been silenced by another test
    for i in range(200):
        log.info('%s - "GET /api/image/%d.png HTTP/1.1" %d', "127.0.0.1:5000", i, 200)
    logging.getLogger("comfygate").debug("below the level: dropped")
    writer.stop()  # writes what is queued, then ends the thread
    lines = out.getvalue().splitlines()
    assert len(lines) == 200 and all(f"/api/image/{i}.png" in line for i, line in enumerate(lines))
    assert "INFO comfygate.test.access:" in lines[0] and "below the level" not in out.getvalue()
    assert threading.get_ident() not in out.threads and len(out.threads) == 1


def test_a_record_with_mutable_arguments_shows_them_as_they_were_when_logged(root_restored: None) -> None:
    """Immutable arguments are formatted by the writer thread; a mutable one at once, by the caller."""
    out = Recording()
    writer = log_off_the_loop("info", out)
    log = logging.getLogger("comfygate.test.later")
    seen = ["first"]
    log.info("items %s, count %d, ratio %.1f", seen, 3, 0.5)
    seen.append("added after logging")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed %s", "here")
    writer.stop()
    text = out.getvalue()
    assert "items ['first'], count 3, ratio 0.5" in text and "added after logging" not in text
    assert "failed here" in text and "ValueError: boom" in text
