"""A cluster with a ViewComfy backend: three replicas in front of ComfyUI emulators, and the ViewComfy server
they all call, a single ComfyGate (both of its ViewComfy-compatible APIs) in front of an emulator of its own."""

from __future__ import annotations

from pathlib import Path

from bench.cluster_procs import ClusterStack
from bench.procs import Emulator, Gate

VC_ID, VC_SECRET = "vc-client", "vc-secret-value-0123"


class ViewComfyStack:
    def __init__(
        self, workdir: Path, api: str = "direct", emulators: int = 2, replica_env: dict[str, str] | None = None
    ) -> None:
        """``api``: "direct" (the first API: one SSE POST, base64 outputs) or "current" (socket.io, polling);
        ``replica_env``: more settings for the replicas."""
        self.started: list[Emulator | Gate | ClusterStack] = []
        try:
            self.vc_emulator = Emulator(workdir, "emulator-vc", step_delay=0.01).wait_ready()
            self.started.append(self.vc_emulator)
            env = {"COMFYUI_VIEWCOMFY_SERVER_CLIENT_ID": VC_ID, "COMFYUI_VIEWCOMFY_SERVER_CLIENT_SECRET": VC_SECRET}
            self.viewcomfy = Gate(workdir, "viewcomfy", [self.vc_emulator.url], env=env).wait_ready()
            self.started.append(self.viewcomfy)
            vc = {"COMFYUI_VIEWCOMFY_CLIENT_ID": VC_ID, "COMFYUI_VIEWCOMFY_CLIENT_SECRET": VC_SECRET}
            if api == "current":
                vc |= {
                    "COMFYUI_VIEWCOMFY_API": "current",
                    "COMFYUI_VIEWCOMFY_API_URL": self.viewcomfy.url,
                    "COMFYUI_VIEWCOMFY_URL": "sd",  # the deployment (the workflow sent with each run is used)
                    "COMFYUI_VIEWCOMFY_POLL_INTERVAL": "0.3",
                }
            else:
                vc["COMFYUI_VIEWCOMFY_URL"] = f"{self.viewcomfy.url}/api/viewcomfy/infer"
            self.cluster = ClusterStack(
                workdir / "cluster", emulators=emulators, step_delay=0.01, env=vc | (replica_env or {})
            )
            self.started.append(self.cluster)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for proc in reversed(self.started):
            proc.close() if isinstance(proc, ClusterStack) else proc.stop()
