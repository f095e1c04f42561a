"""Durable task store: every task and its history in SQLite, so a restart of ComfyGate loses nothing.

The in-memory ``TaskStore`` stays the index every request reads; this module only mirrors it to disk.
Writes come from task observers (created / status / finished), are serialised on the event loop (a
small JSON snapshot) and handed to one writer thread that batches them into a transaction: the event
loop never waits for the disk. Changes are gathered for ``DEFER_S`` and handed over together, so the
writer thread (and its hold on the GIL) does not wake while the loop handles ComfyUI's answer and the
run's first events, pushes a finished task to its listeners and serves its output; a quick task's
creation, "running" and "finished" become one row write.

The workflow and the params, the big fields that never change after submission, live in their own table
(``task_inputs``), written once when the task is created: a status change rewrites only the task's small
``tasks`` row, never a 50 MB prompt (SQLite rewrites a whole row on update). The workflow is read back
on demand, so finished tasks need not keep it in memory. Rows of older versions (workflow and params in
``tasks``) are read as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.task import Task, TaskStatus
from security.json_safety import may_hold_surrogates, scrub

log = logging.getLogger("comfygate.taskdb")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    status      TEXT NOT NULL,
    final       INTEGER NOT NULL,
    record      TEXT NOT NULL,
    workflow    TEXT  -- written by older versions only: task_inputs holds it now
);
CREATE INDEX IF NOT EXISTS tasks_final_created ON tasks (final, created_at);
CREATE TABLE IF NOT EXISTS task_inputs (
    task_id     TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    params      TEXT NOT NULL
);
"""

# Fields of Task kept in the record column; the workflow and params are in task_inputs.
INPUT_FIELDS = ("workflow", "params")
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Task) if f.name not in INPUT_FIELDS)
BATCH = 500  # rows per transaction at most
# Status changes wait this long on the loop before the writer thread gets them: a quick run's whole life
# (ComfyUI's trivial workflow: ~6 ms to success, ~5 ms more for its image) is one write, not woken during it.
# (5 ms split such a run in two, the hand-over landing mid-run: /ws -0.15 to -0.34 ms at 30 ms, A/B.)
DEFER_S = 0.03
PRUNE_EVERY = 200  # finished writes between two trims of old finished rows


def task_record(task: Task) -> str:
    """A task (minus its workflow and params) as JSON: what one ``tasks`` row stores."""
    body = {name: getattr(task, name) for name in RECORD_FIELDS}
    body["status"] = task.status.value
    return json.dumps(body, default=str, separators=(",", ":"))


def read_json(text: str) -> Any:
    """A stored JSON text, made answerable: a row written before json_safety refused lone surrogates
    may hold one, and it would make every listing that shows the task fail (U+FFFD instead)."""
    value = json.loads(text)
    return scrub(value) if may_hold_surrogates(text) else value


def task_from_record(record: str, workflow: str | None, params: str | None = None) -> Task | None:
    """The task of one row, or None (logged) when the row cannot be read: one bad row loses one task."""
    try:
        body = read_json(record)
        known = {k: v for k, v in body.items() if k in RECORD_FIELDS}
        known["status"] = TaskStatus(known.get("status", "failed"))
        known["params"] = read_json(params) if params else body.get("params") or {}  # older rows: in the record
        return Task(workflow=read_json(workflow) if workflow else {}, **known)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("skipped an unreadable task row (%s): %.200s", exc, record)
        return None


def _row(task: Task, inputs: tuple[str, str] | None) -> tuple[Any, ...]:
    return (task.task_id, task.created_at, task.status.value, task.status.final, task_record(task), inputs)


def _collect(rows: list[tuple[Any, ...]], batch: dict[str, tuple[Any, ...]], inputs: dict[str, tuple[str, str]]) -> int:
    """Add ``rows`` to a transaction's batch (a task's latest row wins); returns how many are final."""
    finished = 0
    for task_id, created_at, status, final, record, task_inputs in rows:
        batch[task_id] = (task_id, created_at, status, int(final), record)
        if task_inputs is not None:
            inputs[task_id] = task_inputs
        finished += int(final)
    return finished


