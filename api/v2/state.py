"""What the v2 API keeps per app: assets, idempotency claims, previews, open streams, partner keys.

``install`` runs in the app's lifespan once the services exist: it opens the asset store (SQLite next to
the task store, or in memory when tasks are), reloads idempotency claims, and hooks into the task
manager: a dispatch hook uploads a job's assets to the backend that runs it, an observer records each
finished task's outputs as assets (hashed off the loop), and a hub tap keeps the latest preview.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from api.v2 import asset_sharing, view
from api.v2.asset_refs import BackendInputs
from api.v2.asset_store import AssetRecord, AssetStore
from api.v2.events import Previews
from api.v2.idempotency import TTL, IdempotencyKeys
from backends.base import Backend
from core.errors import PartnerKeyLost
from core.task import Task, TaskStatus
from gateway.services import Services

log = logging.getLogger("comfygate.api_v2")
EXTRAS_KEY = "api_v2"
RECENT_OUTPUTS = 10_000
# Outputs of tasks that are not v2 jobs (nothing to hash) are written as asset rows together, this long
# after the first of them finished: one hop to the store's thread per batch, not one per task at the
# moment its completion is being delivered (recent_outputs answers meanwhile).
RECORD_DELAY_S = 0.05
CACHE_GRACE_S = 1.0  # a cached blob fetched this recently is kept when told its bytes were deleted (a new upload)


@dataclass
class V2State:
    services: Services
    store: AssetStore
    keys: IdempotencyKeys
    inputs: BackendInputs
    previews: Previews
    streams: int = 0
    # Partner-node keys (extra_data) by an opaque token kept on the task: memory only, never stored or logged.
    partner_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: OrderedDict[str, str] = field(default_factory=OrderedDict)  # output asset id → blake3, newest last
    # The newest outputs' records (readable the moment their task ends, before the SQLite write, and
    # without a disk read for the downloads that follow), oldest first; bounded.
    recent_outputs: OrderedDict[str, AssetRecord] = field(default_factory=OrderedDict)
    _jobs: set[asyncio.Task[Any]] = field(default_factory=set)
    _unhashed: list[AssetRecord] = field(default_factory=list)  # waiting for RECORD_DELAY_S
    _record_timer: asyncio.TimerHandle | None = None

    # --- dispatch hook ---------------------------------------------------------------------------
    async def before_dispatch(self, task: Task, backend: Backend) -> dict[str, Any] | None:
        """Upload the job's assets to ``backend``; hand over its partner key (extra_data), if any."""
        await self.inputs.prepare_for_backend(task, backend)
        token = task.extra.get("v2_partner_key")
        if not isinstance(token, str):
            return None
        if token not in self.partner_keys:
            raise PartnerKeyLost(
                "this job was submitted with its own partner-node key (extra_data), which ComfyGate keeps in memory "
                "only, and ComfyGate restarted before ComfyUI had the job: it is not run without it; submit it again",
                task_id=task.task_id,
            )
        return self.partner_keys[token]

    # --- observer --------------------------------------------------------------------------------
    def on_task(self, task: Task, change: str) -> None:
        self.previews.forget(task, change)
        if change != "finished":
            return
        self.forget_partner_key(task.extra.get("v2_partner_key"))
        if task.status == TaskStatus.COMPLETED and task.outputs:
            records = self._output_records(task)
            for record in records:
                self.recent_outputs[record.id] = record
            asset_sharing.share_outputs(self, records)  # (cluster mode: before the task's final update)
            while len(self.recent_outputs) > RECENT_OUTPUTS:
                self.recent_outputs.popitem(last=False)
            # Every task's outputs are v2 assets (any task is a v2 job); hashing is paid by v2 jobs only.
            if task.extra.get("source") == "api_v2":
                self._spawn(self._record_outputs(records, True, task.outputs))
                return
            self._unhashed.extend(records)
            if self._record_timer is None:
                self._record_timer = asyncio.get_running_loop().call_later(RECORD_DELAY_S, self._record_unhashed)

    def _record_unhashed(self) -> None:
        self._record_timer = None
        records, self._unhashed = self._unhashed, []
        if records:
            self._spawn(self._record_outputs(records, False, []))

    def _spawn(self, work: Any) -> None:
        job = asyncio.get_running_loop().create_task(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _output_records(self, task: Task) -> list[AssetRecord]:
        retention = self.services.settings.v2_job_retention
        records = []
        for entry in task.outputs:
            filename = entry.get("filename")
            if not isinstance(filename, str):
                continue
            records.append(
                AssetRecord(
                    id=view.output_id(task.task_id, filename),
                    kind="output",
                    hash=None,
                    size=int(entry.get("size") or 0),
                    content_type=entry.get("content_type") or "application/octet-stream",
                    file_path=(entry.get("comfyui") or {}).get("filename") or filename,
                    location=f"{'temp' if entry.get('type') == 'temp' else 'output'}/{filename}",
                    created_at=task.finished_at or time.time(),
                    expires_at=(task.finished_at or time.time()) + retention,
                    job_id=task.task_id,
                )
            )
        return records

    async def _record_outputs(self, records: list[AssetRecord], hashed: bool, outputs: list[dict[str, Any]]) -> None:
        """Write the records and their hashes (off the loop); ``recent_outputs`` answers meanwhile."""
        try:
            if hashed:
                await self.services.local_outputs(outputs)  # the hash reads the files
            hashes = await self.store.run(self.store.add_outputs, records, hashed)
        except Exception:
            log.exception("could not record outputs as assets: %s", [r.id for r in records])
            return
        self.hashes.update(hashes)
        if hashes:
            asset_sharing.share_outputs(self, records)  # with their hashes now
        while len(self.hashes) > 100_000:
            self.hashes.popitem(last=False)

    def forget_blob(self, hex_digest: str) -> None:
        """Cluster mode: these bytes were deleted everywhere (their last record went): the cached copy goes too."""
        self.store.submit(self.store.drop_cached, hex_digest, time.time() - CACHE_GRACE_S)

    def remember_partner_key(self, extra_data: dict[str, Any]) -> str:
        token = secrets.token_hex(8)
        self.partner_keys[token] = extra_data
        return token

    def forget_partner_key(self, token: Any) -> None:
        if isinstance(token, str):
            self.partner_keys.pop(token, None)

    async def close(self) -> None:
        if self._record_timer is not None:
            self._record_timer.cancel()
            self._record_unhashed()
        for job in list(self._jobs):
            await asyncio.gather(job, return_exceptions=True)
        await asyncio.to_thread(self.store.close)


async def install(services: Services) -> V2State:
    settings = services.settings
    db_path = settings.database_path
    if db_path is not None:
        db_path = db_path.with_name("api_v2.sqlite3")
    store = AssetStore(db_path, settings.uploads_dir / "v2", settings.outputs_dir, services.manager.temp_dir)
    await store.run(store.open)
    keys = IdempotencyKeys(ttl=TTL)
    keys.load(await store.run(store.load_claims, time.time() - TTL))

    def save_claim(scoped: str, what: str, claimed_at: float | None) -> None:
        store.submit(store.save_claim, scoped, what, claimed_at)

    keys.on_change = save_claim
    manager = services.manager
    inputs = BackendInputs(store, manager.pool.comfyui.get, manager.outputs.fetcher.settled)
    state = V2State(services, store, keys, inputs, Previews())
    inputs.fetch = lambda kind, location, path: asset_sharing.fetch_input(state, kind, location, path)
    services.hub.add_tap(state.previews.tap)
    services.manager.add_observer(state.on_task)
    services.manager.add_dispatch_hook(state.before_dispatch)
    services.extras[EXTRAS_KEY] = state
    return state


async def stop(services: Services) -> None:
    state: V2State | None = services.extras.get(EXTRAS_KEY)
    if state is not None:
        await state.close()


async def get_state(request: Request) -> V2State:
    return request.app.state.services.extras[EXTRAS_KEY]
