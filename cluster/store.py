"""Tasks in Redis, shared by every replica; each replica reads a local copy kept current by the stream.

Redis holds each task's record and workflow, the indexes (creation order, unfinished, prompt id) and the
trim of old finished tasks. A replica's reads (get, list, counts, history) stay synchronous and cheap:
they hit its local ``TaskStore``, which holds the tasks this replica drives (``live``: those of the
backends it owns, as objects the manager mutates) and a mirror of everyone else's, updated from the
``rec`` entries and task updates every replica reads on the event stream. Writes go through the ordered
``RedisWriter``: a submission waits for its record to be stored (``save_now``), later changes do not.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from redis.asyncio import Redis

from cluster.direct import DirectConnection
from cluster.replies import text, text_or_none, texts
from cluster.scripts import SAVE_TASK, TAKE_TASK, TELL_TASK, TRIM
from cluster.writer import RedisWriter
from core.task import Task, TaskStatus
from tasks.memory_store import TaskStore
from tasks.sqlite_store import task_from_record, task_record

log = logging.getLogger("comfygate.cluster.store")

TRIM_EVERY = 200  # finished saves between two trims
_MIRRORED = ("status", "backend", "progress", "error", "prompt_id")
_RANK = {TaskStatus.PENDING: 0, TaskStatus.QUEUED: 1, TaskStatus.RUNNING: 2}
_FIELDS = tuple(f.name for f in dataclasses.fields(Task) if f.name != "workflow")


class RedisRecords:
    """The task records in Redis (keys under ``prefix``)."""

    def __init__(self, redis: Redis, writer: RedisWriter, prefix: str, history_limit: int, events_maxlen: int) -> None:
        self.redis = redis
        self.writer = writer
        self.prefix = prefix
        self.history_limit = history_limit
        self.events_maxlen = events_maxlen
        self._saved_prompt: dict[str, str] = {}  # unfinished task → prompt id last stored
        self._finished_since_trim = 0
        # (lease key, holder) a write about this task needs (set by the cluster: tasks driven here are fenced).
        self.fence: Callable[[Task], tuple[str, str] | None] | None = None
        self.lane: DirectConnection | None = None  # the cluster's kept connection, for loads a task waits on

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def save_op(self, task: Task, with_workflow: bool = False, *, fenced: bool = True, take_from: str = "") -> Any:
        """The write of ``task``'s record as a pipeline op (to batch it with other writes). ``fenced``: only while
        the writer may write about the task (``fence``); ``take_from``: and only if it is taken out of that
        sorted set (the shared queue) in the same step."""
        keys, args = self.save_args(task, with_workflow, fenced=fenced)
        script = SAVE_TASK
        if take_from:
            keys.append(take_from)
            script = TAKE_TASK

        def op(pipe: Any) -> None:
            pipe.eval(script, len(keys), *keys, *args)

        return op

    def not_stored(self, task: Task) -> None:
        """``save_args`` was called for a write that did not happen (no room, fenced, an error): nothing to track."""
        self._saved_prompt.pop(task.task_id, None)

    def tell(self, keys: list[str], args: list[Any]) -> None:
        """The "rec" entry of a record stored by CHOOSE_SAVE (``keys``, ``args``: SAVE_TASK's, as it had them)."""
        self.writer.submit(lambda pipe: pipe.eval(TELL_TASK, len(keys), *keys, *args))

    def save_args(self, task: Task, with_workflow: bool = False, *, fenced: bool = True) -> tuple[list[str], list[Any]]:
        """SAVE_TASK's keys and arguments for ``task`` as it is now."""
        record = task_record(task)
        workflow = json.dumps(task.workflow, separators=(",", ":")) if with_workflow else ""
        old = self._saved_prompt.get(task.task_id, "")
        final = task.status.final
        if final:
            self._saved_prompt.pop(task.task_id, None)
        else:
            self._saved_prompt[task.task_id] = task.prompt_id
        keys = [
            self.key("task", task.task_id),
            self.key("tasks"),
            self.key("unfinished"),
            self.key("prompt"),
            self.key("events"),
        ]
        fence = self.fence(task) if self.fence is not None and fenced else None
        args = [task.task_id, task.created_at, int(final), record, workflow, task.prompt_id, old, self.events_maxlen]
        args += list(fence or ("", ""))
        return keys, args

    def save(self, task: Task, *, with_workflow: bool = False) -> None:
        self.writer.submit(self.save_op(task, with_workflow))
        if task.status.final:
            self._finished_since_trim += 1
            if self._finished_since_trim >= TRIM_EVERY:
                self._finished_since_trim = 0
                keys = [self.key("tasks"), self.key("unfinished"), self.key("prompt")]
                limit = self.history_limit
                self.writer.submit(lambda pipe: pipe.eval(TRIM, len(keys), *keys, limit, self.prefix))

    async def save_now(
        self, task: Task, *, with_workflow: bool = True, take_from: str = "", timeout: float = 5.0
    ) -> str | None:
        """Store ``task`` and wait until Redis has it; returns the id of its ``rec`` stream entry, None when the
        fence refused it (or, with ``take_from``, another replica took the task first)."""
        result = await self.writer.call(self.save_op(task, with_workflow, take_from=take_from), timeout=timeout)
        return text_or_none(result)

    def delete(self, task: Task) -> None:
        """A task that was never accepted (its backend refused it): no trace left."""
        self._saved_prompt.pop(task.task_id, None)
        task_id, prompt = task.task_id, task.prompt_id

        def op(pipe: Any) -> None:
            pipe.delete(self.key("task", task_id))
            pipe.zrem(self.key("tasks"), task_id)
            pipe.srem(self.key("unfinished"), task_id)
            pipe.hdel(self.key("prompt"), prompt)

        self.writer.submit(op, count=4)

    # --- reading (async: startup, takeover, rare lookups) ------------------------------------------
    async def load(self, task_id: str, *, with_workflow: bool = True) -> Task | None:
        fields = ["r", "w"] if with_workflow else ["r"]
        key = self.key("task", task_id)
        if self.lane is not None:  # (an owner loading a forwarded task before its post)
            values = await self.lane.call("HMGET", key, *fields, fallback=self.redis)
        else:
            values = await self.redis.hmget(key, fields)
        if not values or values[0] is None:
            return None
        return task_from_record(text(values[0]), text_or_none(values[1]) if with_workflow else None)

    async def load_many(self, task_ids: list[str], *, with_workflow: bool = False) -> list[Task]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self.key("task", task_id), ["r", "w"] if with_workflow else ["r"])
        found = []
        for values in await pipe.execute():
            if values and values[0] is not None:
                task = task_from_record(text(values[0]), text_or_none(values[1]) if with_workflow else None)
                if task is not None:  # an unreadable record is logged and skipped: one bad record loses one task
                    found.append(task)
        return found

    async def load_workflow(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key("task", task_id), "w")
        return json.loads(raw) if raw else None

    async def recent(self, limit: int) -> list[Task]:
        """Every unfinished task and the newest finished ones, oldest first (a replica's start)."""
        ids = texts(await self.redis.zrange(self.key("tasks"), -limit, -1))
        unfinished = set(texts(await self.redis.smembers(self.key("unfinished"))))
        ids = list(dict.fromkeys([*sorted(unfinished - set(ids)), *ids]))
        tasks = await self.load_many(ids)
        return sorted(tasks, key=lambda t: t.created_at)

    async def unfinished_on(self, backend: str) -> list[Task]:
        """The unfinished tasks handed to ``backend``, with their workflows (a takeover)."""
        ids = texts(await self.redis.smembers(self.key("unfinished")))
        tasks = await self.load_many(ids, with_workflow=True)
        return [t for t in tasks if t.backend == backend and not t.status.final]

    async def by_prompt(self, prompt_id: str) -> str | None:
        return text_or_none(await self.redis.hget(self.key("prompt"), prompt_id))


