"""What every hostile-input module shares: a real gate and emulator per module, the contract every
answer must keep, the canary that proves normal use still works, and hostile value strategies.

The contract (issue 17): an answer is a success, or a 4xx whose JSON body says what is wrong in words a
person can act on; never a 5xx (except a documented 503 with Retry-After), never a hang, never a stack
trace or an object's repr; and after it a normal submit, list and history still work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from config import PROJECT_DIR
from emulator.server import EmulatorThread
from main import create_app
from tests.conftest import Gate, make_settings, stop_gate, wait_backends_up
from tests.protocol import sd_workflow
from tests.servers import AppServer

KEY = "hostile-suite-key-0123456789"
EXAMPLES = int(os.environ.get("COMFYGATE_HOSTILE_EXAMPLES", "25"))
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same inputs every run: a failure in CI reproduces locally
    database=None,
    suppress_health_check=list(HealthCheck),
)
_LEAKS = re.compile(r"Traceback|object at 0x|File \"/|<_io\.|Error\(\'")
MEMORY_GROWTH_LIMIT_MB = 150


def start(base: Path, **overrides: Any) -> Iterator[tuple[Gate, EmulatorThread]]:
    """A gate (with the example workflows saved) in front of a fresh emulator; both stop afterwards."""
    emulator = EmulatorThread(base_dir=base / "emulator").start()
    settings_ = make_settings(base, [emulator.url], task_timeout=20.0, **overrides)
    settings_.workflows_dir.mkdir(parents=True, exist_ok=True)
    for example in (PROJECT_DIR / "workflows").glob("*.json"):
        (settings_.workflows_dir / example.name).write_bytes(example.read_bytes())
    server = AppServer(create_app(settings_)).start()
    headers = {"X-API-Key": KEY} if overrides.get("api_keys") else {}
    gate = Gate(server, settings_, httpx.Client(base_url=server.url, timeout=30.0, headers=headers))
    wait_backends_up(gate)
    try:
        yield gate, emulator
    finally:
        stop_gate(gate)
        emulator.stop()


def assert_clear(response: httpx.Response, what: str = "") -> None:
    """The contract for one answer."""
    where = f"{response.request.method} {response.request.url.path} {what}"[:300]
    status = response.status_code
    assert status < 500 or (status == 503 and response.headers.get("retry-after")), (where, status, response.text[:500])
    if status >= 400:
        body = response.json()  # an error is always JSON
        assert isinstance(body, dict) and body.get("error") and body.get("message"), (where, body)
        message = str(body["message"])
        assert len(message) > 10 and not _LEAKS.search(message), (where, message)
        response.content.decode("utf-8")  # and always valid UTF-8


def canary(gate: Gate, submit: bool = True) -> str | None:
    """A normal submit, list and history still work (after a hostile request). Returns the task id."""
    task_id = None
    if submit:
        response = gate.client.post("/api/workflow/submit", json={"workflow": sd_workflow(steps=1, seed=7)})
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
    for path in ("/api/tasks?limit=5", "/api/history?limit=5"):
        listed = gate.client.get(path)
        assert listed.status_code == 200, (path, listed.text[:500])
        assert isinstance(listed.json()["tasks"], list)
    return task_id


def settle(gate: Gate) -> None:
    """Every canary task ran to the end (nothing was lost or left hanging)."""
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = gate.client.get("/api/tasks?status=pending,queued,running&limit=1").json()
        if body["total"] == 0:
            break
        time.sleep(0.1)
    failed = gate.client.get("/api/tasks?status=failed,timeout&limit=5").json()
    assert body["total"] == 0, body
    assert failed["total"] == 0, failed


def rss_mb() -> float:
    """This process's resident memory (the gate and emulator run in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------------------------ strategies
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "a\ud83d", "\ude00b"])
ODD_TEXT = st.sampled_from(
    ["", " ", "\n", "\x00", "\t\r", "..", "../../etc/passwd", "C:\\x", "%00", "\u202e", "\ufeff", "😀", "a" * 5000]
)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=64), SURROGATES, ODD_TEXT, st.builds(lambda a, b: a + b, st.text(max_size=8), SURROGATES)
)


class Raw(str):
    """A number token written into JSON as it is (Python cannot even print a 5000-digit int by default)."""


HOSTILE_NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -(2**63), 2**64, 10**300]),
    st.integers(min_value=300, max_value=6000).map(lambda n: Raw("9" * n)),
    st.sampled_from([Raw("1e400"), Raw("-1e309"), Raw("1E+999"), Raw("0." + "0" * 400 + "1")]),
)
HOSTILE_SCALARS = st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT)
HOSTILE_JSON = st.recursive(
    HOSTILE_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(HOSTILE_TEXT, children, max_size=4)),
    max_leaves=12,
)
PARAM_KEYS = st.one_of(
    st.sampled_from(["6.text", "7.text", "3.seed", "3.steps", "3.cfg", "3.sampler_name", "3.denoise", "5.width"]),
    st.sampled_from(["6-inputs-text", "3-inputs-seed", "99.x", "3.", ".seed", "3.nope", "__proto__"]),
    HOSTILE_TEXT,
)


def in_url(text: Any) -> str:
    """Any text as one percent-encoded URL component; lone surrogates become the invalid UTF-8 bytes a
    hostile client would send (%ED%A0%80)."""
    from urllib.parse import quote

    return quote(str(text).encode("utf-8", "surrogatepass"), safe="")


def raw_json(value: Any) -> bytes:
    """``value`` as JSON text the way a hostile client writes it: NaN, Infinity, lone surrogate escapes,
    1e400, 5000-digit integers all included."""
    tokens: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Raw):
            tokens.append(str(item))
            return f"\x00raw{len(tokens) - 1}\x00"
        if isinstance(item, dict):
            return {k: mark(v) for k, v in item.items()}
        if isinstance(item, list):
            return [mark(v) for v in item]
        return item

    text = json.dumps(mark(value), allow_nan=True)
    for index, token in enumerate(tokens):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', token, 1)
    return text.encode()
