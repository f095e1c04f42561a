"""A newer ComfyUI's jobs API (PR #11054) and atomic cancel (PR #14493), served in `--newer` mode only.

`GET /api/jobs` lists every job the server knows (queued, running, in history, cancelled) with
pagination; `GET /api/jobs/{id}` adds its outputs, status and workflow, and is a 404 for an unknown
id: unlike `/history/{id}`, it tells a queued or running job from one the server never had. The cancel
routes work on queued and running jobs alike and answer `{"cancelled": bool}`.
"""

from __future__ import annotations

import heapq
import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.web import guard, json_response

if TYPE_CHECKING:
    from emulator.server import ComfyUIEmulator

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


class JobsAPI:
    def __init__(self, emu: ComfyUIEmulator) -> None:
        self.emu = emu

    def routes(self) -> list[Route]:
        return [
            Route("/jobs", guard(self.list_jobs), methods=["GET"]),
            Route("/jobs/cancel", guard(self.cancel_many), methods=["POST"]),
            Route("/jobs/{job_id}", guard(self.get_job), methods=["GET"]),
            Route("/jobs/{job_id}/cancel", guard(self.cancel_one), methods=["POST"]),
        ]

    # ---- what the server knows about one job --------------------------------------------------------
    def _job(self, job_id: str, *, full: bool = False) -> dict[str, Any] | None:
        st = self.emu.state
        created = st.created.get(job_id)
        base: dict[str, Any] = {
            "id": job_id,
            "create_time": created,
            "outputs_count": 0,
            "preview_output": None,
            "execution_start_time": None,
            "execution_end_time": None,
            "execution_error": None,
        }
        item = None
        if st.running is not None and st.running.prompt_id == job_id:
            item, base["status"] = st.running, "in_progress"
        elif any(q.prompt_id == job_id for q in st.queue):
            item, base["status"] = next(q for q in st.queue if q.prompt_id == job_id), "pending"
        elif job_id in st.history:
            entry = st.history[job_id]
            messages = (entry.get("status") or {}).get("messages") or []
            events = {name: data for name, data in messages}
            if (entry.get("status") or {}).get("status_str") == "success":
                base["status"] = "completed"
            elif "execution_interrupted" in events:
                base["status"] = "cancelled"
            else:
                base["status"] = "failed"
                base["execution_error"] = events.get("execution_error")
            stamps = [data.get("timestamp") for _, data in messages if isinstance(data, dict)]
            stamps = [t for t in stamps if t is not None]
            base["execution_start_time"] = stamps[0] if stamps else None
            base["execution_end_time"] = stamps[-1] if stamps else None
            files = [f for out in entry.get("outputs", {}).values() for f in _files(out)]
            base["outputs_count"] = len(files)
            base["preview_output"] = files[0] if files else None
            if full:
                base["outputs"] = entry.get("outputs", {})
                base["execution_status"] = entry.get("status")
                base["workflow"] = {"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]}
            return base
        elif job_id in st.cancelled:
            base["status"] = "cancelled"
            base["execution_end_time"] = st.cancelled[job_id]
        else:
            return None
        if full and item is not None:
            base["outputs"] = {}
            base["execution_status"] = None
            base["workflow"] = {"prompt": item.prompt, "extra_data": item.extra}
        return base

    def _all_ids(self) -> list[str]:
        st = self.emu.state
        ids = list(st.history) + list(st.cancelled)
        if st.running is not None:
            ids.append(st.running.prompt_id)
        ids += [q.prompt_id for q in sorted(st.queue)]
        return list(dict.fromkeys(ids))

    # ---- routes ----------------------------------------------------------------------------------
    async def list_jobs(self, request: Request) -> Response:
        q = request.query_params
        wanted = {s for s in (q.get("status") or "").split(",") if s}
        if wanted - set(STATUSES):
            return json_response({"error": f"status must be among {', '.join(STATUSES)}"}, 400)
        try:
            limit = int(q["limit"]) if "limit" in q else None
            offset = max(0, int(q.get("offset", 0)))
        except ValueError:
            return json_response({"error": "limit and offset must be integers"}, 400)
        jobs = [job for job in (self._job(i) for i in self._all_ids()) if job is not None]
        if wanted:
            jobs = [job for job in jobs if job["status"] in wanted]
        key = "create_time" if q.get("sort_by", "created_at") == "created_at" else "execution_duration"

        def sort_key(job: dict[str, Any]) -> float:
            if key == "create_time":
                return job.get("create_time") or 0.0
            start, end = job.get("execution_start_time"), job.get("execution_end_time")
            return (end - start) if start is not None and end is not None else 0.0

        jobs.sort(key=sort_key, reverse=q.get("sort_order", "desc") != "asc")
        total = len(jobs)
        page = jobs[offset : offset + limit] if limit is not None else jobs[offset:]
        pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total}
        return json_response({"jobs": page, "pagination": pagination})

    async def get_job(self, request: Request) -> Response:
        job = self._job(request.path_params["job_id"], full=True)
        if job is None:
            return json_response({"error": "Job not found"}, 404)
        return json_response(job)

    def _cancel(self, job_id: str) -> bool:
        """Atomic: a queued job leaves the queue, the running one is interrupted; repeating is harmless."""
        st = self.emu.state
        for index, item in enumerate(st.queue):
            if item.prompt_id == job_id:
                st.queue.pop(index)
                heapq.heapify(st.queue)
                st.cancelled[job_id] = time.time() * 1000
                self.emu.queue.updated()
                return True
        if st.running is not None and st.running.prompt_id == job_id:
            st.interrupt = True
            return True
        return job_id in st.cancelled

    async def cancel_one(self, request: Request) -> Response:
        return json_response({"cancelled": self._cancel(request.path_params["job_id"])})

    async def cancel_many(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            return json_response({"error": "body must be JSON"}, 400)
        ids = data.get("job_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return json_response({"error": "job_ids must be a list of job ids"}, 400)
        results = [self._cancel(i) for i in ids]
        return json_response({"cancelled": bool(results) and all(results)})


def _files(output: Any) -> list[dict[str, Any]]:
    if not isinstance(output, dict):
        return []
    return [
        item
        for items in output.values()
        if isinstance(items, list)
        for item in items
        if isinstance(item, dict) and "filename" in item
    ]
