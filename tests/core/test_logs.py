"""Log records are written by one thread, never by the caller (the event loop), in order, all of them."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from core.logs import HAND_OVER_S, log_off_the_loop


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


def test_records_made_on_the_loop_reach_the_writer_together_later(root_restored: None) -> None:
    """The writer thread is not woken for each access line in the middle of the next request: the loop's
    records are held for HAND_OVER_S; a warning goes at once, behind them; stop() hands over what is held."""
    out = Recording()
    writer = log_off_the_loop("info", out)
    log = logging.getLogger("comfygate.test.held")

    async def on_the_loop() -> None:
        log.info("first %d", 1)
        log.info("second %d", 2)
        assert writer.listener.queue.qsize() == 0  # type: ignore[attr-defined]  # held: the thread sleeps on
        await asyncio.sleep(HAND_OVER_S * 3)
        deadline = time.monotonic() + 5
        while "second 2" not in out.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110 (another thread writes)
            await asyncio.sleep(0.01)
        assert "first 1" in out.getvalue() and "second 2" in out.getvalue()  # handed over by the loop's timer
        log.info("third %d", 3)
        log.warning("a warning")  # at once, behind the third
        log.info("fourth %d", 4)  # held; stop() writes it

    asyncio.run(on_the_loop())
    writer.stop()
    lines = out.getvalue().splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["first 1", "second 2", "third 3", "a warning", "fourth 4"]
    assert threading.get_ident() not in out.threads
