"""Request and response bodies of ComfyGate's REST API, so /docs describes every route."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    error: str = Field(description="stable error code, see COMMON_ERRORS.md")
    message: str = Field(description="what went wrong and what to do about it")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"workflow_name": "sd_txt2img_api.json", "params": {"6.text": "a lighthouse", "3.seed": -1}}]
        },
    )
    workflow: dict[str, Any] | None = Field(
        None, description="an inline workflow, API format (workflow_api.json) or UI format (workflow.json)"
    )
    workflow_name: str | None = Field(None, description="the name of a saved workflow in the library")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description='values to set: {"6.text": "a cat", "3.seed": -1} or ViewComfy keys "6-inputs-text"',
    )
    timeout: float | None = Field(None, gt=0, description="seconds before the task is stopped (default: settings)")
    backend: str | None = Field(None, description="pin the task to one backend (name or URL)")
    wait: bool = Field(False, description="answer only when the task has ended")
    output_format: str | None = Field(None, description='"base64" to inline output files (with wait)')
    webhook: str | None = Field(None, description="URL that receives task.completed / task.failed / ...")
    api_key_comfy_org: SecretStr | None = Field(
        None,
        description="key for Comfy.org's partner API nodes, passed to ComfyUI as extra_data; never stored or returned",
    )


class OutputFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    filename: str
    kind: Literal["image", "video", "audio", "text", "3d", "file"] = Field(
        "file", description="what it is, for display: image (animated ones too), video, audio, text, 3d or file"
    )
    content_type: str
    size: int
    node_id: str
    type: str = "output"
    url: str


class TaskOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    task_id: str
    prompt_id: str
    status: str
    workflow_name: str | None = None
    backend: str | None = None
    params: dict[str, Any] = {}
    created_at: float
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    execution_time: float | None = None
    timeout: float
    progress: dict[str, Any] = {}
    outputs: list[OutputFile] = []
    node_outputs: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, description="outputs ComfyUI dropped because they failed validation (200 + node_errors)"
    )


class SubmitResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    task_id: str
    prompt_id: str
    status: str
    params: dict[str, Any] = Field(default_factory=dict, description="values applied, random seeds resolved")
    warnings: list[dict[str, Any]] = Field(
        default_factory=list, description="outputs ComfyUI dropped because they failed validation (200 + node_errors)"
    )


class TaskList(BaseModel):
    total: int
    offset: int
    limit: int
    tasks: list[TaskOut]


class BackendOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    url: str
    healthy: bool
    queue_remaining: int
    inflight: int


class HealthOut(BaseModel):
    status: str = Field(description='"ok" when every backend is reachable, "degraded" when some, "down" when none')
    backends: list[BackendOut]
    totals: dict[str, int] = Field(
        default_factory=dict, description="backends, healthy, inflight, queue_remaining, pending (held by ComfyGate)"
    )
    tasks: dict[str, int]
    listeners: int
    cluster: dict[str, Any] | None = Field(
        None, description="cluster mode: this replica, Redis and object store reachability, backends owned here"
    )


class QueueOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    total_running: int
    total_pending: int
    backends: dict[str, Any]


class UploadOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the name to put in a LoadImage input")
    subfolder: str = ""
    type: str = "input"
    local_filename: str
    size: int
    backends: list[str]


# --------------------------------------------------------------------------------------------------
# workflows (routes_workflows.py)

WorkflowFormat = Literal["api", "ui"]


class WorkflowParam(BaseModel):
    """One editable input of a workflow, as found by workflow_params.detect_params."""

    model_config = ConfigDict(extra="allow")
    key: str = Field(description='the key to send in params, e.g. "6.text"')
    node_id: str
    class_type: str
    title: str
    input: str
    value: Any = Field(description="the value stored in the workflow")
    type: str = Field(description="INT, FLOAT, STRING, BOOLEAN, COMBO or another ComfyUI type")
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    options: list[Any] | None = Field(None, description="COMBO choices (empty when the backend lists none)")
    multiline: bool | None = None
    default: Any = None
    role: str | None = Field(
        None, description="positive_prompt, negative_prompt, seed, steps, cfg, sampler, width, ... or null"
    )


class WorkflowOut(BaseModel):
    name: str = Field(description="the stored file name, with .json")
    format: WorkflowFormat = Field(description="the format the file is stored in")
    workflow: dict[str, Any] = Field(description="the workflow in API format (converted when stored as UI)")
    params: list[WorkflowParam]
    converted: bool = Field(False, description="true when an update stored a UI-format file converted to API format")
    source: dict[str, Any] | None = Field(None, description="with include=source: the file as stored")


class WorkflowListItem(BaseModel):
    name: str
    size: int = Field(description="bytes on disk")
    modified: float = Field(description="last change, seconds since the epoch")
    format: WorkflowFormat | None = Field(description="null when the file is not a readable workflow")


class WorkflowListOut(BaseModel):
    workflows: list[WorkflowListItem]


class WorkflowUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="a saved workflow, with or without .json")
    params: dict[str, Any] | None = Field(
        None, description='new default values, e.g. {"6.text": "a cat", "3.steps": 25}; checked like a submission'
    )
    workflow: dict[str, Any] | None = Field(
        None, description="a whole new workflow (API or UI format) replacing the stored one; params apply after it"
    )
    backend: str | None = Field(None, description="the backend whose object_info checks the workflow")


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: dict[str, Any] = Field(description="a workflow in API or UI format")
    backend: str | None = Field(None, description="the backend whose object_info is used")


class WorkflowDeleted(BaseModel):
    deleted: str = Field(description="the name of the removed file")


class ConvertOut(BaseModel):
    format: WorkflowFormat = Field(description="the format detected in the request")
    workflow: dict[str, Any] = Field(description="the workflow in API format")


class WorkflowParamsOut(BaseModel):
    format: WorkflowFormat
    workflow: dict[str, Any] = Field(description="the workflow in API format")
    params: list[WorkflowParam]
    missing_classes: list[dict[str, Any]] = Field(
        default_factory=list, description="with partial=true: the nodes whose class is not installed (left out)"
    )
    runnable: bool = Field(True, description="false when missing_classes is not empty")
