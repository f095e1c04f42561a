"""The processes a benchmark needs: ComfyUI emulators and ComfyGate, each a subprocess on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """A blocking JSON request for setup and teardown (never on a measured path)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (or ``VmHWM``, its peak) in kB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset ``VmHWM`` so a later read gives the peak since now (Linux ≥ 4.0); False when refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Proc:
    """A child process with its log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=PROJECT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited after ``grace`` s."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def wait_until(check: Any, what: str, proc: Proc | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc else ""
            raise RuntimeError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.05)


class Emulator:
    """``python -m emulator`` in its own process."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        step_delay: float = 0.0,
        node_delay: float = 0.0,
        costs: str = "realistic",
        gc_pauses: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = workdir / name
        base.mkdir(parents=True, exist_ok=True)
        self.base_dir = base
        args = [sys.executable, "-m", "emulator", "--port", str(self.port), "--base-dir", str(base)]
        args += ["--step-delay", str(step_delay), "--node-delay", str(node_delay), "--costs", costs]
        args += ["--gc-pauses"] if gc_pauses else []
        self.proc = Proc(name, args, workdir / f"{name}.log")

    def wait_ready(self) -> Emulator:
        wait_until(lambda: http_json(f"{self.url}/emulator/config")[0] == 200, f"{self.proc.name}", self.proc)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def set_delays(self, step_delay: float = 0.0, node_delay: float = 0.0) -> None:
        http_json(f"{self.url}/emulator/delays", {"step_delay": step_delay, "node_delay": node_delay})

    def stop(self) -> None:
        self.proc.stop()


class Gate:
    """ComfyGate started the way a user starts it (``start.py``), with its data in a scratch folder."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        servers: list[str],
        *,
        history_limit: int = 200_000,
        log_level: str = "info",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.servers = servers
        data = workdir / name
        settings_env = {
            "COMFYUI_HISTORY_LIMIT": str(history_limit),
            "COMFYUI_WORKFLOWS_DIR": str(data / "workflows"),
            "COMFYUI_UPLOADS_DIR": str(data / "uploads"),
            "COMFYUI_OUTPUTS_DIR": str(data / "outputs"),
            "COMFYUI_DATA_DIR": str(data / "data"),
            **(env or {}),
        }
        self.outputs_dir = data / "outputs"
        args = [sys.executable, "start.py", "--port", str(self.port), "--log-level", log_level]
        args += ["--comfyui-servers", ",".join(servers)] if len(servers) > 1 else ["--comfyui-server", servers[0]]
        self.proc = Proc(name, args, workdir / f"{name}.log", env=settings_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> Gate:
        def healthy() -> bool:
            status, body = http_json(f"{self.url}/api/health")
            return status == 200 and body["status"] == "ok" and len(body["backends"]) == len(self.servers)

        wait_until(healthy, f"{self.proc.name} with every backend connected", self.proc, timeout)
        return self

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self, field: str = "VmRSS") -> float:
        return rss_kb(self.pid, field) / 1024

    def stop(self) -> None:
        self.proc.stop()


class Proxy:
    """comfy-api-proxy (Comfy-Org's official proxy, from PyPI) in front of a ComfyUI: a peer to compare with."""

    def __init__(self, workdir: Path, name: str, comfyui_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "comfy_api_proxy.cli", "run", "--comfyui", comfyui_url, "--port", str(self.port)]
        self.proc = Proc(name, args, workdir / f"{name}.log")

    def wait_ready(self) -> Proxy:
        wait_until(lambda: http_json(f"{self.url}/api/v2/health")[0] == 200, self.proc.name, self.proc)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()