class RedisTaskStore:
    """The ``TaskStore`` of a replica in cluster mode: a local store for reads, Redis for the truth."""

    def __init__(self, records: RedisRecords, limit: int, full_finished: int) -> None:
        self.records = records
        self.local = TaskStore(limit, full_finished)
        self.live: set[str] = set()  # tasks this replica's manager drives (their backends are ours)
        self.on_final: Callable[[Task], None] | None = None  # a mirrored task reached its end

    # --- what the manager calls (its own tasks) ---------------------------------------------------
    def __len__(self) -> int:
        return len(self.local)

    def add(self, task: Task) -> None:
        old = self.local.get(task.task_id)
        if old is not None and old is not task:
            self.local.forget(old)
        self.local.add(task)
        if not task.status.final:
            self.live.add(task.task_id)

    def forget(self, task: Task) -> None:
        self.local.forget(task)
        self.live.discard(task.task_id)
        self.records.delete(task)

    def get(self, task_id: str) -> Task | None:
        return self.local.get(task_id)

    def by_prompt(self, prompt_id: str | None) -> Task | None:
        return self.local.by_prompt(prompt_id)

    def find(self, prompt_or_task_id: str) -> Task | None:
        return self.local.find(prompt_or_task_id)

    def reindex(self, task: Task, old_prompt_id: str) -> None:
        self.local.reindex(task, old_prompt_id)

    def finished(self, task: Task) -> None:
        self.local.finished(task)
        self.live.discard(task.task_id)

    def all(self) -> Iterable[Task]:
        return self.local.all()

    def unfinished(self) -> list[Task]:
        return self.local.unfinished()

    def counts(self) -> dict[str, int]:
        return self.local.counts()

    def query(
        self, status: set[TaskStatus] | None = None, offset: int = 0, limit: int = 50, newest_first: bool = True
    ) -> tuple[int, list[Task]]:
        return self.local.query(status, offset, limit, newest_first)

    def scan(self, before: str | None = None, status: set[TaskStatus] | None = None) -> Iterator[Task]:
        return self.local.scan(before, status)

    def adopt(self, loaded: Task) -> Task:
        """This replica drives ``loaded`` (read from Redis) from now on. The object readers here already hold
        (the mirror: open SSE streams, waiters) becomes the live one, keeping the progress the stream
        brought it, which is fresher than the record's."""
        current = self.local.get(loaded.task_id)
        if current is None or current.status.final or current is loaded:
            self.add(loaded)
            return loaded
        ahead = _RANK[current.status] >= _RANK[loaded.status]
        progress, status, started = current.progress, current.status, current.started_at
        old_prompt = current.prompt_id
        for name in _FIELDS:
            setattr(current, name, getattr(loaded, name))
        current.workflow = loaded.workflow
        if ahead:
            current.progress, current.status, current.started_at = progress, status, started or loaded.started_at
        if old_prompt != current.prompt_id:
            self.local.reindex(current, old_prompt)
        self.live.add(current.task_id)
        return current

    def release(self, task_id: str) -> None:
        """Another replica drives this task from now on (its backend's lease moved)."""
        self.live.discard(task_id)

    # --- the mirror: other replicas' tasks, from the stream ------------------------------------------
    def apply_record(self, record: str) -> None:
        body = json.loads(record)
        task_id = body.get("task_id")
        if not isinstance(task_id, str) or task_id in self.live:
            return  # ours: the object the manager mutates is ahead of any echo
        current = self.local.get(task_id)
        if current is None:
            fresh = task_from_record(record, None)
            if fresh is None:
                return  # unreadable (logged)
            self.local.add(fresh)
            if fresh.status.final and self.on_final is not None:
                self.on_final(fresh)
            return
        if current.status.final:
            return  # final is final; a late echo of an earlier state changes nothing
        fresh = task_from_record(record, None)
        if fresh is None:
            return
        old_prompt = current.prompt_id
        for name in _FIELDS:
            setattr(current, name, getattr(fresh, name))
        if old_prompt != current.prompt_id:
            self.local.reindex(current, old_prompt)
        if current.status.final:
            self.local.finished(current)
            if self.on_final is not None:
                self.on_final(current)

    def apply_update(self, task_id: str, message: dict[str, Any]) -> None:
        """A task_update of another replica's task: its status and progress, before its record says so."""
        if task_id in self.live:
            return
        current = self.local.get(task_id)
        if current is None or current.status.final:
            return
        try:
            status = TaskStatus(message.get("status"))
        except ValueError:
            return
        if status.final:
            return  # the final record follows and carries everything (outputs, times)
        current.status = status
        current.backend = message.get("backend", current.backend)
        current.progress = message.get("progress") or current.progress
        current.error = message.get("error")
