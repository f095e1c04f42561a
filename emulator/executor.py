"""The emulator's prompt executor: runs one queued prompt node by node with ComfyUI's caching and the exact
WebSocket message sequence (execution_start/cached, executing, progress, previews, executed, success/error)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from emulator import nodes as en
from emulator.media_nodes import MEDIA_NODES
from emulator.validation import is_link

if TYPE_CHECKING:
    from emulator.prompt_queue import QueueItem
    from emulator.server import ComfyUIEmulator

BIN_PREVIEW, BIN_TEXT, BIN_PREVIEW_META = 1, 3, 4


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


def display_node(emu: ComfyUIEmulator, node_id: str) -> str:
    """The node a user sees: a newer server maps a node inside a subgraph (`12:5`) to its instance (`12`)."""
    return node_id.split(":", 1)[0] if emu.newer else node_id


def parent_node(emu: ComfyUIEmulator, node_id: str) -> str | None:
    """The subgraph instance holding a node (`12:5:3` -> `12:5`), on a newer server."""
    return node_id.rsplit(":", 1)[0] if emu.newer and ":" in node_id else None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _full_type_name(klass: type) -> str:
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


class Progress:
    """ComfyUI's progress registry: one progress_state message per change, with every touched node."""

    def __init__(self, emu: ComfyUIEmulator, prompt_id: str, sid: str | None) -> None:
        self.emu, self.prompt_id, self.sid = emu, prompt_id, sid
        self.nodes: dict[str, dict[str, Any]] = {}

    def _set(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": display_node(self.emu, node_id),
            "parent_node_id": parent_node(self.emu, node_id),
            "real_node_id": node_id,
        }
        self.emu.send("progress_state", {"prompt_id": self.prompt_id, "nodes": self.nodes}, self.sid)

    def start(self, node_id: str) -> None:
        self._set(node_id, 0.0, 1.0, "running")

    def update(self, node_id: str, value: int, maximum: int) -> None:
        self._set(node_id, value, maximum, "running")

    def finish(self, node_id: str) -> None:
        entry = self.nodes.get(node_id)
        maximum = entry["max"] if entry else 1
        self._set(node_id, maximum, maximum, "finished")


