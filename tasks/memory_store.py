"""The in-memory task store: recent tasks live, older finished ones compacted, bounded in count."""

from __future__ import annotations

import json
import marshal
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator

from core.task import FINAL_STATUSES, Task, TaskStatus

# Fields of a compacted task, in the order of its marshalled list (every field of Task).
_FIELDS = tuple(Task.__dataclass_fields__)
_STATUS_INDEX = _FIELDS.index("status")
_PROMPT_INDEX = _FIELDS.index("prompt_id")
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode
# Blobs above this are zlib-compressed: outputs are repetitive text (PreviewAny's 2.3 kB tensor repr
# squeezes to 0.35 kB). A marshalled list starts with b"[" (or b"\xdb"), a zlib stream with 0x78.
_SQUEEZE_ABOVE = 512
_ZLIB = 0x78


# Compacted tasks' bytes are laid end to end in chunks of this size rather than one bytes object each: the
# ~0.6 kB blobs (above pymalloc's 512 bytes) otherwise sit one by one in the C heap between the short-lived
# buffers of the tasks running after them (frames, outputs' texts, records), whose freed holes the heap can
# then hardly give back; at 100,000 tasks that was tens of MB more in a replica with listeners and backends
# (BENCHMARKS.md, cluster_memory). Tasks are dropped oldest first, so a chunk goes with its last task.
CHUNK_BYTES = 256 << 10


class _Chunks:
    """Where a store's compacted tasks put their bytes (append-only; one per store: not thread-safe)."""

    __slots__ = ("chunk", "used")

    def __init__(self) -> None:
        self.chunk = bytearray()
        self.used = 0

    def place(self, data: bytes) -> tuple[bytes | bytearray, int]:
        size = len(data)
        if size > CHUNK_BYTES // 8:
            return data, 0  # a big one keeps its own object
        if self.used + size > len(self.chunk):
            self.chunk, self.used = bytearray(CHUNK_BYTES), 0
        at = self.used
        self.chunk[at : at + size] = data
        self.used = at + size
        return self.chunk, at


class CompactTask:
    """A finished task as bytes: its prompt id, a NUL, then a ``marshal`` blob of every other field
    (zlib-compressed when big). ~0.4 kB for a typical task instead of ~5 kB of live objects.

    marshal (C, ~4× faster than json both ways) takes the JSON types every field holds; a value it
    cannot take goes through JSON first (``default=str``, as the API would answer it). The status stays
    readable without decoding, so listing by status only decodes the page served; the prompt id leads
    the bytes, so a search by prompt id decodes nothing either.
    """

    __slots__ = ("status", "_chunk", "_span")

    def __init__(self, task: Task, chunks: _Chunks | None = None) -> None:
        values = [getattr(task, name) for name in _FIELDS]
        values[_STATUS_INDEX] = None
        values[_PROMPT_INDEX] = None
        try:
            body = marshal.dumps(values)
        except ValueError:
            body = marshal.dumps(json.loads(_json(values)))
        if len(body) > _SQUEEZE_ABOVE:
            squeezed = zlib.compress(body, 1)
            if len(squeezed) < len(body):
                body = squeezed
        self.status = task.status
        blob = task.prompt_id.encode() + b"\0" + body
        if chunks is None:
            self._chunk: bytes | bytearray = blob
            self._span = len(blob)
        else:
            self._chunk, at = chunks.place(blob)
            self._span = at << 32 | len(blob)  # one int object for both

    @property
    def blob(self) -> bytes:
        at, size = self._span >> 32, self._span & 0xFFFFFFFF
        return bytes(self._chunk[at : at + size])

    def has_prompt(self, prompt: bytes) -> bool:
        """``prompt``: a prompt id, encoded, followed by NUL."""
        at = self._span >> 32
        return self._chunk.startswith(prompt, at, at + (self._span & 0xFFFFFFFF))

    def task(self) -> Task:
        """A fresh Task, equal to the one compacted."""
        blob = self.blob
        cut = blob.index(0)
        body = blob[cut + 1 :]
        values = marshal.loads(zlib.decompress(body) if body[0] == _ZLIB else body)
        values[_STATUS_INDEX] = self.status
        values[_PROMPT_INDEX] = blob[:cut].decode()
        return Task(*values)


