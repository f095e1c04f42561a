"""The emulator's prompt queue and history: ComfyUI's PromptQueue, its worker, and the /prompt, /queue,
/history, /interrupt and /free routes."""

from __future__ import annotations

import asyncio
import heapq
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.executor import CacheEntry, PromptExecutor
from emulator.validation import validate_prompt
from emulator.web import empty_response, guard, json_body, json_response

if TYPE_CHECKING:
    from emulator.server import ComfyUIEmulator

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
HISTORY_MAX = 10_000  # ComfyUI's MAXIMUM_HISTORY_SIZE: older entries are evicted first
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class QueueItem:
    """A queue entry; heap order is (number, prompt_id) like ComfyUI's tuple heap."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]
    not_before: float = 0.0  # loop time before which the worker may not start it (cost model)

    def __lt__(self, other: QueueItem) -> bool:
        return (self.number, self.prompt_id) < (other.number, other.prompt_id)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


@dataclass
class EmulatorState:
    """Everything a ComfyUI restart loses."""

    queue: list[QueueItem] = field(default_factory=list)
    running: QueueItem | None = None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    number: int = 0
    cache: dict[str, CacheEntry] = field(default_factory=dict)
    interrupt: bool = False
    client_id: str | None = None
    last_node_id: str | None = None
    temp_prefix: str = ""
    created: dict[str, float] = field(default_factory=dict)  # prompt id -> submit time (ms), for /api/jobs
    cancelled: dict[str, float] = field(default_factory=dict)  # queued jobs removed by the jobs API (ms)
    partner_keys_seen: list[str] = field(default_factory=list)  # extra_data keys received (tests only)
    # How many times each prompt id was accepted: ComfyUI runs a repeated prompt id again and keeps one
    # history entry for it, so only this shows a client that posted a prompt twice (tests only).
    posted: dict[str, int] = field(default_factory=dict)


class PromptQueue:
    """The queue of one emulator: routes put prompts in, ``worker()`` runs them one at a time into history."""

    def __init__(self, emu: ComfyUIEmulator, executor: PromptExecutor) -> None:
        self.emu = emu
        self.executor = executor
        self.wakeup = asyncio.Event()

    def routes(self) -> list[Route]:
        return [
            Route("/prompt", guard(self.get_prompt), methods=["GET"]),
            Route("/prompt", guard(self.post_prompt), methods=["POST"]),
            Route("/queue", guard(self.get_queue), methods=["GET"]),
            Route("/queue", guard(self.post_queue), methods=["POST"]),
            Route("/history", guard(self.get_history), methods=["GET"]),
            Route("/history", guard(self.post_history), methods=["POST"]),
            Route("/history/{prompt_id}", guard(self.get_history_item), methods=["GET"]),
            Route("/interrupt", guard(self.post_interrupt), methods=["POST"]),
            Route("/free", guard(self.post_free), methods=["POST"]),
        ]

    def info(self) -> dict[str, Any]:
        st = self.emu.state
        return {"exec_info": {"queue_remaining": len(st.queue) + (1 if st.running else 0)}}

    def updated(self) -> None:
        self.emu.send("status", {"status": self.info()}, None)

    async def worker(self) -> None:
        st = self.emu.state
        costs = self.emu.costs
        loop = asyncio.get_running_loop()
        ended = 0.0
        while True:
            while not st.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            head = st.queue[0]
            # Cost model: a prompt starts about when the answer to its POST leaves, and the worker's own
            # bookkeeping after the previous prompt takes a while (bursts: ~11 ms per prompt, recorded).
            ready = max(head.not_before, ended + costs.prompt_gap_ms / 1000)
            if ready > loop.time():
                await costs.wait_until(ready)
                continue  # the queue may have changed meanwhile (front=true, delete, clear)
            item = heapq.heappop(st.queue)
            st.running = item
            self.updated()
            status_str, completed, messages, outputs, meta = await self.executor.execute(item)
            # History lands just after execution_success: a client reading it at once may find {}.
            if costs.history_lag_share:
                lag = costs.history_lag_ms / 1000 if costs.history_lags() else 0.0
            else:
                lag = self.emu.history_delay
            if lag:
                await asyncio.sleep(lag)
            history = st.history
            while history and len(history) >= self.emu.history_max:
                evicted = next(iter(history))
                history.pop(evicted)
                st.created.pop(evicted, None)
            history[item.prompt_id] = {
                "prompt": item.as_list(),
                "outputs": outputs,
                "status": {"status_str": status_str, "completed": completed, "messages": messages},
                "meta": meta,
            }
            st.running = None
            self.updated()
            if st.client_id is not None:
                self.emu.send("executing", {"node": None, "prompt_id": item.prompt_id}, st.client_id)
            costs.gc_after_prompt()
            ended = loop.time()

    # -------------------------------------------------------------------------------------- routes
    async def get_prompt(self, request: Request) -> Response:
        info = self.info()
        await self.emu.costs.wait_ms(self.emu.costs.route_ms)
        return json_response(info)

    async def post_prompt(self, request: Request) -> Response:
        costs = self.emu.costs
        arrived = asyncio.get_running_loop().time()
        answer_at = arrived + costs.post_answer_ms() / 1000
        data = json.loads(await request.body())
        await costs.validate()
        st = self.emu.state
        if "number" in data:
            number: float = float(data["number"])
        else:
            number = st.number
            if data.get("front"):
                number = -number
            st.number += 1
        if "prompt" not in data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return json_response({"error": error, "node_errors": {}}, 400)
        prompt = data["prompt"]
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        if self.emu.newer and "prompt_id" in data and not _CANONICAL_UUID.fullmatch(prompt_id):
            error = {
                "type": "invalid_prompt_id",
                "message": "Invalid prompt_id",
                "details": "prompt_id must be a canonical lowercase UUID (8-4-4-4-12 hex digits)",
                "extra_info": {},
            }
            return json_response({"error": error, "node_errors": {}}, 400)
        ok, error, outputs, node_errors = validate_prompt(
            prompt, self.emu.info.object_info(), self.emu.validators, data.get("partial_execution_targets")
        )
        extra = dict(data.get("extra_data", {}))
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        if not ok:
            return json_response({"error": error, "node_errors": node_errors}, 400)
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            if extra.get(key):
                st.partner_keys_seen.append(key)
            extra.pop(key, None)
        st.created[prompt_id] = time.time() * 1000
        st.posted[prompt_id] = st.posted.get(prompt_id, 0) + 1
        heapq.heappush(st.queue, QueueItem(number, prompt_id, prompt, extra, outputs, arrived + costs.start_ms / 1000))
        self.wakeup.set()
        self.updated()
        await costs.wait_until(answer_at)
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request: Request) -> Response:
        st = self.emu.state
        running = [st.running.as_list()] if st.running else []
        body = {"queue_running": running, "queue_pending": [i.as_list() for i in st.queue]}
        await self.emu.costs.wait_ms(self.emu.costs.route_ms)
        return json_response(body)

    async def post_queue(self, request: Request) -> Response:
        data = json.loads(await request.body())
        st = self.emu.state
        if data.get("clear"):
            st.queue.clear()
            self.updated()
        for pid in data.get("delete", []):
            for i, it in enumerate(st.queue):
                if it.prompt_id == pid:
                    st.queue.pop(i)
                    heapq.heapify(st.queue)
                    self.updated()
                    break
        return empty_response()

    async def get_history(self, request: Request) -> Response:
        history = self.emu.state.history
        max_items = request.query_params.get("max_items")
        if max_items is None:
            body = dict(history)
            await self.emu.costs.wait_ms(self.emu.costs.history_ms)
            return json_response(body)
        n = int(max_items)
        offset = int(request.query_params.get("offset", -1))
        if offset < 0:
            offset = max(0, len(history) - n)
        keys = list(history)[offset : offset + n]
        body = {k: history[k] for k in keys}
        await self.emu.costs.wait_ms(self.emu.costs.history_ms)
        return json_response(body)

    async def get_history_item(self, request: Request) -> Response:
        pid = request.path_params["prompt_id"]
        item = self.emu.state.history.get(pid)  # what is written when the request arrives
        await self.emu.costs.wait_ms(self.emu.costs.history_ms)
        return json_response({pid: item} if item is not None else {})

    async def post_history(self, request: Request) -> Response:
        data = json.loads(await request.body())
        history = self.emu.state.history
        if data.get("clear"):
            history.clear()
        for pid in data.get("delete", []):
            history.pop(pid, None)
        return empty_response()

    async def post_interrupt(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            data = {}
        st = self.emu.state
        target = data.get("prompt_id") if isinstance(data, dict) else None
        if not target or (st.running is not None and st.running.prompt_id == target):
            st.interrupt = True
        return empty_response()

    async def post_free(self, request: Request) -> Response:
        data = await json_body(request)
        if data.get("free_memory"):
            self.emu.state.cache.clear()
        return empty_response()