class _Flush:
    """A marker in the write queue: set once every write queued before it is on disk."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Stop:
    pass


class TaskDatabase:
    """One SQLite file (WAL), one writer thread, and a read connection for loads on demand."""

    def __init__(self, path: Path, history_limit: int) -> None:
        self.path = Path(path)
        self.history_limit = history_limit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[str, Task] = {}  # changed since the last hand-over (DEFER_S), on the loop's side
        self._pending_inputs: dict[str, tuple[str, str]] = {}  # of the pending tasks created meanwhile
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._thread: threading.Thread | None = None
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.written = 0  # rows written, for tests and metrics
        self.errors = 0

    # --- lifecycle (blocking: call through asyncio.to_thread) ------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.close()
        self._read = self._connect()
        self._thread = threading.Thread(target=self._writer, name="comfygate-taskdb", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def close(self) -> None:
        """Write everything still queued, then stop the writer."""
        self.flush()
        if self._thread is not None:
            self._queue.put(_Stop())
            self._thread.join(30)
            self._thread = None
        if self._read is not None:
            self._read.close()
            self._read = None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every change observed so far is on disk (blocking: not on the event loop)."""
        if self._thread is None:
            return True
        marker = _Flush()
        loop = self._loop
        if loop is not None and loop.is_running() and threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._hand_over, marker)  # the deferred changes first, on their thread
        else:
            self._hand_over(marker)
        return marker.done.wait(timeout)

    # --- reading -----------------------------------------------------------------------------------
    def load(self) -> Iterator[Task]:
        """Every unfinished task (with its workflow) and the newest ``history_limit`` finished ones (without).

        Oldest first, one at a time: a store that compacts finished tasks as they arrive never holds the
        whole history as objects (100,000 of them would take ~300 MB at once, never given back to the OS).
        """
        assert self._read is not None
        with self._read_lock:
            unfinished = self._read.execute(
                "SELECT t.record, COALESCE(i.workflow, t.workflow), i.params FROM tasks t "
                "LEFT JOIN task_inputs i USING (task_id) WHERE t.final = 0 ORDER BY t.created_at"
            )
            finished = self._read.execute(
                "SELECT t.record, NULL, i.params FROM (SELECT task_id, record, created_at FROM tasks WHERE final = 1 "
                "ORDER BY created_at DESC LIMIT ?) t LEFT JOIN task_inputs i USING (task_id) ORDER BY t.created_at",
                (self.history_limit,),
            )
            rows = heapq.merge(
                (t for r, w, p in unfinished if (t := task_from_record(r, w, p)) is not None),
                (t for r, _, p in finished if (t := task_from_record(r, None, p)) is not None),
                key=lambda t: t.created_at,
            )
            yield from rows

    def load_workflow(self, task_id: str) -> dict[str, Any] | None:
        self.flush()
        assert self._read is not None
        with self._read_lock:
            row = self._read.execute(
                "SELECT COALESCE(i.workflow, t.workflow) FROM tasks t LEFT JOIN task_inputs i USING (task_id) "
                "WHERE t.task_id = ?",
                (task_id,),
            ).fetchone()
        return read_json(row[0]) if row and row[0] else None

    def count(self) -> int:
        self.flush()
        assert self._read is not None
        with self._read_lock:
            return int(self._read.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    # --- writing -----------------------------------------------------------------------------------
    def observe(self, task: Task, change: str) -> None:
        """Task observer: snapshot on the event loop (cheap), write on the writer thread."""
        inputs = None
        if change == "created":  # the only time the workflow and params are written: serialised now, as
            # the task may drop its workflow from memory once finished, before the hand-over
            inputs = (json.dumps(task.workflow, separators=(",", ":")), json.dumps(task.params, default=str))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (tools, tests): at once
            self._queue.put(_row(task, inputs))
            return
        if not self._pending:
            self._loop, self._loop_thread = loop, threading.get_ident()
            loop.call_later(DEFER_S, self._hand_over)
        self._pending[task.task_id] = task
        if inputs is not None:
            self._pending_inputs[task.task_id] = inputs

    def _hand_over(self, marker: _Flush | None = None) -> None:
        """The deferred changes (their latest state) to the writer thread, as one item; then ``marker``."""
        if self._pending:
            pending, self._pending = self._pending, {}
            inputs, self._pending_inputs = self._pending_inputs, {}
            self._queue.put([_row(task, inputs.get(task_id)) for task_id, task in pending.items()])
        if marker is not None:
            self._queue.put(marker)

    def _writer(self) -> None:
        conn = self._connect()
        finished_since_prune = 0
        try:
            while True:
                item = self._queue.get()
                batch: dict[str, tuple[Any, ...]] = {}
                inputs: dict[str, tuple[str, str]] = {}
                markers: list[_Flush] = []
                stop = False
                while True:
                    if isinstance(item, _Stop):
                        stop = True
                    elif isinstance(item, _Flush):
                        markers.append(item)
                    else:
                        finished_since_prune += _collect(item if isinstance(item, list) else [item], batch, inputs)
                    if stop or len(batch) >= BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._write(conn, batch, inputs)
                if finished_since_prune >= PRUNE_EVERY or (stop and finished_since_prune):
                    self._prune(conn)
                    finished_since_prune = 0
                for marker in markers:
                    marker.done.set()
                if stop:
                    return
        finally:
            conn.close()

    def _write(
        self, conn: sqlite3.Connection, batch: dict[str, tuple[Any, ...]], inputs: dict[str, tuple[str, str]]
    ) -> None:
        try:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO tasks (task_id, created_at, status, final, record) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET status = excluded.status, final = excluded.final, "
                "record = excluded.record",
                list(batch.values()),
            )
            if inputs:
                conn.executemany(
                    "INSERT OR IGNORE INTO task_inputs (task_id, workflow, params) VALUES (?, ?, ?)",
                    [(t, w, p) for t, (w, p) in inputs.items()],
                )
            conn.execute("COMMIT")
            self.written += len(batch)
        except sqlite3.Error:
            self.errors += 1
            log.exception("could not write %d task(s) to %s", len(batch), self.path)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Keep the newest ``history_limit`` finished tasks, as the in-memory store does."""
        try:
            old = (
                "SELECT task_id FROM tasks WHERE final = 1 AND created_at < (SELECT created_at FROM tasks "
                "WHERE final = 1 ORDER BY created_at DESC LIMIT 1 OFFSET ?)"
            )
            conn.execute("BEGIN")
            conn.execute(f"DELETE FROM task_inputs WHERE task_id IN ({old})", (self.history_limit - 1,))
            conn.execute(f"DELETE FROM tasks WHERE task_id IN ({old})", (self.history_limit - 1,))
            conn.execute("COMMIT")
        except sqlite3.Error:
            log.exception("could not trim old tasks in %s", self.path)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
