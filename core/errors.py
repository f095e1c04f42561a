"""Every error ComfyGate raises on purpose, in one tree.

Each class carries the HTTP status it maps to and a stable ``code`` so the API, the WebSocket and the
docs (COMFYUI errors guide) all speak about the same thing. Nothing outside this tree (no httpx or
websockets exception) should escape a client module.

    ComfyGateError
    ├── ComfyUIError                  a ComfyUI backend misbehaved (502)
    │   ├── ComfyUIUnavailable        unreachable, refused or timed out (503)
    │   │   └── PostUnsure            no answer to a POST that left: ComfyUI may have taken it (503)
    │   ├── PromptRejected            ComfyUI's 400 with `error` + `node_errors`, kept intact (422)
    │   └── ComfyUINotFound           ComfyUI answered 404 (404)
    ├── ViewComfyError                the ViewComfy API answered an error; keeps its JSON body (502)
    │   └── ViewComfyUnavailable      unreachable or timed out (503)
    ├── InvalidRequest                the caller sent something unusable (400)
    │   ├── InvalidJSON               a body or file that does not parse as JSON; says where (400)
    │   ├── UnsafeJSONValue           JSON holding a lone surrogate, NaN, Infinity, a huge number (422)
    │   ├── WorkflowFormatError       not a workflow in API or UI format (422)
    │   │   ├── UnknownNodeClass      a node class no backend knows (422)
    │   │   └── UnsupportedWidget     a UI node whose widgets cannot be laid out like the frontend (422)
    │   └── ParameterError            params that do not fit the workflow; lists every problem (422)
    ├── NotFound                      unknown task, workflow, file (404)
    ├── Conflict                      would overwrite without being asked to (409)
    │   └── PartnerKeyLost            a task's own partner-node key is gone (a restart): never posted without it
    ├── PayloadTooLarge               over a size limit (413)
    ├── Unauthorized                  missing or wrong API key (401)
    └── ServiceBusy                   ComfyGate's own queue is full or no backend can run it (503)
"""

from __future__ import annotations

from typing import Any


class ComfyGateError(Exception):
    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        body.update({k: v for k, v in self.detail.items() if v is not None})
        return body

    def headers(self) -> dict[str, str]:
        return {}


class ComfyUIError(ComfyGateError):
    status_code = 502
    code = "comfyui_error"


class ComfyUIUnavailable(ComfyUIError):
    status_code = 503
    code = "comfyui_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.detail.get("retry_after") or 5)}


class PostUnsure(ComfyUIUnavailable):
    """A POST whose request left but whose answer never came (the connection broke, the wait timed out, or the
    caller was cancelled meanwhile): ComfyUI may have taken it. A prompt in this state must not simply be
    posted again (ComfyUI would run a repeated prompt id a second time): look for it first."""


class PromptRejected(ComfyUIError):
    """ComfyUI refused the prompt. `error` and `node_errors` are ComfyUI's own, unchanged."""

    status_code = 422
    code = "prompt_rejected"

    def __init__(self, error: Any, node_errors: dict[str, Any] | None, message: str | None = None) -> None:
        if message is None:
            message = error.get("message", "ComfyUI rejected the prompt") if isinstance(error, dict) else str(error)
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "message": self.message,
            "comfyui_error": self.error,
            "node_errors": self.node_errors,
        }


class ComfyUINotFound(ComfyUIError):
    status_code = 404
    code = "comfyui_not_found"


class ViewComfyError(ComfyGateError):
    status_code = 502
    code = "viewcomfy_error"

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message, upstream_status=status, upstream_body=body)
        self.status = status
        self.body = body


class ViewComfyUnavailable(ViewComfyError):
    status_code = 503
    code = "viewcomfy_unavailable"


class InvalidRequest(ComfyGateError):
    status_code = 400
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnsafeJSONValue(InvalidRequest):
    """A JSON value no JSON answer could carry (security.json_safety); ``field`` says where it is."""

    status_code = 422
    code = "invalid_json_value"


class WorkflowFormatError(InvalidRequest):
    status_code = 422
    code = "invalid_workflow"


class UnknownNodeClass(WorkflowFormatError):
    code = "unknown_node_class"

    def __init__(self, node_id: str, class_type: str, backend: str | None = None) -> None:
        where = f" on backend {backend}" if backend else ""
        super().__init__(
            f"node {node_id} uses class {class_type!r}, which is not installed{where}",
            node_id=node_id,
            class_type=class_type,
            backend=backend,
        )


class UnsupportedWidget(WorkflowFormatError):
    """A UI workflow node whose stored widget values ComfyGate cannot lay out as the frontend does."""

    code = "unsupported_widget"

    def __init__(self, node_id: str, class_type: str, reason: str) -> None:
        super().__init__(
            f"node {node_id} ({class_type}): {reason}, whose stored values ComfyGate cannot lay out exactly as "
            "ComfyUI's frontend does; rather than guess it refuses: export this workflow with 'Export (API)' "
            "or replace that node",
            node_id=node_id,
            class_type=class_type,
            reason=reason,
        )


class ParameterError(InvalidRequest):
    """One or more parameters do not fit. `problems` lists each: node_id, input, expected, received."""

    status_code = 422
    code = "invalid_parameters"

    def __init__(self, problems: list[dict[str, Any]], message: str | None = None) -> None:
        if message is None:
            first = problems[0]["message"] if problems and "message" in problems[0] else "invalid parameters"
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            message = f"{first}{more}"
        super().__init__(message, problems=problems)
        self.problems = problems


class NotFound(ComfyGateError):
    status_code = 404
    code = "not_found"


class Conflict(ComfyGateError):
    status_code = 409
    code = "conflict"


class PartnerKeyLost(Conflict):
    """A task submitted with its own ``api_key_comfy_org`` is about to be posted, but ComfyGate keeps such keys in
    memory only and restarted since: posting without it (or with the server's key) would run it under nobody's or
    the wrong account, so the task fails instead."""

    code = "partner_key_lost"


def dispatch_failure(exc: ComfyGateError) -> dict[str, Any]:
    """The error of a task that ComfyGate could not hand to a backend for ``exc`` (its own reason, not ComfyUI's)."""
    return {"type": exc.code if isinstance(exc, PartnerKeyLost) else "dispatch_failed", "message": exc.message}


class PayloadTooLarge(ComfyGateError):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(ComfyGateError):
    status_code = 401
    code = "unauthorized"


class ServiceBusy(ComfyGateError):
    status_code = 503
    code = "service_busy"

    def __init__(self, message: str, retry_after: int = 5, **detail: Any) -> None:
        super().__init__(message, retry_after=retry_after, **detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
