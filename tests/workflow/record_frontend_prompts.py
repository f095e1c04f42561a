"""Record what ComfyUI's real frontend queues for the workflow templates: the converter's test oracle.

ComfyGate's UI -> API conversion must produce what the frontend's ``graphToPrompt()`` produces for the same
file and the same ``object_info``. This script runs that frontend (the ``comfyui-frontend-package`` wheel
from PyPI) in headless Chromium against a stand-in server whose ``/object_info`` is the recorded one,
loads every template whose node classes are all known (plus the variants in
``tests/workflow/ui_variants.py``) with ``app.loadGraphData`` and stores ``app.graphToPrompt().output``
in ``tests/workflow/data/frontend_prompts.json``.

Run it again when the frontend or the templates move on::

    .venv/bin/pip install comfyui-frontend-package==1.58.1   # recording only, not a test dependency
    .venv/bin/python -m tests.workflow.record_frontend_prompts

The stand-in serves only what the page needs to boot (settings, users, extensions: empty); it adds the
``python_module``/``description`` fields the recording stripped from object_info.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.workflow import ui_variants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "workflow" / "data" / "frontend_prompts.json"


def _stand_in(static: Path, object_info: dict[str, Any]) -> Starlette:
    """Just enough of ComfyUI's routes for the frontend to boot, in single-user mode, with no settings."""
    info = {k: {"python_module": "nodes", "description": "", "deprecated": False, **v} for k, v in object_info.items()}

    async def index(request: Request) -> Response:
        return FileResponse(static / "index.html")

    async def api(request: Request) -> Response:
        path = request.path_params["path"]
        if path == "object_info":
            return JSONResponse(info)
        if path == "system_stats":
            return JSONResponse({"system": {"comfyui_version": "0.3.64", "argv": ["main.py"]}, "devices": []})
        if path == "users":
            return JSONResponse({"storage": "server", "migrated": True})
        if path in ("extensions", "embeddings") or (path == "userdata" and request.method == "GET"):
            return JSONResponse([])
        if path.startswith("userdata/") and request.method == "GET":
            return Response(status_code=404)
        if path == "settings":
            return JSONResponse({"Comfy.TutorialCompleted": True})
        if path == "queue":
            return JSONResponse({"queue_running": [], "queue_pending": []})
        if path == "prompt":
            return JSONResponse({"exec_info": {"queue_remaining": 0}})
        return JSONResponse({})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
        try:
            while True:
                await websocket.receive_text()
        except Exception:  # noqa: BLE001 - the page went away
            return

    return Starlette(
        routes=[
            Route("/", index),
            WebSocketRoute("/ws", ws),
            Route("/api/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE"]),
            Mount("/", StaticFiles(directory=static)),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--object-info", type=Path, default=ui_variants.OBJECT_INFO)
    args = parser.parse_args()
    object_info = json.loads(args.object_info.read_text())
    static = Path(str(resources.files("comfyui_frontend_package") / "static"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_stand_in(static, object_info), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    workflows = ui_variants.eligible_templates(object_info)
    variants = {name: make() for name, make in ui_variants.VARIANTS.items()}
    result: dict[str, Any] = {
        "frontend": metadata.version("comfyui-frontend-package"),
        "templates_package": "comfyui-workflow-templates-json " + metadata.version("comfyui-workflow-templates-json"),
        "templates": {},
        "variants": {},
    }
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("window.app && window.app.graph", timeout=120_000)
            script = (
                "async (wf) => { await window.app.loadGraphData(wf, true, true, null);"
                " return (await window.app.graphToPrompt()).output }"
            )
            for section, items in (("templates", workflows), ("variants", variants)):
                for name, wf in sorted(items.items()):
                    result[section][name] = page.evaluate(script, wf)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{len(result['templates'])} templates, {len(result['variants'])} variants -> {OUT}")


if __name__ == "__main__":
    main()
