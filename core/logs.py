"""Logging that never writes from the event loop.

A log line written to stderr is a blocking write (a pipe to a journal or a container runtime can stall
it); uvicorn writes its access line before each response's headers, so on the loop it sat on every
request's path (~0.2 ms per request in the latency benchmark, BENCHMARKS.md issue 18). Here the loop
only makes a record and puts it on a queue (info and below held for a few ms and handed over in a batch,
so the thread is not woken in the middle of the next request); one thread formats and writes them, in
order. A record whose arguments are all immutable (uvicorn's access line: strings and a number) is
formatted by that thread (QueueHandler formats on the caller's thread, ~15 µs); any other is formatted at
once, as the standard handler does, so a later change to a mutable argument never shows in its line.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
from logging.handlers import QueueHandler, QueueListener

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Records made on the event loop reach the writer thread this much later, together. Woken for each one (an
# access line per request), the thread took the GIL back from the loop in the middle of the next request's
# work: ``--log-level warning`` (no access lines) gained ~0.3 ms on the latency benchmark's /ws path.
HAND_OVER_S = 0.02
_IMMUTABLE = (str, int, float, bool, type(None))


class _LaterFormatting(QueueHandler):
    def __init__(self, records: queue.SimpleQueue[logging.LogRecord]) -> None:
        super().__init__(records)
        self._held: list[logging.LogRecord] = []
        self._holding = threading.Lock()  # loops in several threads (tests, the demo's emulator) share it

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        args = record.args
        if record.exc_info is None and (not args or (type(args) is tuple and all(type(a) in _IMMUTABLE for a in args))):
            return record  # nothing in it can change before the writer thread formats it
        return super().prepare(record)

    def enqueue(self, record: logging.LogRecord) -> None:
        """On an event loop, held for ``HAND_OVER_S`` and handed over with the others made meanwhile; a warning
        or worse goes at once (behind what is held)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a thread without a loop
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            with self._holding:
                self._hand_over()
                self.queue.put_nowait(record)
            return
        with self._holding:
            if not self._held:
                loop.call_later(HAND_OVER_S, self.flush)
            self._held.append(record)

    def flush(self) -> None:
        with self._holding:
            self._hand_over()

    def _hand_over(self) -> None:
        held, self._held = self._held, []
        for record in held:
            self.queue.put_nowait(record)


class LogWriter:
    """The writer thread (``QueueListener``) and the handler feeding it: ``stop()`` hands over what is held,
    then writes everything queued and ends the thread."""

    def __init__(self, handler: _LaterFormatting, listener: QueueListener) -> None:
        self.handler = handler
        self.listener = listener

    def stop(self) -> None:
        self.handler.flush()
        self.listener.stop()


def log_off_the_loop(level: str | int, stream: object = None) -> LogWriter:
    """Send every record of the root logger through a queue to one writer thread; ``stop()`` the returned
    writer at exit (it writes what is queued first)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    feeder = _LaterFormatting(records)
    root.addHandler(feeder)
    # The logging HOWTO's "Optimization": no caller frame walk, thread or process lookups per record (the
    # format names none of them).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.setLevel(level.upper() if isinstance(level, str) else level)
    listener.start()
    return LogWriter(feeder, listener)