class TaskStore:
    """All tasks in memory, in creation order. Finished tasks beyond ``limit`` are dropped oldest first.

    Unfinished tasks are never dropped: losing a task that still runs would lose its outputs. The
    newest ``full_finished`` finished tasks stay full objects; older ones are compacted to a
    ``CompactTask`` and decoded on demand (``get``/``query`` return fresh Task objects for those, and
    ``by_prompt``, used on every ComfyUI event, no longer sees them: ``find`` does, slowly).
    """

    def __init__(self, limit: int = 1000, full_finished: int = 1000) -> None:
        self.limit = limit
        self.full_finished = min(full_finished, limit)  # more would only keep dropped tasks alive
        self._tasks: OrderedDict[str, Task | CompactTask] = OrderedDict()
        self._by_prompt: dict[str, str] = {}  # prompt id → task id, for tasks held as objects
        self._unfinished: dict[str, Task] = {}
        self._recent: deque[Task] = deque()  # finished tasks still held as objects, oldest first
        self._final_counts: dict[TaskStatus, int] = dict.fromkeys(FINAL_STATUSES, 0)
        self._finished = 0
        self._chunks = _Chunks()

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        self._by_prompt[task.prompt_id] = task.task_id
        if task.status.final:
            self._count_finished(task)
        else:
            self._unfinished[task.task_id] = task

    def forget(self, task: Task) -> None:
        """Remove a task that was never accepted (its backend refused it)."""
        self._tasks.pop(task.task_id, None)
        self._by_prompt.pop(task.prompt_id, None)
        self._unfinished.pop(task.task_id, None)

    def get(self, task_id: str) -> Task | None:
        entry = self._tasks.get(task_id)
        if entry is None or entry.__class__ is Task:
            return entry
        return entry.task()  # type: ignore[union-attr]

    def by_prompt(self, prompt_id: str | None) -> Task | None:
        """Unfinished and recently finished tasks by prompt id (cheap: ComfyUI's events come through here)."""
        if prompt_id is None:
            return None
        task_id = self._by_prompt.get(prompt_id)
        return self._tasks.get(task_id) if task_id else None  # type: ignore[return-value]

    def find(self, prompt_or_task_id: str) -> Task | None:
        """Any task held, by prompt id or task id; compacted ones are searched by a scan (rare requests)."""
        found = self.by_prompt(prompt_or_task_id) or self.get(prompt_or_task_id)
        if found is not None:
            return found
        if "\0" in prompt_or_task_id:
            return None
        prompt = prompt_or_task_id.encode() + b"\0"
        for entry in self._tasks.values():  # ~10 ms for 100,000 tasks: fine for interrupt requests
            if entry.__class__ is CompactTask and entry.has_prompt(prompt):
                return entry.task()
        return None

    def reindex(self, task: Task, old_prompt_id: str) -> None:
        self._by_prompt.pop(old_prompt_id, None)
        self._by_prompt[task.prompt_id] = task.task_id

    def finished(self, task: Task) -> None:
        """Call once when a task reaches a final status, so the limit can be enforced."""
        self._unfinished.pop(task.task_id, None)
        if self._tasks.get(task.task_id) is task:
            self._count_finished(task)

    def _count_finished(self, task: Task) -> None:
        self._finished += 1
        self._final_counts[task.status] += 1
        self._recent.append(task)
        self._trim()
        while len(self._recent) > self.full_finished:
            self._compact(self._recent.popleft())

    def _compact(self, task: Task) -> None:
        if self._tasks.get(task.task_id) is not task or "\0" in task.prompt_id:
            return  # trimmed already (or a prompt id CompactTask cannot lead with: never made by ComfyGate)
        self._tasks[task.task_id] = CompactTask(task, self._chunks)
        if self._by_prompt.get(task.prompt_id) == task.task_id:
            del self._by_prompt[task.prompt_id]

    def _trim(self) -> None:
        if self._finished <= self.limit:
            return
        victims = []
        excess = self._finished - self.limit
        for task_id, entry in self._tasks.items():  # oldest first; unfinished ones are skipped
            if entry.status.final:
                victims.append((task_id, entry))
                if len(victims) >= excess:
                    break
        for task_id, entry in victims:
            del self._tasks[task_id]
            self._finished -= 1
            self._final_counts[entry.status] -= 1
            if entry.__class__ is Task:
                prompt_id = entry.prompt_id
                if self._by_prompt.get(prompt_id) == task_id:
                    del self._by_prompt[prompt_id]

    def all(self) -> Iterable[Task]:
        """Every task held, compacted ones decoded (slow with a long history: prefer ``counts``/``query``)."""
        for entry in self._tasks.values():
            yield entry if entry.__class__ is Task else entry.task()  # type: ignore[union-attr]

    def unfinished(self) -> list[Task]:
        return list(self._unfinished.values())

    def counts(self) -> dict[str, int]:
        """How many tasks are held, by status (every status present)."""
        counts = {s.value: 0 for s in TaskStatus}
        for status, count in self._final_counts.items():
            counts[status.value] = count
        for task in self._unfinished.values():
            counts[task.status.value] += 1
        return counts

    def query(
        self, status: set[TaskStatus] | None = None, offset: int = 0, limit: int = 50, newest_first: bool = True
    ) -> tuple[int, list[Task]]:
        entries: Iterable[Task | CompactTask] = reversed(self._tasks.values()) if newest_first else self._tasks.values()
        if status:
            chosen = [e for e in entries if e.status in status]
        else:
            chosen = list(entries)
        page = chosen[offset : offset + limit]
        return len(chosen), [e if e.__class__ is Task else e.task() for e in page]  # type: ignore[union-attr]

    def scan(self, before: str | None = None, status: set[TaskStatus] | None = None) -> Iterator[Task]:
        """Newest first, from just after the task ``before``; only tasks of ``status`` (others are skipped
        without being decoded). For cursor pages: a position that is a task, not an offset, does not shift
        when tasks are added meanwhile. An unknown ``before`` yields nothing."""
        started = before is None
        for task_id, entry in reversed(self._tasks.items()):
            if not started:
                started = task_id == before
                continue
            if status is None or entry.status in status:
                yield entry if entry.__class__ is Task else entry.task()  # type: ignore[union-attr]
