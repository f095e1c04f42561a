"""The servers a cluster benchmark or test needs, each a real process on a free loopback port:
redis-server (Debian), an S3-compatible store (moto's standalone server), nginx in front of the
replicas (round robin, no stickiness, WebSockets and SSE passed through), and ComfyGate replicas."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import PROJECT, Proc, free_port, http_json, wait_until

S3_KEY_ID = "comfygate-test"
S3_SECRET = "comfygate-test-secret"
BUCKET = "comfygate"


def require(binary: str) -> str:
    """The path of a Debian binary the cluster tests need (CI installs it; its absence is a failure)."""
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found is None:
        raise RuntimeError(f"{binary} is not installed (CI installs it): apt-get install -y {binary}")
    return found


class RedisServer:
    """redis-server with an append-only file (fsynced every second, as production would run it): a stop
    (SIGTERM) writes everything out, so a stop and start keeps all."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "redis.log"
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        args = [
            require("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        self.proc = Proc("redis", args, self.log)
        wait_until(self._answers, "redis-server", self.proc)

    def _answers(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()  # SIGTERM: redis finishes its writes first
            self.proc = None


class S3Server:
    """moto's standalone S3 server with one bucket."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "s3.log"
        self.proc: Proc | None = None
        self.start()
        request = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10).read()

    def start(self) -> None:
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = Proc("s3", args, self.log)
        wait_until(lambda: http_json(f"{self.endpoint}/moto-api/data.json")[0] == 200, "moto S3 server", self.proc)

    def pause(self) -> None:
        """Unreachable but keeping its data: the process is stopped (SIGSTOP), connections hang."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.stop()
            self.proc = None

    def env(self, prefix: str = "outputs-test") -> dict[str, str]:
        return {
            "COMFYUI_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
            "COMFYUI_STORAGE_ENDPOINT": self.endpoint,
            "COMFYUI_STORAGE_KEY_ID": S3_KEY_ID,
            "COMFYUI_STORAGE_SECRET": S3_SECRET,
        }


NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  client_max_body_size 64m;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream comfygate {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://comfygate;
      # No keep-alive to the replicas: a replica that stops refuses new connections, and nginx then
      # passes even a POST to the next one (nothing was sent); a reused connection could fail mid-request.
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;  # with its port: the absolute URLs in answers (v2 links) lead back here
      proxy_buffering off;
      # Request bodies are read whole first (the default): nginx can only pass a request on to the next
      # replica if it still has the body, e.g. when a stopping replica closed the connection unread.
      proxy_read_timeout 3600s;
      proxy_next_upstream error timeout non_idempotent;  # POSTs too: submits carry an Idempotency-Key
      proxy_next_upstream_tries 3;
    }}
  }}
}}
"""


class Nginx:
    """nginx round robin over the replicas: no stickiness, WebSockets upgraded, SSE unbuffered."""

    def __init__(self, workdir: Path, upstreams: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.dir = workdir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=1s;" for p in upstreams)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, servers=servers, port=self.port))
        args = [
            require("nginx"),
            "-c",
            str(conf),
            "-p",
            str(self.dir),
            "-e",
            str(self.dir / "error.log"),
            "-g",
            "daemon off;",
        ]
        self.proc = Proc("nginx", args, workdir / "nginx.log")
        wait_until(lambda: _connects(self.port), "nginx", self.proc)

    def stop(self) -> None:
        self.proc.stop()


def _connects(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class Replica:
    """One ComfyGate replica in cluster mode, started as a user starts it (``start.py``); restartable on its port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        servers: list[str],
        env: dict[str, str],
        port: int | None = None,
        log_level: str = "info",
    ) -> None:
        self.name = name
        self.log_level = log_level
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.servers = servers
        self.workdir = workdir
        data = workdir / name
        self.outputs_dir = data / "outputs"
        self.env = {
            "COMFYUI_REPLICA_ID": name,
            # Cluster mode keeps the library in the store; the shipped workflows are only read, to seed it.
            "COMFYUI_WORKFLOWS_DIR": str(PROJECT / "workflows"),
            "COMFYUI_UPLOADS_DIR": str(data / "uploads"),
            "COMFYUI_OUTPUTS_DIR": str(self.outputs_dir),
            "COMFYUI_DATA_DIR": str(data / "data"),
            "COMFYUI_COMFYUI_SERVERS": ",".join(servers),
            **env,
        }
        self.proc: Proc | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        args = [sys.executable, "start.py", "--port", str(self.port), "--log-level", self.log_level]
        self.proc = Proc(self.name, args, self.workdir / f"{self.name}.{self.starts}.log", env=self.env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def health(self) -> tuple[int, Any]:
        return http_json(f"{self.url}/api/health")

    def wait_ready(self, timeout: float = 60.0) -> Replica:
        for attempt in range(3):
            try:
                wait_until(lambda: self.health()[0] == 200, f"{self.name} healthy", self.proc, timeout)
                return self
            except RuntimeError:
                # The free port was taken by another process before the replica bound it (a busy machine):
                # a first start may move to another port; a restart keeps its own (the proxy points there).
                if attempt == 2 or self.starts > 1 or "address already in use" not in self.log_text():
                    raise
                self.stop()
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.ws_url = f"ws://127.0.0.1:{self.port}"
                self.starts = 0
                self.start()
        return self

    def stop(self) -> None:
        """A graceful stop (SIGTERM): its leases are given back once what is under way on their backends has
        ended (streams get COMFYUI_SHUTDOWN_GRACE, hand-overs up to 10 s: a process manager allows more, as here)."""
        if self.proc is not None:
            self.proc.stop(grace=30.0)
            self.proc = None

    def kill(self) -> None:
        """kill -9: no goodbye, its leases left to expire."""
        if self.proc is not None:
            self.proc.popen.kill()
            self.proc.popen.wait(5)
            self.proc._log.close()
            self.proc = None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob(f"{self.name}.*.log")))


