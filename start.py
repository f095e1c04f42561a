"""Launch ComfyGate: ``python start.py [--host H] [--port P] [--comfyui-server HOST:PORT] [--demo]``.

``--demo`` starts the bundled ComfyUI emulator on a free loopback port and points ComfyGate at it,
so the whole service works on a machine with no ComfyUI.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

import uvicorn

from api.ws_protocol import websocket_protocol
from config import Settings
from core.logs import log_off_the_loop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ComfyGate: ComfyUI workflows as a service")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1, from COMFYUI_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000, from COMFYUI_PORT)")
    parser.add_argument("--comfyui-server", help="ComfyUI address host:port (default from COMFYUI_COMFYUI_SERVER)")
    parser.add_argument(
        "--comfyui-servers", help="several ComfyUI servers, comma-separated (from COMFYUI_COMFYUI_SERVERS)"
    )
    parser.add_argument("--demo", action="store_true", help="run against a bundled ComfyUI emulator")
    parser.add_argument("--demo-step-delay", type=float, default=0.05, help="seconds per sampler step in --demo")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without API keys")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.comfyui_server:
        overrides["comfyui_server"] = args.comfyui_server
        overrides["comfyui_servers"] = []
    if args.comfyui_servers:
        overrides["comfyui_servers"] = args.comfyui_servers
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_writer = log_off_the_loop(args.log_level)
    settings = build_settings(args)
    if not settings.api_keys and not is_loopback(settings.host) and not args.insecure:
        print(
            f"refusing to listen on {settings.host} without API keys: anyone on the network could run "
            "workflows. Set COMFYUI_API_KEYS, or pass --insecure if this is really what you want.",
            file=sys.stderr,
        )
        log_writer.stop()
        return 2
    emulator = None
    if args.demo:
        from emulator.server import EmulatorThread

        emulator = EmulatorThread(step_delay=args.demo_step_delay, base_dir=settings.data_dir / "emulator").start()
        settings = settings.model_copy(update={"comfyui_server": emulator.url, "comfyui_servers": []})
        print(f"demo: ComfyUI emulator running at {emulator.url}", flush=True)
    from main import create_app

    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=args.log_level,
            log_config=None,  # uvicorn's records go to the root logger's queue (core/logs.py), not its handlers
            # uvicorn's websockets-sansio protocol, writing the frames of one loop turn at once (ws_protocol).
            ws=websocket_protocol(),  # uvicorn's stock protocol, logged, if its internals changed
            # Browsers offer permessage-deflate; granting it compresses every update once per listener.
            # Updates are small JSON: the CPU matters more than the bytes (see BENCHMARKS.md, fan-out).
            ws_per_message_deflate=False,
            # Idle keep-alive connections live longer than clients' pools keep them (as load balancers do):
            # uvicorn's 5 s closed one just as a pool reused it, a reset in a burst (issue 18).
            timeout_keep_alive=settings.keep_alive_timeout,
            # Cluster mode: a replica that is stopped ends its open streams after a few seconds (their
            # clients reconnect to another replica) so it gives its backends back promptly.
            timeout_graceful_shutdown=settings.shutdown_grace if settings.redis_url is not None else None,
        )
    finally:
        if emulator is not None:
            emulator.stop()
        log_writer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
