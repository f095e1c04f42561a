"""The v2 bodies as pydantic models, for ``/docs`` only: the routes build plain dicts (``view.py``) and
answer with ``JSONResponse``, so these never cost a validation per request. Field for field the
contract's schemas (nullable fields are required and may be null); ComfyGate's additions are marked."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "canceling", "canceled", "failed", "expired"]
OutputType = Literal["image", "video", "audio", "text", "file", "latent"]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_workflow"])
    message: str
    details: dict[str, Any] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class Progress(BaseModel):
    value: float = Field(ge=0, le=1, description="overall fraction")
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    current_node_class: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


class Output(BaseModel):
    node_id: str
    name: str
    type: OutputType
    content_type: str
    size_bytes: int
    id: str = Field(description="asset id: GET /api/v2/assets/{id}")
    hash: str | None = Field(description="blake3:<hex>, null until computed")
    url: str
    url_expires_at: str
    job_id: str | None = None


class JobError(BaseModel):
    code: str = Field(examples=["node_execution_error"])
    message: str
    node_id: str | None = None
    class_type: str | None = None
    traceback: str | None = None


class JobUrls(BaseModel):
    self: str
    events: str
    cancel: str


class Job(BaseModel):
    id: str = Field(description="ComfyGate's task id: the same id works on /api/task, /api/interrupt and /ws")
    status: JobStatus
    created_at: str
    started_at: str | None
    completed_at: str | None
    expires_at: str
    queue_position: int | None
    progress: Progress | None
    outputs: list[Output]
    error: JobError | None
    metrics: dict[str, int | None] | None = None
    metadata: dict[str, str] = Field(default_factory=dict, description="the labels given at submit")
    urls: JobUrls


class JobListItem(BaseModel):
    id: str
    status: JobStatus
    create_time: str
    update_time: str
    created_at: str
    started_at: str | None
    completed_at: str | None
    deployment_id: str | None = None
    workflow_name: str | None = Field(None, description="ComfyGate: the saved workflow, if any")
    backend: str | None = Field(None, description="ComfyGate: the backend the job went to")
    metadata: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    jobs: list[JobListItem]
    next_cursor: str | None = Field(None, description="absent on the last page")


class JobWorkflow(BaseModel):
    workflow: dict[str, Any]
    format: Literal["api", "save"]


class Asset(BaseModel):
    id: str
    hash: str | None
    size_bytes: int
    content_type: str
    file_path: str | None = None
    created_new: bool | None = Field(None, description="create answers only: new bytes (true) or a dedup hit")
    created_at: str
    url: str
    url_expires_at: str
    expires_at: str | None = Field(None, description="null: kept until deleted")
    job_id: str | None = Field(None, description="outputs: the job that produced it")
    tags: list[str] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    backends: dict[str, int]
    queue: dict[str, int]


SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["workflow"],
                "properties": {
                    "workflow": {"type": "object", "description": "API-format graph, verbatim"},
                    "extra_data": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"api_key_comfy_org": {"type": "string"}},
                    },
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "example": {
                "workflow": {
                    "1": {
                        "class_type": "EmptyImage",
                        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
                    },
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "v2"}},
                },
                "metadata": {"client": "acme"},
            },
        }
    },
}
IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "single-use: a second request with the same key is refused 422 idempotency_key_reuse",
}
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "file_path"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "content_type": {"type": "string"},
                    "file_path": {"type": "string"},
                    "expected_hash": {"type": "string", "description": "blake3:<hex>; a mismatch is 409"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            }
        }
    },
}
FROM_HASH_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["hash"],
                "properties": {
                    "hash": {"type": "string"},
                    "file_path": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            }
        }
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, all in the envelope."""
    return {code: {"model": ErrorEnvelope, "description": _ERROR_TEXT.get(code, "error")} for code in codes}


_ERROR_TEXT = {
    400: "invalid_request, invalid_cursor, invalid_metadata_filter",
    401: "unauthorized (API keys on, none or a wrong one given)",
    404: "not_found, blob_not_found",
    409: "hash_mismatch, asset_in_use",
    413: "payload_too_large",
    422: "invalid_workflow (node_errors in details), workflow_format_ui, missing_asset, idempotency_key_reuse,"
    " metadata_invalid",
    429: "queue_full / too_many_streams, with Retry-After",
    503: "upstream_unavailable (no backend reachable right now), with Retry-After",
}