class ClusterStack:
    """redis-server, an S3 server, ComfyUI emulators, replicas of ComfyGate and nginx in front of them."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int = 3,
        emulators: int = 2,
        step_delay: float = 0.0,
        node_delay: float = 0.0,
        env: dict[str, str] | None = None,
        log_level: str = "info",
    ) -> None:
        from bench.procs import Emulator

        self.workdir = workdir
        self.started: list[Any] = []
        try:
            self.redis = RedisServer(workdir)
            self.started.append(self.redis)
            self.s3 = S3Server(workdir)
            self.started.append(self.s3)
            self.emulators = [
                Emulator(workdir, f"emulator-{i + 1}", step_delay=step_delay, node_delay=node_delay)
                for i in range(emulators)
            ]
            self.started += self.emulators
            for emu in self.emulators:
                emu.wait_ready()
            self.env = {"COMFYUI_REDIS_URL": self.redis.url, "COMFYUI_LEASE_TTL": "2", **self.s3.env(), **(env or {})}
            names = "abcdefgh"
            self.replicas = [
                Replica(workdir, f"replica-{names[i]}", [e.url for e in self.emulators], self.env, log_level=log_level)
                for i in range(replicas)
            ]
            self.started += self.replicas
            for replica in self.replicas:
                replica.wait_ready()
            self.nginx = Nginx(workdir, [r.port for r in self.replicas])
            self.started.append(self.nginx)
            self.wait_owned()
        except BaseException:
            self.close()
            raise

    def owners(self) -> dict[str, str | None]:
        """Backend name → the replica holding its lease, as the first replica that answers sees it."""
        for replica in self.replicas:
            if replica.proc is None:
                continue
            status, body = replica.health()
            if status == 200 and body:  # (a ViewComfy backend is each replica's own: no owner)
                return {b["name"]: b.get("owner") for b in body["backends"] if b["kind"] == "comfyui"}
        return {}

    def wait_owned(self, timeout: float = 30.0, exclude: str | None = None) -> dict[str, str | None]:
        """Until the leases have settled: every backend has a live owner (other than ``exclude``) that serves it,
        no replica owns more than its fair share (the first replica up takes every backend, then hands some
        over as the others join), and every backend is healthy on every replica."""

        def done() -> bool:
            owners = self.owners()
            if not owners or any(o is None or o == exclude for o in owners.values()):
                return False
            running = [r for r in self.replicas if r.proc is not None and r.name != exclude]
            served: list[str] = []
            for replica in running:
                status, body = replica.health()
                if status != 200 or not all(b["healthy"] for b in body["backends"] if b["kind"] == "comfyui"):
                    return False
                if len(body["cluster"]["owned"]) > math.ceil(len(owners) / len(running)):
                    return False
                served += body["cluster"]["owned"]
            return sorted(served) == sorted(owners)

        wait_until(done, "every backend owned, by fair shares, and healthy everywhere", None, timeout)
        return self.owners()

    def close(self) -> None:
        for proc in reversed(self.started):
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - tear down everything else anyway
                pass
