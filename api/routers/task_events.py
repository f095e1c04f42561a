"""``GET /api/task/{id}/events``: Server-Sent Events of one task, resumable with ``Last-Event-ID``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response, StreamingResponse

from api.dependencies import get_services
from gateway.event_log import EventLog, stream_task
from gateway.services import Services

router = APIRouter(tags=["tasks"])


@router.get(
    "/api/task/{task_id}/events",
    summary="Server-Sent Events of one task (resumable with Last-Event-ID); ends after the final event",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 204: {"description": "already delivered the end"}},
)
async def task_events(
    task_id: str,
    services: Services = Depends(get_services),
    previews: bool = Query(False, description="also send preview images (data URLs)"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    resume_from: int | None = Query(None, ge=0, description="same as the Last-Event-ID header"),
) -> Response:
    task = services.manager.get(task_id)
    events: EventLog = services.extras["event_log"]
    last: int | None = resume_from
    if last_event_id is not None and last_event_id.strip().isdigit():
        last = int(last_event_id.strip())
    log = events.log(task.task_id)
    if last is not None:
        # An id from the future counts as "everything so far", taken now: clamped when the stream starts
        # instead, an end that came in between (the task finishing meanwhile) was counted as seen too.
        last = min(last, log.last_id)
    if last is not None and task.status.final:
        if last >= log.last_id and log.last_id > 0:
            return Response(status_code=204)  # tells an EventSource to stop reconnecting
        if not log.after(last):
            last = None  # the log was compacted or dropped: send the final event
    return StreamingResponse(
        stream_task(events, log, task, last, previews, services.settings.sse_keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
