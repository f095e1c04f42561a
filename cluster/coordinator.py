"""Cluster mode: several replicas as one service, through Redis (tasks, queue, events) and object storage.

``Cluster`` is built by the app's lifespan when ``COMFYUI_REDIS_URL`` is set. It supplies the task
store, the event bus and the backends the manager is made of, and plugs into the manager's seams
(``tasks.placement``):

- **Placement**: a new task's backend is chosen atomically across replicas (Lua: least loaded, counted
  in Redis). Its record is stored *before* it is posted, so a crash at any point leaves a task some
  replica finds. The owner of that backend posts it: this replica if it holds the backend's lease,
  else the owner, through the backend's inbox list, answering on this replica's reply channel. With no
  room anywhere it waits in the shared queue (a sorted set) that every owner takes from.
- **Ownership**: one lease per backend (``lease``); the owner holds its WebSocket and publishes its
  state. A replica that takes a lease adopts the backend's unfinished tasks: those whose post is not
  known to have happened are looked up in ``/queue`` and ``/history`` and posted only when absent;
  the WebSocket's reconnect then runs the usual reconciliation.
- **ViewComfy** backends are each replica's own: a task there is driven by the replica that took it. Each
  replica renews an ``alive`` key (per process: a restart under the same id is another); when one's expires,
  one survivor claims each of its unfinished ViewComfy tasks (``ADOPT``, which also fences the dead one's
  writes) and its backend ends it (``take_over``: the run followed, or the task failed ``replica_lost``). A replica
  stopped gracefully leaves them at once (``_leave``): runs of the current API go on, unended here, for a survivor
  to follow; runs of the first API get the shutdown grace to end here first. Its alive key is deleted, not left to
  expire.
- **Outputs** (``OutputKeeper``) are copied to the object store just after a ComfyUI run completes (a
  ViewComfy run's before: the store holds their only other copy). A replica asked for an output that is
  not there yet, or whose downloader died first, fetches it from the backend's own output folder.
- **Health**: Redis and the store are pinged every second; while either is unreachable, writes answer
  503 and ``/api/health`` says why, and everything resumes by itself when they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from backends.base import Backend, TakesOver
from cluster.assets import SharedAssets
from cluster.backend import SharedBackend
from cluster.bus import ClusterBus
from cluster.claims import RedisClaims
from cluster.direct import ANSWER_S, DirectConnection
from cluster.errors import ClusterUnavailable
from cluster.lease import LeaseKeeper
from cluster.library import SharedLibrary
from cluster.objects import ObjectStore, StoreUnavailable
from cluster.replies import Fields, entries, field, text, text_or_none, texts
from cluster.scripts import ADOPT, CHOOSE, CHOOSE_FORWARD, CHOOSE_SAVE
from cluster.store import RedisRecords, RedisTaskStore
from cluster.stream import StreamReader
from cluster.writer import RedisWriter
from config import Settings
from core.busy_poll import BusyPoll
from core.errors import ComfyGateError, ComfyUIUnavailable, PostUnsure, PromptRejected, ServiceBusy, dispatch_failure
from core.media_types import content_type
from core.task import Task, TaskStatus
from core.waits import cancel_and_wait
from events.hub import EventHub
from tasks.local_outputs import write_file
from tasks.pool import workflow_classes
from tasks.sqlite_store import task_from_record, task_record
from workflow.library import WorkflowLibrary

if TYPE_CHECKING:
    from tasks.manager import TaskManager

log = logging.getLogger("comfygate.cluster")

STATE_EVERY = 0.5  # seconds between two exchanges of backend states and loads
HEALTH_EVERY = 1.0
STATE_TTL = 6.0  # seconds an owner's published backend state lives unrefreshed (busy is not dead)
FORWARD_WAIT = 10.0  # seconds a replica waits for the owner's answer before answering "pending"
KEEP_TRIES = 30  # attempts (about a second apart) to store a task's outputs while the store is down
KEEP_BEHIND_TRIES = 130  # the same behind a completed task: backing off to 5 s apart, about 10 minutes
KEEP_AFTER_S = 0.05  # ... starting this long after the completion, not while it is being delivered
KEEP_DRAIN_S = 10.0  # a stopping replica waits this long for the outputs it still has to store
FIND_OUTPUT_S = 2.0  # a replica asked for an output of a task it has not heard of yet looks this long
INBOX_BLOCK_S = 0.5  # an owner's BLPOP on its backends' inboxes (it reads the list of backends it owns again)
_OUTPUT_NAME = re.compile(r"^[0-9a-f]{8}_")  # ComfyGate's output files start with their task's id
SWEEP_EVERY = 20  # state exchanges (about 10 s) between two sweeps for tasks nobody posted
SWEEP_AFTER = 15.0  # seconds a stored, unposted task may wait for its owner's inbox before a sweep takes it
DRAIN_WAIT = 10.0  # seconds a lease being given back waits for the hand-overs and completions under way on it
# Seconds between two looks for a prompt whose post may have happened: ComfyUI queues a prompt only once it has
# validated it (~5 ms alone, ~140 ms in a burst of 50: transcript 50_bench), and it does not refuse a repeated
# prompt id (33_duplicate_prompt_id): it would run it twice.
UNSURE_GRACE = 2.0
CATCH_UP_WAIT = 2.0  # seconds a new owner waits for its event stream to reach what the last owner wrote
HEALTHY_WAIT = 5.0  # seconds a new owner waits for its WebSocket and object_info before serving the backend
ALIVE_TTLS = 3  # a replica's alive key lives this many lease TTLs unrenewed (renewed every STATE_EVERY)
LEFT_FENCE_S = 60  # seconds a stopping replica's writes about the ViewComfy tasks it left are dropped unadopted
ORPHANS_EVERY = 2  # state exchanges (about a second) between two looks for ViewComfy tasks whose replica died


def _looks_like_output(name: str) -> bool:
    return _OUTPUT_NAME.match(name) is not None


def _rejected(backend: Backend, exc: PromptRejected) -> dict[str, Any]:
    """A task's error when its backend refused its prompt."""
    return {
        "type": "prompt_rejected",
        "message": f"{backend.name} rejected the prompt: {exc.message}",
        "comfyui_error": exc.error,
        "node_errors": exc.node_errors,
    }


def stream_int(entry_id: str) -> int:
    """A Redis stream id ("ms-seq") as one increasing integer, the SSE event id on every replica."""
    ms, _, seq = entry_id.partition("-")
    return (int(ms) << 20) | int(seq or 0)


def int_stream(value: int) -> str:
    return f"{value >> 20}-{value & 0xFFFFF}"