class PromptExecutor:
    """ComfyUI's PromptExecutor for one emulator: reads its settings live, keeps the cache in its state."""

    def __init__(self, emu: ComfyUIEmulator) -> None:
        self.emu = emu

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        """Cache keys: class, IS_CHANGED and inputs, with links replaced by the source's key."""
        memo: dict[str, str] = {}

        def sig(nid: str, visiting: frozenset[str]) -> str:
            if nid in memo:
                return memo[nid]
            node = prompt[nid]
            parts: list[Any] = [
                node["class_type"],
                repr(en.is_changed(node["class_type"], node["inputs"], self.emu.dirs)),
            ]
            for k in sorted(node["inputs"]):
                v = node["inputs"][k]
                if is_link(v) and v[0] in prompt and v[0] not in visiting:
                    parts.append([k, "link", sig(v[0], visiting | {nid}), v[1]])
                else:
                    parts.append([k, v])
            memo[nid] = hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()
            return memo[nid]

        return {nid: sig(nid, frozenset()) for nid in prompt}

    async def execute(self, item: QueueItem) -> tuple[str, bool, list[Any], dict[str, Any], dict[str, Any]]:
        """Run one prompt with ComfyUI's message order; returns what task_done puts into history."""
        emu = self.emu
        st = emu.state
        st.interrupt = False
        prompt, prompt_id = item.prompt, item.prompt_id
        sid = item.extra.get("client_id") if "client_id" in item.extra else None
        st.client_id = sid
        messages: list[Any] = []

        def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if sid is not None or broadcast:
                emu.send(event, data, sid)

        add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = self._signatures(prompt)
        keep = set(sigs.values())
        st.cache = {k: v for k, v in st.cache.items() if k in keep}
        cache = st.cache
        cached_nodes = [n for n in prompt if sigs[n] in cache]
        add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, False)

        info = emu.info.object_info()
        progress = Progress(emu, prompt_id, sid)
        values: dict[str, tuple[Any, ...]] = {n: cache[sigs[n]].outputs for n in cached_nodes}
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        initially_cached = set(cached_nodes)
        order = en.ExecutionList(
            prompt,
            lambda n: n in initially_cached,
            lambda n: bool(info[prompt[n]["class_type"]].get("output_node")),
        )
        for out in item.outputs:
            order.add_node(out)

        failure: dict[str, Any] | None = None
        while not order.is_empty():
            try:
                nid = order.next_node()
            except IndexError:
                failure = {
                    "node_id": next(iter(order.pending)),
                    "ex": RuntimeError("Dependency cycle detected"),
                    "inputs": {},
                }
                break
            node = prompt[nid]
            class_type = node["class_type"]
            entry = cache.get(sigs[nid])
            if entry is not None:
                if sid is not None:
                    emu.send(
                        "executed",
                        {
                            "node": nid,
                            "display_node": display_node(emu, nid),
                            "output": entry.ui,
                            "prompt_id": prompt_id,
                        },
                        sid,
                    )
                if entry.ui is not None:
                    ui_outputs[nid] = entry.ui
                progress.nodes.pop(nid, None)
                progress._set(nid, 1, 1, "finished")
                values[nid] = entry.outputs
                order.complete(nid)
                continue

            progress.start(nid)
            if sid is not None:
                st.last_node_id = nid
                emu.send(
                    "executing", {"node": nid, "display_node": display_node(emu, nid), "prompt_id": prompt_id}, sid
                )
            class_info = info[class_type]
            inputs = self._resolve_inputs(node, class_info, values)
            ctx = self._node_context(nid, prompt_id, prompt, sid, progress, class_info)
            try:
                ctx.check_interrupt()
                if emu.node_delay > 0:
                    await asyncio.sleep(emu.node_delay)
                await emu.costs.wait_ms(emu.costs.node_cost_ms(class_type))
                media_node = MEDIA_NODES.get(class_type)
                if media_node is not None:
                    outs, ui = await media_node(ctx, **inputs)
                else:
                    outs, ui = await en.run_node(class_type, inputs, ctx)
                if ui and emu.output_name_hook is not None:
                    ui = emu.files.rename_outputs(ui, emu.output_name_hook)
            except en.InterruptProcessing:
                failure = {"node_id": nid, "interrupted": True}
                break
            except Exception as ex:  # noqa: BLE001 - any node failure becomes execution_error
                failure = {
                    "node_id": nid,
                    "ex": ex,
                    "inputs": self._hidden_inputs(inputs, class_info, node, prompt, item.extra),
                }
                break
            if emu.extra_output is not None and class_info.get("output_node"):
                ui = {**(ui or {}), "images": [*(ui or {}).get("images", []), dict(emu.extra_output)]}
            if ui:
                ui_outputs[nid] = ui
                if sid is not None:
                    emu.send(
                        "executed",
                        {"node": nid, "display_node": display_node(emu, nid), "output": ui, "prompt_id": prompt_id},
                        sid,
                    )
            cache[sigs[nid]] = CacheEntry(outs, ui or None)
            values[nid] = outs
            progress.finish(nid)
            executed.append(nid)
            order.complete(nid)

        if failure is None:
            add_message("execution_success", {"prompt_id": prompt_id}, False)
        else:
            fid = failure["node_id"]
            base = {
                "prompt_id": prompt_id,
                "node_id": fid,
                "node_type": prompt[fid]["class_type"],
                "executed": list(executed),
            }
            if failure.get("interrupted"):
                add_message("execution_interrupted", base, True)
            else:
                ex = failure["ex"]
                add_message(
                    "execution_error",
                    {
                        **base,
                        "exception_message": f"{ex}\n",
                        "exception_type": _full_type_name(type(ex)),
                        "traceback": traceback.format_tb(ex.__traceback__),
                        "current_inputs": {k: [_format_input(v)] for k, v in failure["inputs"].items()},
                        "current_outputs": list(prompt),
                    },
                    False,
                )
        st.last_node_id = None
        meta = {
            n: {
                "node_id": n,
                "display_node": display_node(emu, n),
                "parent_node": parent_node(emu, n),
                "real_node_id": n,
            }
            for n in ui_outputs
        }
        ok = failure is None
        return ("success" if ok else "error"), ok, messages, ui_outputs, meta

    @staticmethod
    def _resolve_inputs(
        node: dict[str, Any], class_info: dict[str, Any], values: dict[str, tuple[Any, ...]]
    ) -> dict[str, Any]:
        """Declared inputs only (ComfyUI ignores extras such as LoadImage's ``upload``), links resolved."""
        declared = class_info.get("input", {})
        out: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name not in declared.get("required", {}) and name not in declared.get("optional", {}):
                continue
            out[name] = values[value[0]][value[1]] if is_link(value) and value[0] in values else value
        return out

    @staticmethod
    def _hidden_inputs(
        inputs: dict[str, Any],
        class_info: dict[str, Any],
        node: dict[str, Any],
        prompt: dict[str, Any],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Inputs as execution_error.current_inputs shows them, hidden PROMPT/EXTRA_PNGINFO included."""
        out = dict(inputs)
        for name, kind in class_info.get("input", {}).get("hidden", {}).items():
            if kind == "PROMPT":
                out[name] = prompt
            elif kind == "EXTRA_PNGINFO":
                out[name] = extra.get("extra_pnginfo")
        return out

    def _node_context(
        self,
        nid: str,
        prompt_id: str,
        prompt: dict[str, Any],
        sid: str | None,
        progress: Progress,
        class_info: dict[str, Any],
    ) -> en.NodeContext:
        emu = self.emu
        st = emu.state

        def check_interrupt() -> None:
            if st.interrupt:
                st.interrupt = False
                raise en.InterruptProcessing()

        async def on_progress(value: int, total: int, preview: tuple[str, Image.Image] | None) -> None:
            progress.update(nid, value, total)
            data = en.encode_image(*preview) if preview else None
            kind = preview[0] if preview else ""
            if data is not None and emu.supports_metadata(sid):
                meta = json.dumps(
                    {
                        "node_id": nid,
                        "prompt_id": prompt_id,
                        "display_node_id": display_node(emu, nid),
                        "parent_node_id": parent_node(emu, nid),
                        "real_node_id": nid,
                        "image_type": "image/jpeg" if kind == "JPEG" else "image/png",
                    }
                ).encode()
                emu.deliver(struct.pack(">II", BIN_PREVIEW_META, len(meta)) + meta + data, sid)
            emu.send("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": nid}, sid)
            if data is not None and not emu.supports_metadata(sid):
                emu.deliver(struct.pack(">II", BIN_PREVIEW, 1 if kind == "JPEG" else 2) + data, sid)
            await asyncio.sleep(0)

        async def on_text(text: str) -> None:
            node_bytes = nid.encode()
            emu.deliver(struct.pack(">II", BIN_TEXT, len(node_bytes)) + node_bytes + text.encode(), None)

        return en.NodeContext(
            node_id=nid,
            prompt_id=prompt_id,
            prompt=prompt,
            dirs=emu.dirs,
            temp_prefix=st.temp_prefix,
            step_delay=lambda: emu.step_delay,
            progress=on_progress,
            text=on_text,
            check_interrupt=check_interrupt,
            class_info=class_info,
        )


def _format_input(value: Any) -> Any:
    """ComfyUI's format_value: scalars and None stay as they are, everything else becomes ``str()``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return en.format_value(value)
