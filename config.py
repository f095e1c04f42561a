"""ComfyGate settings: environment variables prefixed ``COMFYUI_`` and an optional ``.env`` file.

The app receives a ``Settings`` object from its factory (``create_app(settings)``) so tests and the
launcher can override anything without touching the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent


def _split_list(value: object) -> object:
    """Accept ``a,b`` as well as a JSON list, so ``COMFYUI_COMFYUI_SERVERS=h1:8188,h2:8188`` works."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    # The project's .env, then one in the working folder (which wins): start.py works from anywhere.
    model_config = SettingsConfigDict(env_prefix="COMFYUI_", env_file=(PROJECT_DIR / ".env", ".env"), extra="ignore")

    # Where ComfyUI runs. ``comfyui_servers`` (a list) takes precedence when set.
    comfyui_server: str = "127.0.0.1:8188"
    comfyui_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Where ComfyGate listens. Loopback unless told otherwise.
    host: str = "127.0.0.1"
    port: int = 8000

    # Data folders (relative paths are taken from the project folder).
    workflows_dir: Path = Path("workflows")
    uploads_dir: Path = Path("uploads")
    outputs_dir: Path = Path("outputs")
    data_dir: Path = Path("data")

    # Tasks.
    task_timeout: float = Field(600.0, gt=0, description="default per-task timeout in seconds")
    history_limit: int = Field(1000, ge=1, description="finished tasks kept; oldest dropped first")
    full_finished_tasks: int = Field(
        1000, ge=0, description="newest finished tasks kept as full objects; older ones are compacted (~0.4 kB each)"
    )
    max_pending_tasks: int = Field(1000, ge=1, description="tasks held before dispatch; beyond: 503")
    # Each unfinished task is held whole (its workflow too) until it ends: with no limit per backend
    # (max_backend_queue 0), a client queueing without end would grow this process without end.
    max_unfinished_tasks: int = Field(
        10_000, ge=1, description="unfinished tasks (queued anywhere, running) this process holds; beyond: 503"
    )
    backend_down_grace: float = Field(
        10.0, ge=0, description="seconds a backend may stay unreachable before its running tasks fail"
    )

    # Backend pool. A task is held in ComfyGate's own queue (status "pending") while no capable backend
    # is healthy, or while every capable backend already has ``max_backend_queue`` unfinished tasks.
    max_backend_queue: int = Field(0, ge=0, description="unfinished tasks handed to one backend; 0 = unlimited")
    probe_interval: float = Field(5.0, gt=0, description="seconds between /system_stats health probes")
    poll_interval: float = Field(
        1.0, gt=0, description="seconds between /history polls for tasks whose WebSocket messages are lost"
    )

    # Durable task store: "sqlite" (tasks survive a restart) or "memory" (lost on restart).
    task_store: Literal["sqlite", "memory"] = "sqlite"
    database_url: str | None = Field(
        None, description="sqlite:///path/to/tasks.db or a file path; default: data_dir/tasks.sqlite3"
    )

    # Limits and timeouts.
    request_timeout: float = Field(30.0, gt=0, description="timeout of one HTTP call to ComfyUI")
    fast_prompt_post: bool = Field(
        True,
        description="POST /prompt over ComfyGate's own keep-alive connections (plain http) instead of httpx: "
        "~1 ms less CPU per task; set false if a proxy in front of ComfyUI needs more of HTTP than it speaks",
    )
    busy_poll_ms: float = Field(
        8.0,
        ge=0,
        le=100,
        description="after each request to a ComfyUI server, poll for its answer this long instead of sleeping "
        "(a core kept busy, yielded to anything else that needs it): ~0.5 ms less per image where ComfyUI runs "
        "on the same machine; 0 turns it off",
    )
    keep_alive_timeout: int = Field(
        75,
        ge=1,
        description="seconds an idle keep-alive connection stays open; longer than clients' pools keep theirs "
        "(uvicorn's own 5 s races with a pool reusing the connection: a reset)",
    )

    # Outputs: how finished files reach outputs/ and the client (README, "Outputs").
    comfyui_output_dir: Path | None = Field(
        None,
        description="ComfyUI's output folder when ComfyGate runs on the same machine (one backend): finished files "
        "are taken from there instead of downloaded through /view. Unset (default): always /view",
    )
    comfyui_output_dirs: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="the same per backend: 'server=folder,...' or a JSON object; a key is a server address as "
        "given in COMFYUI_COMFYUI_SERVERS or a backend name (comfyui-1, ...)",
    )
    output_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="memory for just-finished small outputs that /api/image serves; 0 = off"
    )
    output_cache_file_bytes: int = Field(
        1024 * 1024, ge=0, description="outputs up to this size are fetched into memory and kept there too"
    )
    max_upload_bytes: int = 50 * 1024 * 1024
    ws_queue_size: int = Field(1000, ge=1, description="messages buffered per WebSocket listener")

    # Keys for Comfy.org's paid partner API nodes, sent as extra_data.api_key_comfy_org: one for every
    # ComfyUI backend, or one per entry of comfyui_servers (comma-separated, in order; empty = none).
    comfy_org_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Security (see SECURITY.md).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    public_docs: bool = Field(True, description="/docs and /openapi.json readable without a key when keys are on")
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="any request body above this is a 413; keep above max_upload_bytes"
    )
    max_json_depth: int = Field(64, ge=2, description="JSON bodies nested deeper are refused (422)")
    max_workflow_nodes: int = Field(
        10_000, ge=1, description="workflows with more nodes (subgraphs included) are refused (422)"
    )
    max_image_pixels: int = Field(
        89_478_485, ge=1, description="uploaded images with more pixels are refused (decompression bombs)"
    )

    # Integration features (see integration.py): synchronous submit, SSE, webhooks, remote inputs.
    public_url: str | None = Field(
        None, description="ComfyGate's public base URL for absolute output URLs (default: from the request)"
    )
    webhook_url: str | None = Field(None, description="receives every task's final event, besides per-task hooks")
    webhook_secret: SecretStr | None = Field(None, description="Standard Webhooks secret, whsec_<base64>")
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="delivery attempts per webhook message")
    webhook_backoff: float = Field(2.0, gt=0, description="seconds before the first retry; doubles each time")
    webhook_timeout: float = Field(10.0, gt=0, description="timeout of one webhook delivery attempt")
    allow_private_urls: bool = Field(
        False, description="let remote inputs and webhooks reach loopback, private and link-local addresses"
    )
    remote_input_timeout: float = Field(30.0, gt=0, description="time limit to download one remote input")
    inline_output_max_bytes: int = Field(
        20 * 1024 * 1024, ge=0, description="total bytes of outputs inlined as base64 in one synchronous answer"
    )
    sse_keepalive: float = Field(15.0, gt=0, description="seconds between SSE keepalive comments")
    event_log_size: int = Field(256, ge=8, description="events kept per task for SSE resumption")

    # ViewComfy backend (optional) and the ViewComfy-compatible endpoint.
    viewcomfy_url: str | None = None
    viewcomfy_client_id: SecretStr | None = None
    viewcomfy_client_secret: SecretStr | None = None
    viewcomfy_default_workflow: str | None = None
    viewcomfy_object_info: Path | None = Field(
        None, description="object_info JSON that ViewComfy tasks are validated against (default: see services)"
    )
    # What ComfyGate's own ViewComfy-compatible endpoint accepts (unset: no check).
    viewcomfy_server_client_id: SecretStr | None = None
    viewcomfy_server_client_secret: SecretStr | None = None
    viewcomfy_keepalive: float = Field(5.0, gt=0, description="seconds between SSE keepalives on /api/viewcomfy")
    # ViewComfy's current API (one central API, socket.io events, output links): which one the ViewComfy
    # backend speaks ("direct": POST the deployment URL, as before; "current": schedule on the central API
    # at viewcomfy_api_url with viewcomfy_url as the deployment's view_comfy_api_url).
    viewcomfy_api: Literal["direct", "current"] = "direct"
    viewcomfy_api_url: str = Field("https://api.viewcomfy.com", description="ViewComfy's central API (current mode)")
    viewcomfy_poll_interval: float = Field(
        2.0, gt=0, description="seconds between result polls of a ViewComfy run followed without socket.io"
    )
    # Output links that ComfyGate's current-API endpoint answers with (fetched without credentials).
    link_secret: SecretStr | None = Field(
        None, description="key signing output links (default: derived from the configured secrets, else random)"
    )
    viewcomfy_link_ttl: float = Field(24 * 3600.0, gt=0, description="seconds an output link stays valid")

    # Comfy API v2 (/api/v2, see api/v2/): Comfy-Org's contract for the official SDKs.
    v2_max_event_streams: int = Field(10_000, ge=1, description="v2 event streams open at once; beyond: 429")
    v2_job_retention: float = Field(
        24 * 3600.0, gt=0, description="a v2 job's expires_at: this many seconds after it ended (or was created)"
    )
    v2_poll_hold: float = Field(
        0.25,
        ge=0,
        le=30,
        description="GET /api/v2/jobs/{id} of an unfinished job answers when it ends or after this many seconds",
    )
    v2_convert_ui_workflows: bool = Field(
        False, description="accept UI-format workflows on POST /api/v2/jobs (an extension: the contract refuses them)"
    )
    # Cluster mode (see README "Running several replicas"): several replicas behind a load balancer share
    # their tasks, queue and events through Redis and their files through object storage. Unset: one process.
    redis_url: SecretStr | None = Field(None, description="redis://host:6379/0 switches cluster mode on")
    redis_prefix: str = Field("cg:", description="prefix of every Redis key of this service")
    storage_url: str | None = Field(
        None, description="where files go in cluster mode: file:///shared/folder or s3://bucket/prefix"
    )
    storage_endpoint: str | None = Field(None, description="S3-compatible endpoint URL (default: AWS)")
    storage_key_id: SecretStr | None = None
    storage_secret: SecretStr | None = None
    storage_region: str = "us-east-1"
    storage_redirect: bool = Field(
        False, description="answer output downloads with a redirect to a signed URL when the store can sign"
    )
    replica_id: str | None = Field(None, description="this replica's name in the cluster (default: host-pid)")
    lease_ttl: float = Field(
        4.0, ge=1.0, description="seconds an owner may stay silent before another replica takes its backend"
    )
    shutdown_grace: int = Field(
        5, ge=1, description="cluster mode: seconds open streams may run on after a stop before they are closed"
    )
    events_stream_max: int = Field(20000, ge=1000, description="entries kept in the Redis stream of events")

    @field_validator("comfyui_servers", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("comfyui_output_dirs", mode="before")
    @classmethod
    def _dirs(cls, value: object) -> object:
        """``host:8188=/srv/comfy/output,comfyui-2=/mnt/out`` (or a JSON object) → {key: folder}."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                import json

                return json.loads(text)
            pairs = [part.partition("=") for part in text.split(",") if part.strip()]
            if any(not key.strip() or not folder.strip() for key, _, folder in pairs):
                raise ValueError("use server=folder pairs separated by commas, e.g. 127.0.0.1:8188=/srv/comfy/output")
            return {key.strip(): folder.strip() for key, _, folder in pairs}
        return value

    def output_dir_for(self, name: str, server: str) -> Path | None:
        """ComfyUI's output folder for backend ``name`` at ``server``, when ComfyGate was told it (same host)."""

        def address(text: str) -> str:  # 127.0.0.1:8188 and http://127.0.0.1:8188/ are one server
            text = text.strip().rstrip("/")
            return text if "://" in text else f"http://{text}"

        folder = self.comfyui_output_dirs.get(name)
        if folder is None:
            folder = next((f for key, f in self.comfyui_output_dirs.items() if address(key) == address(server)), None)
        if folder is None and len(self.servers) == 1:
            folder = self.comfyui_output_dir
        return folder

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("comfy_org_api_keys", mode="before")
    @classmethod
    def _partner_keys(cls, value: object) -> object:
        """Positions matter (one per server), so empty entries stay."""
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value

    def partner_key(self, index: int) -> str | None:
        """The partner-node key of the index-th ComfyUI server (0-based)."""
        keys = self.comfy_org_api_keys
        chosen = keys[0] if len(keys) == 1 else (keys[index] if index < len(keys) else None)
        value = chosen.get_secret_value() if chosen is not None else ""
        return value or None

    @field_validator("workflows_dir", "uploads_dir", "outputs_dir", "data_dir", "viewcomfy_object_info")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else PROJECT_DIR / value

    @property
    def servers(self) -> list[str]:
        return list(self.comfyui_servers) or [self.comfyui_server]

    @property
    def database_path(self) -> Path | None:
        """The SQLite file of the task store, or None in memory mode."""
        if self.task_store == "memory" and not self.database_url:
            return None
        if self.database_url:
            url = self.database_url
            if url.startswith("memory:") or url == "memory":
                return None
            path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
            return path if path.is_absolute() else PROJECT_DIR / path
        return self.data_dir / "tasks.sqlite3"

    def ensure_dirs(self) -> None:
        for folder in (self.workflows_dir, self.uploads_dir, self.outputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.database_path is not None:
            self.database_path.parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