class Cluster:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.replica = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        # This process's life as that replica (a restart under the same id is another): what drives its ViewComfy
        # tasks, alive while its ``alive`` key is renewed.
        self.incarnation = f"{self.replica}/{uuid.uuid4().hex[:12]}"
        self.alive_ttl = ALIVE_TTLS * settings.lease_ttl
        url = settings.redis_url.get_secret_value()
        common: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_keepalive": True}
        pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=5, socket_timeout=5, **common)
        self.redis = Redis(connection_pool=pool)
        # Blocking reads (the replies, through pub/sub) on connections of their own.
        self.blocking = Redis.from_url(url, socket_timeout=10, **common)
        # What a task waits on, each on a kept connection (cluster/direct.py): the submit's call, the event stream.
        self.lane = DirectConnection(url, **common)
        self.events = DirectConnection(url, **common)
        self.inboxes = DirectConnection(url, **common)  # the owner's wait for forwarded submissions
        self.writer = RedisWriter(self.redis)
        self.idempotency_claims = RedisClaims(self.redis, self.key)  # the v2 API's, shared by every replica
        self.records = RedisRecords(
            self.redis, self.writer, self.prefix, settings.history_limit, settings.events_stream_max
        )
        self.store = RedisTaskStore(self.records, settings.history_limit, settings.full_finished_tasks)
        self.records.fence = self._fence
        self.records.lane = self.lane
        self.objects = ObjectStore(settings.storage_url, settings) if settings.storage_url else None
        # v2 assets known to every replica (records in Redis, files in the store); without a store, each replica's own
        self.assets = None if self.objects is None else SharedAssets(self.redis, self.key, self.objects, self.writer)
        self.reader = StreamReader(self.events, f"{self.prefix}events", self._on_entry)
        self.current_id: int | None = None  # the stream entry being delivered (SSE ids)
        self.bus: ClusterBus | None = None
        self.manager: TaskManager | None = None
        self.library: SharedLibrary | None = None  # the workflow library, when it lives in the store
        self.backends: dict[str, SharedBackend] = {}
        self.leases: LeaseKeeper | None = None
        self.redis_ok = False
        self.store_ok = True
        self.store_error: str | None = None
        self.stopped_loop: str | None = None  # a loop that ended by an error (``_loop_ended``): unhealthy for good
        self._ready: set[str] = set()  # owned backends whose tasks are adopted: their inbox is served
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._kick = asyncio.Event()
        self._loops: list[asyncio.Task[Any]] = []
        self._jobs: set[asyncio.Task[Any]] = set()
        self._keeping: set[asyncio.Task[Any]] = set()  # outputs being stored behind their completed tasks
        self._given: dict[str, int] = {}
        self._orphans: asyncio.Task[Any] | None = None  # the look for ViewComfy tasks of stopped replicas
        self.stopping = False
        self._going = False  # stopping: the alive key is deleted, no longer renewed (``_leave``)
        self._gone = asyncio.Event()  # ... and it is

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- building the parts the manager is made of --------------------------------------------------
    def make_bus(self, hub: EventHub) -> ClusterBus:
        self.bus = ClusterBus(
            hub, self.writer, self.prefix, self.settings.events_stream_max, self.settings.event_log_size
        )
        self.bus.fence = self._fence_id
        return self.bus

    def _fence(self, task: Task) -> tuple[str, str] | None:
        """A write about a task on a backend is only valid from that backend's owner (the one exception, a new
        task's first record on its way to the owner's inbox, is written unfenced): late writes of a replica
        that gave the lease up, or lost it, never undo its successor's."""
        if task.backend in self.backends:
            return f"{self.prefix}lease:{task.backend}", self.replica
        if task.backend:  # a replica's own backend (ViewComfy): its driver, until a survivor adopts the task
            return self.key("claim", task.task_id), self.incarnation
        return None

    def _fence_id(self, task_id: str) -> tuple[str, str] | None:
        task = self.store.get(task_id)
        return self._fence(task) if task is not None else None

    def add_backends(self, manager: TaskManager, http: httpx.AsyncClient, busy_poll: BusyPoll) -> None:
        """One shared backend per configured ComfyUI server, named as on a single replica (comfyui-N)."""
        settings = self.settings
        for index, server in enumerate(settings.servers, start=1):
            name = f"comfyui-{index}"
            backend = SharedBackend(
                name,
                server,
                http,
                prefix=self.prefix,
                lease_valid=lambda n: self.leases is not None and self.leases.valid(n),
                timeout=settings.request_timeout,
                fast_post=settings.fast_prompt_post,
                busy_poll=busy_poll,
                output_dir=settings.output_dir_for(name, server),
                on_event=manager.on_event,
                on_state=manager.on_backend_state,
                on_output=manager.on_output,
                partner_key=settings.partner_key(index - 1),
            )
            self.backends[name] = backend
            manager.add_backend(backend)

    def shared_library(self, library: WorkflowLibrary) -> WorkflowLibrary:
        """The workflow library every replica sees: in the object store when there is one."""
        if self.objects is None:
            return library
        self.library = SharedLibrary(library, self.objects)
        return self.library

    def install(self, manager: TaskManager, extras: dict[str, Any]) -> None:
        """Plug into the manager's seams and the integration features (``Services.extras``: the SSE log,
        the synchronous waits; the routes find the cluster there); call before ``manager.start()``."""
        self.manager = manager
        extras["cluster"] = self
        events = extras.get("event_log")
        if events is not None:
            events.current_id = lambda: self.current_id  # SSE ids: the stream's, the same on every replica
        v2 = extras.get("api_v2")
        if v2 is not None and self.assets is not None:  # a v2 blob deleted everywhere leaves this replica's disk too
            self.assets.on_gone = v2.forget_blob
        if v2 is not None:  # a v2 Idempotency-Key used on one replica is used on all
            v2.keys.shared = self.idempotency_claims
        waiters = extras.get("waiters")
        if waiters is not None:  # a synchronous submit here may wait for a task another replica drives
            self.store.on_final = lambda task: waiters.on_task(task, "finished")
        manager.pool.placement = self
        manager.endings.output_keeper = self
        manager.add_observer(self._observe)

        async def load_workflow(task_id: str) -> dict[str, Any] | None:
            return await self.records.load_workflow(task_id)

        manager.workflow_loader = load_workflow
        self.leases = LeaseKeeper(
            self.redis, self.prefix, self.replica, list(self.backends), self._lease_changed, ttl=self.settings.lease_ttl
        )

    # --- lifecycle -------------------------------------------------------------------------------
    async def open(self, wait: float = 30.0) -> None:
        """Connect and load the shared tasks into this replica's read model (before anything serves)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                await self.redis.ping()
                break
            except (RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis at COMFYUI_REDIS_URL does not answer: {exc}") from exc
                await asyncio.sleep(0.2)
        stream = self.key("events")
        info = await self.redis.xinfo_stream(stream) if await self.redis.exists(stream) else None
        self.reader.last_id = text(info["last-generated-id"]) if info else "0-0"
        for task in await self.records.recent(self.settings.history_limit):
            self.store.local.add(task)  # a mirror: not driven here
        self.redis_ok = True

    async def start(self) -> None:
        await self._renew_alive()
        self.writer.start().add_done_callback(self._loop_ended)
        self._loops = [
            asyncio.create_task(self.reader.run(), name="cluster events"),
            asyncio.create_task(self._exchange_states(), name="cluster states"),
            asyncio.create_task(self._serve_inboxes(), name="cluster inboxes"),
            asyncio.create_task(self._listen(), name="cluster replies"),
            asyncio.create_task(self._take_pending(), name="cluster queue"),
            asyncio.create_task(self._watch_health(), name="cluster health"),
        ]
        for loop in self._loops:
            loop.add_done_callback(self._loop_ended)
        assert self.leases is not None
        await self.leases.round()
        await self.leases.settled()
        self.leases.start().add_done_callback(self._loop_ended)
        if self.library is not None:
            try:
                await self.library.seed()
            except StoreUnavailable as exc:
                log.warning("could not copy the shipped workflows into the store: %s", exc)

    async def stop(self) -> None:
        """Give the leases back first (another replica takes over at once: each once what is under way on its
        backend has ended, its outcome stored), then stop."""
        self.stopping = True
        if self.leases is not None:
            await asyncio.gather(self._leave(), self.leases.stop())
        else:
            await self._leave()
        if self._keeping:  # outputs completed tasks still have to store
            await asyncio.wait(self._keeping, timeout=KEEP_DRAIN_S)
        await cancel_and_wait([*self._loops, *self._jobs, *self._keeping])
        await self.writer.stop()
        await self.redis.aclose()
        await self.blocking.aclose()
        await self.lane.close()
        await self.events.close()
        await self.inboxes.close()

    async def _leave(self) -> None:
        """A graceful stop: the ViewComfy tasks this replica drives are left to the survivors at once. Their runs are
        not cancelled and nothing is recorded as their end (``leave``); once the writes about them are stored, they
        are fenced from this replica's late writes and its alive key goes, so a survivor's next look for orphans
        (about a second later, not once the key would have expired) adopts each, once, and ends it."""
        manager = self.manager
        if manager is None:
            return
        left: set[str] = set()
        for backend in list(manager.pool.backends.values()):
            if backend.name not in self.backends and isinstance(backend, TakesOver):
                left |= await backend.leave(float(self.settings.shutdown_grace))
        for task_id in left:
            self._let_go(task_id)
        if left:
            log.info("%s leaves %d ViewComfy task(s) to the other replicas", self.replica, len(left))
        fences = [self.key("claim", task_id) + ":free" for task_id in left]

        def fence(pipe: Any) -> Any:
            for key in fences:
                pipe.set(key, self.incarnation, ex=LEFT_FENCE_S)
            return pipe.ping()

        try:  # after every write queued before it: the survivor reads the task as this replica last saw it
            await self.writer.call(fence, count=len(fences) + 1, timeout=DRAIN_WAIT)
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("the last writes about the ViewComfy tasks left may not be stored: %s", exc)
        self._going = True  # the state exchange deletes the alive key instead of renewing it
        try:
            await asyncio.wait_for(self._gone.wait(), 2 * STATE_EVERY + 1.0)
        except TimeoutError:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(self.key("alive", self.incarnation))

    def _spawn(self, coro: Any, name: str, group: set[asyncio.Task[Any]] | None = None) -> asyncio.Task[Any]:
        """A background job, tracked in ``group`` (``_jobs`` unless told) until it ends; its failure is logged."""
        jobs = self._jobs if group is None else group
        job = asyncio.create_task(coro, name=name)
        jobs.add(job)
        job.add_done_callback(jobs.discard)
        job.add_done_callback(self._job_done)
        return job

    @staticmethod
    def _job_done(job: asyncio.Task[Any]) -> None:
        if not job.cancelled() and job.exception() is not None:
            log.error("cluster job %s failed", job.get_name(), exc_info=job.exception())

    def _loop_ended(self, loop: asyncio.Task[Any]) -> None:
        """Each loop runs for the replica's life and handles its own errors: one that ends anyway (a bug) would
        leave the replica deaf to the cluster while it still answers, so it says so, and /api/health drains it."""
        if loop.cancelled() or self.stopping:
            return
        exc = loop.exception()
        self.stopped_loop = f"{loop.get_name()}: " + (f"{type(exc).__name__}: {exc}" if exc else "ended")
        log.critical("the %s loop stopped; /api/health now answers 503", loop.get_name(), exc_info=exc)

    # --- health --------------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self.redis_ok and self.writer.ok and self.store_ok and self.stopped_loop is None

    def describe(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "redis": self.redis_ok and self.writer.ok,
            "storage": self.store_ok if self.objects is not None else None,
            "storage_error": self.store_error,
            "owned": sorted(self._ready),
            "writes_queued": len(self.writer),
            "stopped_loop": self.stopped_loop,
        }

    def require(self) -> None:
        """Refuse a write while what it needs is away: nothing is accepted that is not stored."""
        if not (self.redis_ok and self.writer.ok):
            raise ClusterUnavailable("Redis is unreachable: nothing can be stored now; retry shortly", retry_after=2)
        if not self.store_ok:
            raise ClusterUnavailable(
                "the object store is unreachable: outputs cannot be stored now; retry shortly", retry_after=2
            )

    async def _watch_health(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.redis.ping(), 2)
                if not self.redis_ok:
                    log.info("Redis answers again")
                self.redis_ok = True
            except (RedisError, OSError, TimeoutError) as exc:
                if self.redis_ok:
                    log.warning("Redis is unreachable: %s", exc)
                self.redis_ok = False
            if self.objects is not None:
                try:
                    await asyncio.wait_for(self.objects.ping(), 3)
                    if not self.store_ok:
                        log.info("the object store answers again")
                    self.store_ok, self.store_error = True, None
                except (StoreUnavailable, TimeoutError) as exc:
                    if self.store_ok:
                        log.warning("the object store is unreachable: %s", exc)
                    self.store_ok, self.store_error = False, str(exc)[:300] or "no answer"
            await asyncio.sleep(HEALTH_EVERY)

    # --- the event stream -------------------------------------------------------------------------------
    def _on_entry(self, entry_id: str, fields: Fields) -> None:
        kind, text, task_id = field(fields, b"k"), field(fields, b"d"), field(fields, b"t") or None
        if kind == "rec":
            self.store.apply_record(text)
            return
        if kind == "task_update" and task_id is not None and task_id not in self.store.live:
            try:
                self.store.apply_update(task_id, json.loads(text))
            except ValueError:
                pass
        if self.bus is not None:
            self.current_id = stream_int(entry_id)
            try:
                self.bus.deliver(text, task_id, kind, field(fields, b"c"), field(fields, b"s"))
            finally:
                self.current_id = None

    async def preload_events(self, events: Any, task_id: str) -> None:
        """Fill this replica's SSE log of ``task_id`` from the task's stream (it may have joined late)."""
        log_ = events.log(task_id)
        if log_.entries and len(log_.entries) > 1:
            return
        try:
            found = entries(await self.redis.xrange(self.key("ev", task_id), count=self.settings.event_log_size))
        except RedisError:
            return
        log_.merge((stream_int(entry_id), field(fields, b"k"), field(fields, b"d")) for entry_id, fields in found)

    async def ensure_task(self, task_id: str) -> None:
        """Load a task this replica has not heard of yet (its record may be a few ms ahead of the stream)."""
        if self.store.get(task_id) is not None:
            return
        try:
            found = await self.records.load(task_id, with_workflow=False)
            if found is None:
                other = await self.records.by_prompt(task_id)
                found = await self.records.load(other, with_workflow=False) if other else None
        except RedisError:
            return
        if found is not None and self.store.get(found.task_id) is None:
            self.store.local.add(found)

    # --- ownership of backends ------------------------------------------------------------------------
    async def _lease_changed(self, name: str, held: bool) -> None:
        backend = self.backends[name]
        if held:
            log.info("%s owns %s now", self.replica, name)
            await self._adopt(backend)
            return
        log.info("%s no longer owns %s", self.replica, name)
        self._ready.discard(name)
        backend.closing.set()
        await self._drain(backend)
        ids = list(backend.inflight)
        await backend.give_up()
        for task_id in ids:
            self._let_go(task_id)

    def _let_go(self, task_id: str) -> None:
        """Another replica drives this task from now on (the lease of its backend is going or gone)."""
        self.store.release(task_id)
        if self.manager is not None:
            self.manager.timers.cancel(task_id)

    async def _drain(self, backend: SharedBackend) -> None:
        """Before a lease goes (its backend is closing: nothing new starts there): let the hand-overs under way end
        and the outputs being gathered be stored, and their records reach Redis, so that the next owner reads
        their outcome instead of guessing it. Bounded by ``DRAIN_WAIT``; what is still under way then is left to
        the next owner, which looks for it on ComfyUI before posting anything."""
        deadline = time.monotonic() + DRAIN_WAIT
        if not await backend.handed(DRAIN_WAIT):
            log.warning("%d hand-over(s) to %s still going: the next owner checks them", backend.handing, backend.name)
        if self.manager is not None:  # tasks whose outputs are downloading end here, once
            await self.manager.endings.completions_ended(set(backend.inflight), deadline - time.monotonic())
        try:
            await self.writer.call(lambda pipe: pipe.ping(), timeout=max(1.0, deadline - time.monotonic()))
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("the last writes about %s may not be stored before its lease goes: %s", backend.name, exc)

    async def _adopt(self, backend: SharedBackend) -> None:
        """Take the backend's unfinished tasks, open its WebSocket, then look for those whose post is unsure.

        The event stream is read up to what the last owner wrote first, so the tasks taken over carry the
        progress its listeners last saw. Tasks whose inbox note still waits were never posted: the inbox
        serves them. The backend is served (inbox, shared queue) once connected and described."""
        manager = self.manager
        assert manager is not None
        try:
            await self._catch_up()
            tasks = await self.records.unfinished_on(backend.name)
            waiting = await self._inbox_ids(backend.name)
            await self.redis.hset(self.key("load"), backend.name, len(tasks))
        except (RedisError, OSError) as exc:
            log.warning("could not adopt the tasks of %s yet: %s", backend.name, exc)
            if self.leases is not None:
                self._spawn(self.leases.give_up(backend.name), f"give up {backend.name}")
            return
        now = time.time()
        unsure: list[Task] = []
        for loaded in tasks:
            if loaded.task_id in self.store.live:
                continue
            if loaded.status == TaskStatus.PENDING and loaded.task_id in waiting:
                continue  # never posted: its note is served once the backend is ready
            task = self.store.adopt(loaded)
            task.extra["charged"] = backend.name
            manager.pool.remember_classes(task, workflow_classes(task.workflow))
            backend.inflight.add(task.task_id)
            manager.endings.arm_timeout(task, max(task.timeout - (now - task.created_at), 1.0))
            if task.status == TaskStatus.PENDING:
                unsure.append(task)
        backend.take()
        await self._until_healthy(backend)
        if unsure:
            self._spawn(self._post_unsure(backend, unsure), f"unsure {backend.name}")
        self._ready.add(backend.name)
        self._kick.set()
        await self._publish_state(backend)

    async def _catch_up(self) -> None:
        if not await self.caught_up(CATCH_UP_WAIT):
            log.warning("the event stream is behind: tasks are taken over with older progress")

    async def caught_up(self, timeout: float) -> bool:
        """Until this replica's stream reader has read every entry written so far (at most ``timeout`` s): then
        whatever any replica has told its listeners, this replica's reads show too (no state goes back when a
        client's next request lands on another replica)."""
        last = entries(await self.redis.xrevrange(self.key("events"), count=1))
        return not last or await self.reader.reached(last[0][0], timeout)

    async def _inbox_ids(self, name: str) -> set[str]:
        """The tasks whose notes wait in ``name``'s inbox (posts other replicas asked for, not yet served)."""
        ids = set()
        for raw in await self.redis.lrange(self.key("inbox", name), 0, -1):
            try:
                note = json.loads(raw)
            except ValueError:
                continue
            if isinstance(note, dict) and note.get("op") == "post":
                ids.add(str(note.get("task_id")))
        return ids

    async def _until_healthy(self, backend: SharedBackend) -> None:
        """A new owner's backend goes into rotation once its WebSocket is up and its object_info known (bounded):
        the others would otherwise see it unhealthy for a moment (no uploads, no tasks sent there)."""

        async def ready() -> None:
            await backend.ws.connected.wait()
            await backend.refresh_object_info()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready(), HEALTHY_WAIT)

    async def _post_unsure(self, backend: SharedBackend, tasks: list[Task]) -> None:
        """Tasks stored as handed to this backend whose post may have happened (the owner died or gave the lease
        up in the middle, or ComfyUI did not answer): posted only when ComfyUI surely does not have them. One
        absent at the first look is looked for again ``UNSURE_GRACE`` s later (ComfyUI may still be validating
        it), and posted only if still absent; should the lease go meanwhile, the next owner looks for itself."""
        manager = self.manager
        assert manager is not None
        for look in (1, 2):
            try:
                known = await self._known(backend, tasks)
            except ComfyGateError as exc:
                log.warning(
                    "cannot check %d unsure task(s) on %s (%s): the reconnect settles them",
                    len(tasks),
                    backend.name,
                    exc.message,
                )
                for task in tasks:
                    task.status = TaskStatus.QUEUED
                self._spawn(manager.recovery.reconcile(backend), f"reconcile {backend.name}")
                return
            found = [t for t in tasks if t.prompt_id in known and t.status == TaskStatus.PENDING]
            for task in found:
                task.status = TaskStatus.QUEUED  # posted before: events or history tell the rest
                manager.updates.notify(task, "status")
            if found:  # the reconciliation of the WebSocket's connect skipped them (unsure then)
                self._spawn(manager.recovery.reconcile(backend), f"reconcile {backend.name}")
            tasks = [t for t in tasks if t.status == TaskStatus.PENDING and t.backend == backend.name]
            tasks = [t for t in tasks if self.drives(t)]
            if not tasks:
                return
            if look == 1:
                try:
                    await asyncio.wait_for(backend.closing.wait(), UNSURE_GRACE)
                    return  # the lease goes: the next owner looks for them
                except TimeoutError:
                    pass
        for task in tasks:
            await self._dispatch_here(task, backend)

    @staticmethod
    async def _known(backend: SharedBackend, tasks: list[Task]) -> set[str]:
        """The prompt ids of ``tasks`` that ComfyUI has: queued, running or in its history."""
        queue = await backend.client.get_queue()
        known = {item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])}
        for task in tasks:
            if task.prompt_id not in known and (await backend.client.get_history(task.prompt_id)).get(task.prompt_id):
                known.add(task.prompt_id)
        return known & {t.prompt_id for t in tasks}

    async def _dispatch_here(self, task: Task, backend: SharedBackend) -> bool:
        """Post ``task`` (adopted already, stored as handed to ``backend``, which this replica owns). One that fails
        to go is failed or held again; one whose post may have happened is looked for before anything else; while
        the lease is being given back nothing is posted: the task stays stored so, for the next owner."""
        if backend.closing.is_set() or not backend.owned:
            backend.inflight.discard(task.task_id)
            self._let_go(task.task_id)  # its record names the backend: the next owner's
            return False
        manager = self.manager
        assert manager is not None
        with backend.handing_over():  # (its outcome is stored before the lease can go)
            try:
                await manager.submitter.dispatch(task, backend, keep_unsure=True)
            except PostUnsure:
                self._unsure(task, backend)
                return False
            except asyncio.CancelledError:
                self._unsure(task, backend)
                raise
            except PromptRejected as exc:
                self._uncharge(task)
                manager.endings.fail(task, _rejected(backend, exc))
                return False
            except ComfyUIUnavailable:
                self._uncharge(task)
                task.status, task.backend = TaskStatus.PENDING, None
                self.requeue(task)
                return False
            except ComfyGateError as exc:
                self._uncharge(task)
                manager.endings.fail(task, dispatch_failure(exc))
                return False
        if not task.status.final:
            manager.endings.arm_timeout(task, max(task.timeout - (time.time() - task.created_at), 1.0))
        return True

    def _unsure(self, task: Task, backend: SharedBackend) -> None:
        """A post whose outcome is unknown (no answer once the request had left, or cancelled meanwhile). ComfyUI
        may have the prompt, so the task is never queued again for any backend (it could run twice): it stays
        handed to ``backend``, stored so, and its owner looks for it on ComfyUI before posting it again."""
        task.status, task.backend = TaskStatus.PENDING, backend.name
        task.extra["charged"] = backend.name
        log.warning("task %s: its post to %s may have happened; looking for it there first", task.task_id, backend.name)
        if backend.owned and not backend.closing.is_set():
            self.store.add(task)
            backend.inflight.add(task.task_id)
            self.records.save(task, with_workflow=True)
            self._spawn(self._post_unsure(backend, [task]), f"unsure {task.task_id}")
        else:  # its record says so already (stored before the post): the next owner looks for it
            self._let_go(task.task_id)

    # --- backend states and loads, shared --------------------------------------------------------------
    async def _publish_state(self, backend: SharedBackend) -> None:
        try:
            await self.redis.set(
                self.key("backend", backend.name),
                json.dumps(backend.state(self.replica)),
                px=int(STATE_TTL * 1000),
            )
        except RedisError:
            pass

    async def _sweep(self) -> None:
        """Tasks stored as handed to a backend owned here that nobody drives (an inbox note lost with a
        replica, or a Redis outage in between): taken up as a takeover would."""
        manager = self.manager
        assert manager is not None
        for name in sorted(self._ready):
            backend = self.backends[name]
            try:
                tasks = await self.records.unfinished_on(name)
                waiting = await self._inbox_ids(name)
            except (RedisError, OSError):
                return
            stale = [
                t
                for t in tasks
                if t.task_id not in self.store.live
                and t.task_id not in waiting
                and t.status == TaskStatus.PENDING
                and time.time() - t.created_at > SWEEP_AFTER
            ]
            if not stale or not backend.owned or backend.closing.is_set():
                continue
            log.warning("taking up %d task(s) stored for %s that nobody posted", len(stale), name)
            adopted = []
            for loaded in stale:
                if loaded.task_id in self.store.live:
                    continue
                task = self.store.adopt(loaded)
                task.extra["charged"] = name
                manager.pool.remember_classes(task, workflow_classes(task.workflow))
                backend.inflight.add(task.task_id)
                manager.endings.arm_timeout(task, max(task.timeout - (time.time() - task.created_at), 1.0))
                adopted.append(task)
            self._spawn(self._post_unsure(backend, adopted), f"unsure {name}")

    async def _look_around(self, rounds: int) -> None:
        """Now and then, in the state exchange: tasks nobody posted, ViewComfy tasks whose replica died."""
        if rounds % SWEEP_EVERY == 0:
            try:
                await self._sweep()
            except Exception:
                log.exception("sweep of unposted tasks failed")
        if rounds % ORPHANS_EVERY == 0 and (self._orphans is None or self._orphans.done()):
            # In the background: this loop renews the alive key, which a slow adoption must never hold up.
            self._orphans = self._spawn(self._adopt_orphans(), "orphans")

    async def _exchange_states(self) -> None:
        names = list(self.backends)
        rounds = 0
        while True:
            rounds += 1
            await self._look_around(rounds)
            try:
                pipe = self.redis.pipeline(transaction=False)
                going = self._going
                self._alive(pipe, going)
                for backend in self.backends.values():
                    if backend.name in self._ready or (backend.owned and backend.closing.is_set()):  # (draining)
                        pipe.set(
                            self.key("backend", backend.name),
                            json.dumps(backend.state(self.replica)),
                            px=int(STATE_TTL * 1000),
                        )
                pipe.mget([self.key("backend", n) for n in names])
                pipe.hgetall(self.key("load"))
                results = await pipe.execute()
                states, loads = results[-2], results[-1]
                if going:
                    self._gone.set()
                now = time.monotonic()
                for name, raw in zip(names, states, strict=True):
                    backend = self.backends[name]
                    backend.cluster_load = int(loads.get(name.encode(), 0) or 0)
                    if raw is None:
                        backend.remote_state = None
                        continue
                    backend.remote_state = json.loads(raw)
                    backend.remote_seen = now
                    if not backend.owned and backend.node_classes is None and backend.remote_state.get("healthy"):
                        self._spawn(backend.refresh_object_info(), f"object_info {name}")
            except (RedisError, OSError):
                pass
            await asyncio.sleep(STATE_EVERY)

    def _alive(self, pipe: Any, going: bool) -> None:
        key = self.key("alive", self.incarnation)
        if going:
            pipe.delete(key)
        else:
            pipe.set(key, self.replica, px=int(self.alive_ttl * 1000))

    async def _renew_alive(self) -> None:
        """This replica lives (renewed with the state exchange): survivors adopt its ViewComfy tasks once it is gone."""
        pipe = self.redis.pipeline(transaction=False)
        self._alive(pipe, going=False)
        await pipe.execute()

    async def _adopt_orphans(self) -> None:
        """ViewComfy tasks whose driving replica stopped renewing its alive key (killed: it ended nothing): each is
        claimed by one survivor (``ADOPT``), which brings it to its end through its own client of the backend."""
        if self.manager is None or self.stopping or not self.redis_ok:
            return
        orphans = [
            t
            for t in self.store.unfinished()
            if t.backend
            and t.backend not in self.backends
            and t.extra.get("driven_by") not in (None, self.incarnation)  # (ours in the making, if not live yet)
            and not self.drives(t)
        ]
        if not orphans:
            return
        drivers = sorted({str(t.extra["driven_by"]) for t in orphans})
        try:
            alive = await self.redis.mget([self.key("alive", d) for d in drivers])
            gone = {d for d, a in zip(drivers, alive, strict=True) if a is None}
            for task in orphans:
                if task.extra["driven_by"] in gone and not self.drives(task):
                    await self._adopt_orphan(task)
        except (RedisError, OSError) as exc:
            log.warning("could not look for ViewComfy tasks of stopped replicas: %s", exc)

    async def _adopt_orphan(self, mirror: Task) -> None:
        manager = self.manager
        assert manager is not None
        claim_ttl = int(mirror.timeout) + 3600  # outlives the task (its timeout ends it)
        args: list[str | int] = [self.incarnation, self.key("alive", ""), str(mirror.extra["driven_by"]), claim_ttl]
        if not await self.redis.eval(ADOPT, 1, self.key("claim", mirror.task_id), *args):
            return  # its driver lives (another survivor adopted it first)
        loaded = await self.records.load(mirror.task_id)
        if loaded is None or loaded.status.final:
            return  # it ended before its replica stopped (this replica's mirror was behind)
        lost = str(loaded.extra.get("driver") or loaded.extra["driven_by"])
        log.warning("%s adopts ViewComfy task %s: %s stopped", self.replica, loaded.task_id, lost)
        task = self.store.adopt(loaded)
        task.extra.update(driver=self.replica, driven_by=self.incarnation)
        self.records.save(task)  # interrupts come here now
        backend = manager.pool.backends.get(task.backend or "")
        if backend is not None:
            backend.inflight.add(task.task_id)
        manager.endings.arm_timeout(task, max(task.timeout - (time.time() - task.created_at), 1.0))
        if isinstance(backend, TakesOver):
            await backend.take_over(task, manager, lost)
        else:  # (this replica has no such backend)
            message = f"the replica running this task stopped ({lost}), and this one has no backend {task.backend}"
            manager.endings.fail(task, {"type": "replica_lost", "message": message, "replica": lost})

    def _uncharge(self, task: Task) -> None:
        charged = task.extra.pop("charged", None)
        if charged:
            self.writer.submit(lambda pipe: pipe.hincrby(self.key("load"), charged, -1))

    def _observe(self, task: Task, change: str) -> None:
        """Task observer on the replica that drives the task: its record follows every change."""
        if change == "finished":
            self._uncharge(task)
        self.records.save(task, with_workflow=change == "created")

    # --- Placement: where tasks go --------------------------------------------------------------------
    def drives(self, task: Task) -> bool:
        return task.task_id in self.store.live

    async def place(self, task: Task) -> Task:
        self.require()
        manager = self.manager
        assert manager is not None
        pool = manager.pool
        able = [b for b in self.backends.values() if b.healthy and pool.fits(task, b)]
        bound = pool.bound_here.get(task.task_id)
        if bound is not None:
            able = self._owned_here(able, bound)
        able.sort(key=lambda b: self._given.get(b.name, 0))
        chosen: str | None = None
        if able:
            here = next((b for b in able if b.owned and b.name in self._ready and not b.closing.is_set()), None)
            if here is not None:
                with here.handing_over():  # (from the record that names it, as in _post_new)
                    chosen, stored = await self._choose_and_store(task, able, here)
                    if chosen == here.name:
                        self._given[chosen] = self._given.get(chosen, 0) + 1
                        return await self._post_new(task, here, stored=stored)
            else:
                forwarded = await self._choose_and_forward(task, able)
                if forwarded is not None:
                    return forwarded
        if chosen is None:
            own = self._own_backend(task)
            if own is not None:
                return await self._post_own(task, own)
            return await self._hold(task)
        backend = self.backends[chosen]
        self._given[chosen] = self._given.get(chosen, 0) + 1
        task.backend = chosen
        task.extra["charged"] = chosen
        if backend.owned and chosen in self._ready and not backend.closing.is_set():
            return await self._post_new(task, backend)
        return await self._forward(task, backend)

    async def _choose(self, able: list[SharedBackend]) -> str | None:
        """The least loaded of ``able`` with room (charged with the task), atomically across replicas."""
        try:
            answer = await self._script(
                CHOOSE, [self.key("load")], [self.settings.max_backend_queue, *[b.name for b in able]]
            )
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc
        return text_or_none(answer)

    async def _script(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        """A submission's script on the lane (its kept connection), through the pool while it is busy (a burst)."""
        return await self.lane.run_script(script, keys, args, fallback=self.redis)

    async def _choose_and_store(
        self, task: Task, able: list[SharedBackend], here: SharedBackend
    ) -> tuple[str | None, bool | None]:
        """``_choose``, and when the choice is ``here`` (a backend this replica posts to) the task's record stored
        in the same round trip (CHOOSE_SAVE): (the choice, whether stored: None = not tried, False = fenced)."""
        task.backend = here.name
        task.extra["charged"] = here.name
        keys, args = self.records.save_args(task, with_workflow=True)
        names = [b.name for b in able]
        limit = self.settings.max_backend_queue
        try:
            answer = await self._script(
                CHOOSE_SAVE, [self.key("load"), *keys], [limit, len(names), *names, here.name, *args]
            )
        except (RedisError, OSError) as exc:
            task.backend = None
            task.extra.pop("charged", None)
            self.records.not_stored(task)
            raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc
        except asyncio.CancelledError:
            self.records.delete(task)  # it may have been stored, it was never posted: no trace
            raise
        chosen = text_or_none(answer[0]) if answer else None
        if chosen != here.name:
            task.backend = None
            task.extra.pop("charged", None)
            self.records.not_stored(task)
            return chosen, None
        stored = len(answer) > 1 and answer[1] is not None
        if stored:
            self.records.tell(keys, args)  # (behind the post: the writer sends it on the loop's next turn)
        else:
            self.records.not_stored(task)  # (fenced)
        return chosen, stored

    async def _post_new(self, task: Task, backend: SharedBackend, stored: bool | None = None) -> Task:
        """A new task posted by this replica, the owner of ``backend``. Its record names the backend before the
        post (and only while the lease is ours: fenced), so a crash at any point leaves it for the next owner.
        ``stored``: whether the record was stored already (with the choice of the backend), None = not yet."""
        manager = self.manager
        assert manager is not None
        posting = False
        with backend.handing_over():  # (its outcome is stored before the lease can go)
            try:
                if not (await self._store(task) if stored is None else stored):
                    raise ComfyUIUnavailable(f"{backend.name} has another owner now; retry", retry_after=1)
                posting = True
                await manager.submitter.dispatch(task, backend, new=True, keep_unsure=True)
            except PostUnsure:
                self._unsure(task, backend)
                return task  # accepted: stored, and ComfyUI may have it
            except asyncio.CancelledError:
                if posting:
                    self._unsure(task, backend)
                else:
                    self._uncharge(task)
                    self.records.delete(task)  # never posted, never answered: no trace
                raise
            except ComfyUIUnavailable:  # ComfyUI surely did not take it
                self._uncharge(task)
                task.backend = None
                return await self._hold(task)
            except BaseException:
                self._uncharge(task)
                raise
        return task

    def _own_backends(self) -> list[Backend]:
        """This replica's own backends (ViewComfy: each replica has its own client of it) that can take a task now:
        healthy, with room, and not while this replica stops (what it would start there, it would have to leave)."""
        assert self.manager is not None
        pool = self.manager.pool
        if self.stopping:
            return []
        return [b for b in pool.backends.values() if b.name not in self.backends and b.healthy and pool.has_room(b)]

    def _own_backend(self, task: Task) -> Backend | None:
        """The least loaded of ``_own_backends`` that can run ``task``; as on a single replica, only used when no
        ComfyUI server can."""
        assert self.manager is not None
        own = [b for b in self._own_backends() if self.manager.pool.fits(task, b)]
        return min(own, key=lambda b: b.load) if own else None

    async def _take_own(self, loaded: Task, backend: Backend) -> None:
        """A waiting task that only a replica's own backend can run (it was unhealthy or full when the task came):
        taken out of the shared queue by the replica whose own backend has room now (the ZREM decides who)."""
        manager = self.manager
        assert manager is not None
        loaded.backend = backend.name
        loaded.extra.update(driver=self.replica, driven_by=self.incarnation)
        if await self.records.save_now(loaded, take_from=self.key("pending")) is None:
            return  # another replica's now
        task = self.store.adopt(loaded)
        manager.pool.remember_classes(task, workflow_classes(task.workflow))
        try:
            await manager.submitter.dispatch(task, backend)
        except ComfyUIUnavailable:
            task.status, task.backend = TaskStatus.PENDING, None
            self.requeue(task)
        except PromptRejected as exc:
            manager.endings.fail(task, _rejected(backend, exc))
        except ComfyGateError as exc:
            manager.endings.fail(task, dispatch_failure(exc))
        else:
            if not task.status.final:
                manager.endings.arm_timeout(task, max(task.timeout - (time.time() - task.created_at), 1.0))

    async def _post_own(self, task: Task, backend: Backend) -> Task:
        """A task for one of this replica's own backends: stored, then handed over and driven here (its record
        and events go to every replica as any other's)."""
        manager = self.manager
        assert manager is not None
        task.backend = backend.name
        task.extra["driver"] = self.replica  # where an interrupt from another replica is sent
        task.extra["driven_by"] = self.incarnation  # whose death a survivor watches for (``_adopt_orphans``)
        # Counted at once, not once stored: a submission placed meanwhile sees it (COMFYUI_MAX_BACKEND_QUEUE).
        backend.inflight.add(task.task_id)
        try:
            if not await self._store(task):
                raise ClusterUnavailable("Redis did not store the task; retry shortly", retry_after=2)
        except BaseException:
            backend.inflight.discard(task.task_id)
            raise
        await manager.submitter.dispatch(task, backend, new=True)
        return task

    def _owned_here(self, able: list[SharedBackend], bound: str) -> list[SharedBackend]:
        """A task that needs what only this replica holds (``bound``: a per-request partner-node key, never
        stored; a v2 job's uploaded files) can only go to a backend this replica posts to itself, one it owns."""
        owned = [b for b in able if b.owned and b.name in self._ready and not b.closing.is_set()]
        if not owned:
            raise ServiceBusy(
                f"cluster mode: a task that needs {bound} runs on a ComfyUI server owned by the replica that took it, "
                "and this one owns none that can run it now; retry (another replica may take the request)"
                + (", or set the key for every replica with COMFYUI_COMFY_ORG_API_KEYS" if "api_key" in bound else ""),
                retry_after=2,
            )
        return owned

    async def _store(self, task: Task) -> bool:
        """Write the record (with its workflow) and wait for Redis to have it; False when the fence refused it
        (the lease of the task's backend is no longer this replica's)."""
        try:
            return await self.records.save_now(task) is not None
        except (TimeoutError, RedisError, OSError) as exc:
            self._uncharge(task)
            raise ClusterUnavailable("Redis did not store the task in time; retry shortly", retry_after=2) from exc

    async def _hold(self, task: Task) -> Task:
        """No backend has room: the task waits in the shared queue, stored before it is accepted."""
        manager = self.manager
        assert manager is not None
        bound = manager.pool.bound_here.get(task.task_id)
        if bound is not None:  # whoever takes it from the shared queue would not have it
            manager.pool.release(task)
            raise ServiceBusy(
                f"cluster mode: no ComfyUI server owned by this replica has room for a task that needs {bound}, "
                "which stays on this replica (so it cannot wait in the shared queue); retry shortly",
                retry_after=5,
            )
        try:
            waiting = await self.redis.zcard(self.key("pending"))
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc
        if waiting >= self.settings.max_pending_tasks:
            manager.pool.forget_classes(task)
            raise ServiceBusy(
                f"ComfyGate's queue is full: {waiting} tasks wait for a backend; retry later",
                retry_after=5,
                pending=waiting,
            )
        task.status, task.backend = TaskStatus.PENDING, None
        record_op = self.records.save_op(task, with_workflow=True)
        pending_key, task_id, created = self.key("pending"), task.task_id, task.created_at

        def op(pipe: Any) -> None:
            record_op(pipe)
            pipe.zadd(pending_key, {task_id: created})

        try:
            await self.writer.call(op, count=2)
        except (TimeoutError, RedisError, OSError) as exc:
            raise ClusterUnavailable("Redis did not store the task in time; retry shortly", retry_after=2) from exc
        self.store.local.add(task)  # a mirror until an owner takes it
        manager.pool.forget_classes(task)  # whoever takes it from the queue reads them from its workflow
        manager.updates.notify(task, "created")
        manager.updates.task(task)
        self._kick_all()
        return task

    def requeue(self, task: Task) -> None:
        """Back to the shared queue (its backend went away before it started); not driven here any more."""
        self._uncharge(task)
        self.store.release(task.task_id)
        if self.manager is not None:
            self.manager.timers.cancel(task.task_id)
        # With its workflow: a failed hand-over may have dropped the whole record before this.
        record_op = self.records.save_op(task, with_workflow=bool(task.workflow))
        pending_key, task_id, created = self.key("pending"), task.task_id, task.created_at

        def op(pipe: Any) -> None:
            record_op(pipe)
            pipe.zadd(pending_key, {task_id: created})

        self.writer.submit(op, count=2)
        self._kick_all()

    def _kick_all(self) -> None:
        channel = self.key("kick")
        self.writer.submit(lambda pipe: pipe.publish(channel, "1"))

    def _note(self, task: Task) -> str:
        """What the owner of the task's backend finds in its inbox: post it, answer this replica."""
        return json.dumps({"op": "post", "task_id": task.task_id, "reply_to": self.replica})

    def _expect_reply(self, task: Task) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[task.task_id] = future  # (before the note can be read: the answer may come at once)
        return future

    async def _choose_and_forward(self, task: Task, able: list[SharedBackend]) -> Task | None:
        """For a replica that owns none of ``able``: the choice, the record naming it and the note in its owner's
        inbox in one round trip (CHOOSE_FORWARD), then ``_forward``'s wait for the owner. None: none has room."""
        placeholder = uuid.uuid4().hex  # where the choice goes in the record, once made
        task.backend = placeholder
        task.extra["charged"] = placeholder
        keys, args = self.records.save_args(task, with_workflow=True, fenced=False)
        task.backend = None
        task.extra.pop("charged", None)
        names = [b.name for b in able]
        future = self._expect_reply(task)
        try:
            answer = await self._script(
                CHOOSE_FORWARD,
                [self.key("load"), *keys],
                [
                    self.settings.max_backend_queue,
                    len(names),
                    *names,
                    *args,
                    placeholder,
                    self.key("inbox", ""),
                    self._note(task),
                ],
            )
        except (RedisError, OSError) as exc:
            self._replies.pop(task.task_id, None)
            self.records.not_stored(task)
            raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc
        except BaseException:
            self._replies.pop(task.task_id, None)
            raise
        chosen = text_or_none(answer)
        if chosen is None:
            self._replies.pop(task.task_id, None)
            self.records.not_stored(task)
            return None
        self._given[chosen] = self._given.get(chosen, 0) + 1
        task.backend = chosen
        task.extra["charged"] = chosen
        return await self._forward(task, self.backends[chosen], future)

    async def _forward(
        self, task: Task, backend: SharedBackend, future: asyncio.Future[dict[str, Any]] | None = None
    ) -> Task:
        """The owner of ``backend`` posts it; its answer comes back on this replica's reply channel. ``future``: that
        answer's, when the record and the note are stored already (``_choose_and_forward``)."""
        if self.manager is not None:  # routed here, driven there: the owner keeps its classes itself
            self.manager.pool.forget_classes(task)
        try:
            if future is None:
                future = self._expect_reply(task)
                record_op = self.records.save_op(task, with_workflow=True, fenced=False)  # (the owner's to post)
                inbox, note = self.key("inbox", backend.name), self._note(task)

                def op(pipe: Any) -> None:
                    record_op(pipe)
                    pipe.rpush(inbox, note)

                try:
                    await self.writer.call(op, count=2)
                except (TimeoutError, RedisError, OSError) as exc:
                    self._uncharge(task)
                    raise ClusterUnavailable(
                        "Redis did not store the task in time; retry shortly", retry_after=2
                    ) from exc
            try:
                reply = await asyncio.wait_for(asyncio.shield(future), FORWARD_WAIT)
            except TimeoutError:
                # Stored and in the owner's inbox: whoever owns the backend next posts it. Answer as it stands.
                self.store.local.add(task)
                return task
        finally:
            self._replies.pop(task.task_id, None)
        if reply.get("ok"):
            self.store.apply_record(reply["record"])  # the owner's answer may be ahead of the stream
            current = self.store.get(task.task_id)
            if current is None:  # (an unreadable record is logged; the task as submitted stands for it)
                current = task_from_record(reply["record"], None) or task
                self.store.local.add(current)
            return current
        if reply.get("kind") == "rejected":
            raise PromptRejected(reply.get("error"), reply.get("node_errors"), reply.get("message"))
        raise ComfyUIUnavailable(reply.get("message") or f"{backend.name} did not take the task", retry_after=2)

    async def interrupt(self, task: Task) -> None:
        """Stop a task this replica does not drive: a queued one is taken out of the shared queue here,
        one on a backend is stopped by that backend's owner."""
        if task.status == TaskStatus.PENDING and task.backend is None:
            try:
                claimed = await self.redis.zrem(self.key("pending"), task.task_id)
            except RedisError as exc:
                raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc
            if claimed:
                fresh = self.store.adopt(await self.records.load(task.task_id) or task)
                assert self.manager is not None
                self.manager.endings.finish_interrupted(fresh, "cancelled before dispatch")
                return
        if not task.backend:
            return
        note = json.dumps({"op": "interrupt", "task_id": task.task_id, "reply_to": self.replica})
        # One on a replica's own backend (ViewComfy) is stopped by that replica; one on a ComfyUI server, by its owner.
        inbox = (
            f"@{task.extra['driver']}"
            if task.backend not in self.backends and task.extra.get("driver")
            else task.backend
        )
        try:
            await self.redis.rpush(self.key("inbox", inbox), note)
        except RedisError as exc:
            raise ClusterUnavailable(f"Redis is unreachable: {exc}; retry shortly", retry_after=2) from exc

    # --- inboxes: what other replicas ask of the backends owned here --------------------------------------
    async def _serve_inboxes(self) -> None:
        while True:
            keys = [self.key("inbox", name) for name in sorted(self._ready)]
            keys.append(self.key("inbox", f"@{self.replica}"))  # about the tasks on its own backends
            if self.stopping:
                await asyncio.sleep(0.1)
                continue
            try:
                item = await self.inboxes.call("BLPOP", *keys, INBOX_BLOCK_S, timeout=INBOX_BLOCK_S + ANSWER_S)
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
                continue
            if item is None:
                continue
            key, raw = item
            name = text(key).removeprefix(self.key("inbox", ""))
            try:
                note = json.loads(raw)
            except ValueError:
                continue
            if name == f"@{self.replica}":
                self._spawn(self._interrupt_own(str(note.get("task_id"))), f"inbox {name}")
            else:
                self._spawn(self._serve_surely(name, note), f"inbox {name}")

    async def _serve_surely(self, name: str, note: dict[str, Any]) -> None:
        """The note is out of Redis now: while this replica owns the backend, a Redis blip only delays it.
        (Should this replica die, the task's record still says where it goes: the next owner posts it.)"""
        while True:
            try:
                await self._serve(name, note)
                return
            except (RedisError, OSError) as exc:
                if not self.backends[name].owned:
                    return
                log.warning("inbox note for %s waits for Redis: %s", name, exc)
                await asyncio.sleep(0.5)

    async def _serve(self, name: str, note: dict[str, Any]) -> None:
        manager = self.manager
        assert manager is not None
        backend = self.backends[name]
        task_id = str(note.get("task_id"))
        if note.get("op") == "interrupt":
            live = self.store.get(task_id)
            if live is not None and self.drives(live):
                await manager.endings.interrupt(live)
            elif backend.owned:
                await self._interrupt_unknown(backend, task_id)
            return
        if task_id in self.store.live:
            return  # adopted already (a takeover read it from the records)
        loaded = await self.records.load(task_id)
        if task_id in self.store.live:
            return  # (or a sweep, meanwhile)
        if loaded is None or loaded.status.final or loaded.backend != name:
            await self._reply(note, {"ok": False, "kind": "gone", "message": "the task is no longer waiting"})
            return
        if not backend.owned or name not in self._ready or backend.closing.is_set():
            await self.redis.lpush(self.key("inbox", name), json.dumps(note))  # for the next owner
            return
        with backend.handing_over():  # (its outcome is stored before the lease can go)
            answer = await self._post_forwarded(loaded, backend)
        await self._reply(note, answer)

    async def _post_forwarded(self, loaded: Task, backend: SharedBackend) -> dict[str, Any]:
        """Post a task another replica stored for ``backend`` (owned here); the answer for that replica."""
        manager = self.manager
        assert manager is not None
        task = self.store.adopt(loaded)
        task.extra["charged"] = backend.name
        manager.pool.remember_classes(task, workflow_classes(task.workflow))
        try:
            await manager.submitter.dispatch(task, backend, new=True, keep_unsure=True)
        except PostUnsure:
            self._unsure(task, backend)
        except asyncio.CancelledError:
            self._unsure(task, backend)
            raise
        except PromptRejected as exc:
            self._uncharge(task)
            return {
                "ok": False,
                "kind": "rejected",
                "message": exc.message,
                "error": exc.error,
                "node_errors": exc.node_errors,
            }
        except ComfyUIUnavailable:  # ComfyUI surely did not take it: any owner may
            self._uncharge(task)
            task.backend, task.status = None, TaskStatus.PENDING
            self.store.local.add(task)
            self.requeue(task)
        except ComfyGateError as exc:
            self._uncharge(task)
            return {"ok": False, "kind": "error", "message": exc.message}
        return {"ok": True, "record": task_record(task)}

    async def _interrupt_own(self, task_id: str) -> None:
        task = self.store.get(task_id)
        if task is not None and self.drives(task) and self.manager is not None:
            await self.manager.endings.interrupt(task)

    async def _interrupt_unknown(self, backend: SharedBackend, task_id: str) -> None:
        task = await self.records.load(task_id)
        if task is not None and not task.status.final:
            await backend.cancel(task)

    async def _reply(self, note: dict[str, Any], body: dict[str, Any]) -> None:
        body["task_id"] = note.get("task_id")
        try:
            await self.redis.publish(self.key("reply", str(note.get("reply_to"))), json.dumps(body, default=str))
        except RedisError:
            pass  # the submitter answers with the stored task after its wait

    async def _listen(self) -> None:
        """Replies to this replica's forwarded submissions, kicks (the shared queue has news), deleted v2 blobs."""
        while True:
            pubsub = self.blocking.pubsub()
            try:
                await pubsub.subscribe(self.key("reply", self.replica), self.key("kick"), self.key("asset_gone"))
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = text(message["channel"])
                    if channel == self.key("kick"):
                        self._kick.set()
                        continue
                    if channel == self.key("asset_gone"):
                        if self.assets is not None:
                            self.assets.gone(text(message["data"]))
                        continue
                    body = json.loads(message["data"])
                    future = self._replies.get(str(body.get("task_id")))
                    if future is not None and not future.done():
                        future.set_result(body)
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    # --- the shared queue --------------------------------------------------------------------------------
    async def _take_pending(self) -> None:
        """Owners take waiting tasks (oldest first) for their backends with room; a ZREM decides who."""
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), 1.0)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self._take_round()
            except (RedisError, OSError, ClusterUnavailable):  # (Redis away: the next round tries again)
                pass
            except Exception:
                log.exception("shared queue round failed")

    async def _take_round(self) -> None:
        manager = self.manager
        if manager is None or not self.redis_ok or self.stopping:
            return
        ids = texts(await self.redis.zrange(self.key("pending"), 0, 199))
        for task_id in ids:
            owned = [self.backends[n] for n in sorted(self._ready) if self.backends[n].healthy]
            if not owned and not self._own_backends():
                return
            await self._take_one(task_id, owned)

    async def _take_one(self, task_id: str, owned: list[SharedBackend]) -> None:
        """One waiting task: taken for a backend with room (a ComfyUI server this replica owns, else one of its own),
        timed out if it waited too long, or left waiting."""
        manager = self.manager
        assert manager is not None
        loaded = await self.records.load(task_id)
        if loaded is None or loaded.status.final:
            await self.redis.zrem(self.key("pending"), task_id)
            return
        task = loaded
        expired = time.time() - task.created_at > task.timeout
        able = [b for b in owned if manager.pool.fits(task, b)]
        if not able and not expired:
            own = self._own_backend(task)
            if own is not None:
                await self._take_own(loaded, own)
            return
        chosen = None
        if not expired:
            chosen = await self._choose(able)
            if chosen is None:
                return
        if chosen is None:
            if await self.redis.zrem(self.key("pending"), task_id):
                manager.endings.finish(
                    self.store.adopt(loaded),
                    TaskStatus.TIMEOUT,
                    error={"type": "timeout", "message": f"task exceeded its timeout of {task.timeout:g} s"},
                )
            return
        if not await self._take(loaded, self.backends[chosen]):
            await self.redis.hincrby(self.key("load"), chosen, -1)

    async def _take(self, loaded: Task, backend: SharedBackend) -> bool:
        """Take a waiting task out of the shared queue for ``backend`` (owned here) and post it; False when another
        replica took it first or the lease is going. Out of the queue and stored as handed to the backend in one
        step (fenced): a crash right after leaves it for the backend's next owner, never nowhere."""
        manager = self.manager
        assert manager is not None
        if backend.closing.is_set() or not backend.owned:
            return False
        with backend.handing_over():
            loaded.backend = backend.name
            loaded.extra["charged"] = backend.name
            if await self.records.save_now(loaded, take_from=self.key("pending")) is None:
                return False  # another replica's now
            task = self.store.adopt(loaded)
            manager.pool.remember_classes(task, workflow_classes(task.workflow))
            await self._dispatch_here(task, backend)
        return True

    # --- OutputKeeper: outputs into the object store -------------------------------------------------------
    async def keep(self, task: Task) -> None:
        """Store ``task``'s outputs now (a ViewComfy run's: the store holds their only other copy)."""
        if self.objects is None:
            return
        for item in task.outputs:
            await self._keep_one(item, KEEP_TRIES, 1.0)

    def keep_behind(self, task: Task) -> None:
        """Store a ComfyUI run's outputs once its task has completed (``KEEP_AFTER_S`` later: not while the completion
        is being delivered): its listeners hear of it without waiting for the store. Until an output is there, a
        replica asked for it gets it from the backend, which keeps it in its own output folder (``_from_backend``);
        so does every replica if this one dies first."""
        if self.objects is None or not task.outputs:
            return
        self._spawn(self._keep_behind(list(task.outputs)), f"keep {task.task_id}", self._keeping)

    async def _keep_behind(self, items: list[dict[str, Any]]) -> None:
        await asyncio.sleep(KEEP_AFTER_S)
        for item in items:
            try:
                await self._keep_one(item, KEEP_BEHIND_TRIES, 5.0)
            except (ComfyGateError, OSError) as exc:
                log.error("output %s not stored (%s); replicas fetch it from its backend", item.get("filename"), exc)

    async def _keep_one(self, item: dict[str, Any], tries: int, max_pause: float) -> None:
        assert self.objects is not None and self.manager is not None
        outputs = self.manager.outputs
        kind = item.get("type") or "output"
        name = str(item["filename"])
        # A small output just downloaded is in memory (its file is written behind): stored from there.
        cached = outputs.cache.peek(name) if kind == "output" else None
        if cached is None:
            await outputs.fetcher.settled(name)  # on disk before it is read from there
        path = (self.settings.outputs_dir if kind == "output" else self.manager.temp_dir) / name
        pause = min(0.5, max_pause)
        for attempt in range(tries):
            try:
                if cached is not None:
                    await self.objects.put_bytes(f"{kind}/{name}", cached.data)
                else:
                    await self.objects.put_file(f"{kind}/{name}", path)
                return
            except StoreUnavailable as exc:
                if attempt == tries - 1:
                    raise ComfyGateError(f"could not store output {name}: {exc}") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, max_pause)

    async def serve_file(self, kind: str, name: str) -> Response | Path | None:
        """An output this replica does not have on disk: streamed from the store, or a redirect to a signed
        URL; one not stored yet is fetched from its backend into this replica's folder (its path)."""
        if self.objects is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIND_OUTPUT_S
        while True:
            found = await self._from_store(kind, name)
            if found is not None:
                return found
            made = self._output_entry(kind, name)
            if made is not None:
                return await self._from_backend(kind, name, *made)
            # Not a task this replica has heard of: the update may be on its way from the stream.
            if loop.time() >= deadline or not _looks_like_output(name):
                return None
            await asyncio.sleep(0.05)

    async def _from_store(self, kind: str, name: str) -> Response | None:
        assert self.objects is not None
        key = f"{kind}/{name}"
        try:
            if self.settings.storage_redirect and self.objects.signs:
                if not await self.objects.exists(key):
                    return None
                url = await self.objects.sign(key)
                return RedirectResponse(url or "", status_code=307, headers={"Cache-Control": "no-store"})
            found = await self.objects.open(key)
        except StoreUnavailable as exc:
            raise ClusterUnavailable(f"the object store is unreachable ({exc}); retry shortly", retry_after=2) from exc
        if found is None:
            return None
        size, chunks = found
        return StreamingResponse(chunks, media_type=content_type(name), headers={"Content-Length": str(size)})

    def _output_entry(self, kind: str, name: str) -> tuple[Task, dict[str, Any]] | None:
        """The completed task that made output ``name`` (its file names start with its id), and its entry."""
        prefix = name[:8]
        for task in self.store.all():
            if task.status == TaskStatus.COMPLETED and task.task_id.startswith(prefix):
                for item in task.outputs:
                    if item.get("filename") == name and (item.get("type") or "output") == kind:
                        return task, item
        return None

    async def _from_backend(self, kind: str, name: str, task: Task, item: dict[str, Any]) -> Path | None:
        """An output of a ComfyUI run not in the store yet (its write-behind is under way, or the replica that
        downloaded it died first): from the backend's own output folder, or the text the entry carries;
        written to this replica's folder and stored for the others."""
        assert self.manager is not None and self.objects is not None
        path = (self.settings.outputs_dir if kind == "output" else self.manager.temp_dir) / name
        ref = item.get("comfyui") or {}
        try:
            if "filename" in ref:
                backend = self.backends.get(str(task.backend))
                if backend is None:
                    return None
                await backend.client.download(
                    str(ref["filename"]), str(ref.get("subfolder") or ""), str(ref.get("type") or "output"), path
                )
            elif isinstance(item.get("text"), str) and not item.get("text_truncated"):
                await asyncio.to_thread(write_file, path, item["text"].encode("utf-8"))
            else:
                return None
        except (ComfyGateError, OSError) as exc:
            log.warning("output %s is in neither the store nor its backend: %s", name, exc)
            return None
        self._spawn(self._store_fetched(f"{kind}/{name}", path), name=f"store {name}")
        return path

    async def _store_fetched(self, key: str, path: Path) -> None:
        assert self.objects is not None
        try:
            await self.objects.put_file(key, path)
        except (StoreUnavailable, OSError) as exc:
            log.warning("could not store %s: %s", key, exc)

    async def localize(self, outputs: list[dict[str, Any]]) -> None:
        """Fetch into this replica's folders the outputs it does not have (for readers of the disk)."""
        if self.objects is None or self.manager is None:
            return
        for item in outputs:
            kind = "output" if item.get("type", "output") == "output" else "temp"
            folder = self.settings.outputs_dir if kind == "output" else self.manager.temp_dir
            name = str(item.get("filename", ""))
            if not name or "/" in name or name.startswith("."):
                continue
            path = folder / name
            if path.is_file():
                continue
            try:
                if await self.objects.get_file(f"{kind}/{name}", path):
                    continue
            except StoreUnavailable as exc:
                log.warning("could not fetch output %s from the store: %s", name, exc)
            made = self._output_entry(kind, name)
            if made is not None:
                await self._from_backend(kind, name, *made)

    async def keep_input(self, name: str, data: bytes) -> None:
        """An uploaded input, kept in the store too (the backends got it already)."""
        if self.objects is None:
            return
        try:
            await self.objects.put_bytes(f"inputs/{name}", data)
        except StoreUnavailable as exc:
            raise ClusterUnavailable(f"the object store is unreachable ({exc}); retry shortly", retry_after=2) from exc
