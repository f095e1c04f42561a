"""The emulator's fault switches over HTTP, for benchmarks and other processes: ``/emulator/config``,
``/emulator/delays``, ``/emulator/extra_output``, ``/emulator/drop_websockets``, ``/emulator/restart`` and
``/emulator/stop``; and what it was asked (``/emulator/posted``). Tests in the same process call the
``ComfyUIEmulator`` methods directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.costs import Costs
from emulator.web import guard, json_body, json_response

if TYPE_CHECKING:
    from emulator.server import ComfyUIEmulator


class EmulatorControl:
    """The ``/emulator/...`` routes of one emulator."""

    def __init__(self, emu: ComfyUIEmulator) -> None:
        self.emu = emu

    def routes(self) -> list[Route]:
        return [
            Route("/emulator/config", guard(self.get_emulator_config), methods=["GET"]),
            Route("/emulator/delays", guard(self.post_emulator_delays), methods=["POST"]),
            Route("/emulator/costs", guard(self.post_emulator_costs), methods=["POST"]),
            Route("/emulator/extra_output", guard(self.post_emulator_extra_output), methods=["POST"]),
            Route("/emulator/posted", guard(self.get_emulator_posted), methods=["GET"]),
            Route("/emulator/drop_websockets", guard(self.post_emulator_drop), methods=["POST"]),
            Route("/emulator/restart", guard(self.post_emulator_restart), methods=["POST"]),
            Route("/emulator/stop", guard(self.post_emulator_stop), methods=["POST"]),
        ]

    def config(self) -> dict[str, Any]:
        return {
            "step_delay": self.emu.step_delay,
            "node_delay": self.emu.node_delay,
            "port": self.emu.port,
            "base_dir": str(self.emu.base_dir),
            "history_delay": self.emu.history_delay,
            "extra_output": self.emu.extra_output,
            "costs": self.emu.costs.describe(),
            "views": self.emu.files.views,
        }

    async def get_emulator_config(self, request: Request) -> Response:
        return json_response(self.config())

    async def get_emulator_posted(self, request: Request) -> Response:
        """How many times each prompt id was accepted by POST /prompt since the last restart (one each, for a
        client that never posts a prompt twice; /history cannot tell: a repeated id keeps one entry)."""
        return json_response({"posted": self.emu.state.posted})

    async def post_emulator_delays(self, request: Request) -> Response:
        data = await json_body(request)
        self.emu.set_delays(data.get("step_delay"), data.get("node_delay"))
        if "history_delay" in data:
            self.emu.history_delay = float(data["history_delay"])
        return json_response(self.config())

    async def post_emulator_costs(self, request: Request) -> Response:
        """``{"name": "realistic"|"none", "gc_pauses": bool, "seed": int, <any Costs field>: value}``."""
        data = await json_body(request)
        costs = Costs.named(
            str(data.pop("name", self.emu.costs.name)),
            gc_pauses=bool(data.pop("gc_pauses", False)),
            seed=int(data.pop("seed", 0)),
        )
        for key, value in data.items():
            if key.startswith("_") or not hasattr(costs, key):
                return json_response({"error": f"no cost named {key!r}"}, 400)
            setattr(costs, key, value)
        self.emu.costs = costs
        return json_response(self.config())

    async def post_emulator_extra_output(self, request: Request) -> Response:
        """``{"filename", "size"}``: write ``size`` bytes to output/filename (kept if already that size) and
        list it among the outputs of every output node executed from now on; ``{}`` turns it off.

        For benchmarks of big outputs without spending minutes in Pillow on a huge image.
        """
        data = await json_body(request)
        filename = data.get("filename")
        if not filename:
            self.emu.extra_output = None
            return json_response(self.config())
        self.emu.extra_output = await self.emu.files.write_output(filename, int(data.get("size", 0)))
        return json_response(self.config())

    async def post_emulator_drop(self, request: Request) -> Response:
        """Answer first, then drop: the caller's own HTTP connection is not a WebSocket anyway."""
        return Response(
            json.dumps({"dropped": self.emu.client_count}),
            media_type="application/json; charset=utf-8",
            background=BackgroundTask(self.emu.drop_websockets),
        )

    def _later(self, coro_fn: Callable[[], Awaitable[None]], delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(coro_fn()))

    async def post_emulator_restart(self, request: Request) -> Response:
        """Restart after the response is out, so the caller gets its 200 first."""
        self._later(self.emu.restart, 0.02)
        return json_response({"restarting": True})

    async def post_emulator_stop(self, request: Request) -> Response:
        """Go down; with ``restart_after`` seconds come back by itself (an outage for benchmarks)."""
        data = await json_body(request)
        restart_after = data.get("restart_after")
        self._later(self.emu.stop, 0.02)
        if restart_after is not None:
            self._later(self.emu.start, 0.02 + float(restart_after))
        return json_response({"stopping": True, "restart_after": restart_after})
