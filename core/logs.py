"""Logging that never writes from the event loop.

A log line written to stderr is a blocking write (a pipe to a journal or a container runtime can stall
it); uvicorn writes its access line before each response's headers, so on the loop it sat on every
request's path (~0.2 ms per request in the latency benchmark, BENCHMARKS.md issue 18). Here the loop
only formats a record and puts it on a queue; one thread writes them, in order.
"""

from __future__ import annotations

import logging
import queue
import sys
from logging.handlers import QueueHandler, QueueListener

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    root.addHandler(QueueHandler(records))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    listener.start()
    return listener
