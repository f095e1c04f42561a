"""Logging that never writes from the event loop.

A log line written to stderr is a blocking write (a pipe to a journal or a container runtime can stall
it); uvicorn writes its access line before each response's headers, so on the loop it sat on every
request's path (~0.2 ms per request in the latency benchmark, BENCHMARKS.md issue 18). Here the loop
only makes a record and puts it on a queue; one thread formats and writes them, in order. A record whose
arguments are all immutable (uvicorn's access line: strings and a number) is formatted by that thread
(QueueHandler formats on the caller's thread, ~15 µs); any other is formatted at once, as the standard
handler does, so a later change to a mutable argument never shows in its line.
"""

from __future__ import annotations

import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_IMMUTABLE = (str, int, float, bool, type(None))


class _LaterFormatting(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        args = record.args
        if record.exc_info is None and (not args or (type(args) is tuple and all(type(a) in _IMMUTABLE for a in args))):
            return record  # nothing in it can change before the writer thread formats it
        return super().prepare(record)


def log_off_the_loop(level: str | int, stream: object = None) -> QueueListener:
    """Send every record of the root logger through a queue to one writer thread; ``stop()`` the returned
    listener at exit (it writes what is queued first)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_LaterFormatting(records))
    # The logging HOWTO's "Optimization": no caller frame walk, thread or process lookups per record (the
    # format names none of them).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root.setLevel(level.upper() if isinstance(level, str) else level)
    listener.start()
    return listener
