"""What ViewComfy's current published Python client does on the wire, re-stated for tests (not copied).

The calls, field names, encodings, socket.io options and result handling follow ``api.py`` of
ViewComfy/cloud-public and the second half of ``/work/shared/viewcomfy-protocol.md``:

* ``infer``: POST ``{API_URL}/api/workflow/infer`` (form: prompt_id uuid4, view_comfy_api_url, params as one
  JSON string, workflow_api JSON string or None, files as parts named by their key) with the
  ``client_id`` / ``client_secret`` headers; only 201 is success; ``PromptScheduled(**data)``.
* ``infer_with_logs``: first a ``socketio.AsyncClient()`` (defaults) connects to API_URL with ``auth`` =
  the two credentials and ``transports=["websocket"]``; then the same POST with ``sid``; it waits until a
  result, error or canceled event, or a disconnect; then disconnects itself. ``PromptResult(**data)``
  raises on an extra key (inside the event handler, so the wait would never end: here it is recorded).
* ``infer_info``: GET ``{API_URL}/api/workflow/infer/?prompt_ids=..`` (no redirect followed), 200, keys
  snake_cased, ``created_at``/``workflow``/``client_id``/``user`` deleted, ``PromptResult(**rest)``.
* ``infer_cancel``: POST ``{API_URL}/api/workflow/infer/cancel`` JSON ``{prompt_id, view_comfy_api_url}``, 201.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from io import BufferedReader
from typing import Any

import httpx
import socketio


class ClientError(Exception):
    """What the published client raises: any non-201 (200 included) or a transport failure."""


class S3FileOutput:
    def __init__(self, filename: str, content_type: str, size: int, filepath: str) -> None:
        self.filename, self.content_type, self.size, self.filepath = filename, content_type, size, filepath


class PromptResult:
    """Exact keyword arguments, like the client's class: an unknown key is a TypeError."""

    def __init__(
        self,
        prompt_id: str,
        status: str,
        completed: bool,
        execution_time_seconds: float,
        prompt: dict[str, Any],
        outputs: list[dict[str, Any]],
        error_data: Any = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.status = status
        self.completed = completed
        self.execution_time_seconds = execution_time_seconds
        self.prompt = prompt
        self.error_data = error_data
        self.outputs = [
            S3FileOutput(o.get("filename", ""), o.get("content_type", ""), o.get("size", 0), o.get("filepath", ""))
            for o in outputs or []
        ]


class PromptScheduled:
    def __init__(self, prompt_id: str, message: str, workflow: Any) -> None:
        self.prompt_id, self.message, self.workflow = prompt_id, message, workflow


EVENTS = (
    "infer_log_message",
    "infer_error_message",
    "infer_executed_message",
    "infer_result_message",
    "infer_canceled_message",
)


class PublishedClient:
    def __init__(self, api_url: str, client_id: str, client_secret: str) -> None:
        self.api_url = api_url
        self.auth = {"client_id": client_id, "client_secret": client_secret}
        self.events: list[tuple[str, Any]] = []
        self.handler_errors: list[BaseException] = []
        self.prompt_result: PromptResult | None = None
        self.last_prompt_id: str | None = None

    @staticmethod
    def _split(params: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, BufferedReader]]]:
        plain, files = {}, []
        for key, value in params.items():
            if isinstance(value, BufferedReader):
                files.append((key, value))
            else:
                plain[key] = value
        return plain, files

    def _form(
        self, params: dict[str, Any], view_comfy_api_url: str, workflow: dict[str, Any] | None, sid: str | None
    ) -> tuple[dict[str, Any], list[tuple[str, BufferedReader]]]:
        plain, files = self._split(params)
        self.last_prompt_id = str(uuid.uuid4())
        data: dict[str, Any] = {
            "prompt_id": self.last_prompt_id,
            "view_comfy_api_url": view_comfy_api_url,
            "params": json.dumps(plain),
            "workflow_api": json.dumps(workflow) if workflow else None,
        }
        if sid is not None:
            data["sid"] = sid
        return data, files

    async def _post_schedule(self, data: dict[str, Any], files: list[tuple[str, BufferedReader]]) -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.api_url}/api/workflow/infer",
                data=data,
                files=files,
                timeout=httpx.Timeout(2400.0),
                follow_redirects=True,
                headers=self.auth,
            )
        if response.status_code != 201:
            raise ClientError(f"API request failed with status {response.status_code}: {response.text}")
        return response.json()

    async def infer(
        self, *, params: dict[str, Any], view_comfy_api_url: str, override_workflow_api: dict[str, Any] | None = None
    ) -> PromptScheduled:
        data, files = self._form(params, view_comfy_api_url, override_workflow_api, None)
        body = await self._post_schedule(data, files)
        return PromptScheduled(**body["data"])

    async def infer_with_logs(
        self,
        *,
        params: dict[str, Any],
        view_comfy_api_url: str,
        override_workflow_api: dict[str, Any] | None = None,
        wait_limit: float = 30.0,
    ) -> PromptResult | None:
        sio = socketio.AsyncClient()
        waiting = asyncio.Event()
        self.prompt_result = None

        def on(name: str) -> Any:
            async def handler(data: Any = None) -> None:
                self.events.append((name, data))
                try:
                    if name == "infer_result_message" and data:
                        self.prompt_result = PromptResult(**data)
                except BaseException as exc:  # the real client would hang here; a test must see it
                    self.handler_errors.append(exc)
                    return
                if name in ("infer_error_message", "infer_result_message", "infer_canceled_message"):
                    waiting.set()

            return handler

        for name in EVENTS:
            sio.on(name, on(name))
        sio.on("disconnect", lambda *reason: waiting.set())
        try:
            await sio.connect(self.api_url, auth=self.auth, transports=["websocket"])
        except Exception as exc:
            raise ClientError(f"Unable to connect to to websocket server, e: {exc}") from exc
        try:
            data, files = self._form(params, view_comfy_api_url, override_workflow_api, sio.get_sid(namespace="/"))
            await self._post_schedule(data, files)
            await asyncio.wait_for(waiting.wait(), wait_limit)
        finally:
            await sio.disconnect()
        return self.prompt_result

    async def infer_info(self, prompt_ids: list[str]) -> list[PromptResult]:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"{self.api_url}/api/workflow/infer/",
                params={"prompt_ids": prompt_ids},
                headers=self.auth,
                timeout=httpx.Timeout(2400.0),
            )
        if response.status_code != 200:
            raise ClientError(f"API request failed with status {response.status_code}: {response.text}")
        results = []
        for record in response.json():
            body = {_snake(k): v for k, v in record.items()}
            for key in ("created_at", "workflow", "client_id", "user"):
                del body[key]
            body["outputs"] = [{_snake(k): v for k, v in o.items()} for o in body.get("outputs") or []]
            results.append(PromptResult(**body))
        return results

    async def infer_cancel(self, *, prompt_id: str, view_comfy_api_url: str) -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.api_url}/api/workflow/infer/cancel",
                json={"prompt_id": prompt_id, "view_comfy_api_url": view_comfy_api_url},
                timeout=httpx.Timeout(2400.0),
                headers=self.auth,
            )
        if response.status_code != 201:
            raise ClientError(f"API request failed with status {response.status_code}: {response.text}")
        return response.json()


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
