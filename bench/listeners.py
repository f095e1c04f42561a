"""Fan-out listeners in their own process: ``python -m bench.listeners --url WS --count N --out FILE``.

Opens ``count`` WebSocket connections to ComfyGate's ``/ws``, prints ``READY <n>`` once all are
open, then records, for every ``task_update`` whose status is ``completed``, the ``time.time()`` at
which its bytes reached each listener. On ``STOP`` (a line on stdin) it writes a JSON file:
``{"listeners", "closed": [codes], "messages", "arrivals": {prompt_id: [t, ...]}}`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict

from bench.lean import WsReader, ws_connect

COMPLETED = b'"status":"completed"'
PROMPT_KEY = b'"prompt_id":"'


def write_json(path: str, data: object) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


async def run(url: str, count: int, out: str, batch: int = 50) -> None:
    arrivals: dict[str, list[float]] = defaultdict(list)

    def on_frame(opcode: int, payload: bytes, now: float) -> None:
        if opcode != 1 or COMPLETED not in payload or not payload.startswith(b'{"type":"task_update"'):
            return
        start = payload.find(PROMPT_KEY)
        if start < 0:
            return
        start += len(PROMPT_KEY)
        end = payload.index(b'"', start)
        arrivals[payload[start:end].decode()].append(now)

    readers: list[WsReader] = []
    for first in range(0, count, batch):  # a burst of 1000 handshakes would only test the accept backlog
        readers += await asyncio.gather(*(ws_connect(url, on_frame, 30) for _ in range(min(batch, count - first))))
    print(f"READY {len(readers)}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "COUNT":
            print(f"COUNT {sum(len(v) for v in arrivals.values())}", flush=True)
            continue
        if not line or line == "STOP":
            break
    closed = [r.close_code for r in readers if r.closed.is_set()]
    result = {
        "listeners": len(readers),
        "closed": closed,
        "messages": sum(r.messages for r in readers),
        "arrivals": arrivals,
    }
    write_json(out, result)
    for r in readers:
        r.close()
    print("DONE", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(run(args.url, args.count, args.out))
    else:
        uvloop.run(run(args.url, args.count, args.out))


if __name__ == "__main__":
    main()
