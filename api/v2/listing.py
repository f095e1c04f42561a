"""``GET /api/v2/jobs``: one page of jobs, newest first, by status and labels, with an opaque cursor.

The cursor names the last task of the page (not an offset), so tasks submitted meanwhile shift
nothing: each job appears once across the pages. A page stops after ``SCAN_LIMIT`` tasks examined
even if filters matched few, and hands a cursor to continue.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.v2 import view
from api.v2.errors import V2Error
from api.v2.labels import parse_filters
from core.task import TaskStatus
from tasks.store import TaskStore

LIST_DEFAULT = 50
LIST_MAX = 100
SCAN_LIMIT = 5000


@dataclass(slots=True)
class ListQuery:
    limit: int = LIST_DEFAULT
    statuses: set[str] | None = None  # v2 statuses wanted
    labels: dict[str, str] | None = None
    after: str | None = None  # the task id the cursor names

    def task_statuses(self) -> set[TaskStatus] | None:
        if self.statuses is None:
            return None
        return set().union(*(view.TASK_STATUSES[s] for s in self.statuses))


def parse(query: Mapping[str, str], pairs: list[tuple[str, str]], store: TaskStore) -> ListQuery:
    """The query string, checked (400 with the code the contract gives each mistake)."""
    parsed = ListQuery(labels=parse_filters(pairs))
    if "limit" in query:
        try:
            parsed.limit = int(query["limit"])
        except ValueError as exc:
            raise V2Error(400, "invalid_request", "'limit' must be an integer") from exc
        if not 1 <= parsed.limit <= LIST_MAX:
            raise V2Error(400, "invalid_request", f"'limit' must be between 1 and {LIST_MAX}")
    if query.get("status"):
        parsed.statuses = {s.strip() for s in query["status"].split(",") if s.strip()}
        unknown = parsed.statuses - set(view.STATUSES)
        if unknown:
            raise V2Error(
                400, "invalid_request", f"unknown status {sorted(unknown)[0]!r}; one of {', '.join(view.STATUSES)}"
            )
    if query.get("cursor"):
        parsed.after = decode_cursor(query["cursor"])
        if store.get(parsed.after) is None:
            raise V2Error(400, "invalid_cursor", "this cursor is not one ComfyGate issued, or its job is gone")
    return parsed


def page(store: TaskStore, query: ListQuery) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    last: str | None = None
    scanned = 0
    more = False
    for task in store.scan(before=query.after, status=query.task_statuses()):
        if len(items) >= query.limit or scanned >= SCAN_LIMIT:
            more = True
            break
        scanned += 1
        last = task.task_id
        if query.statuses is not None and view.status_of(task) not in query.statuses:
            continue  # e.g. "canceling" among the running ones
        labels = task.extra.get("v2_metadata") or {}
        if any(labels.get(k) != v for k, v in (query.labels or {}).items()):
            continue
        items.append(view.list_item_of(task))
    body: dict[str, Any] = {"jobs": items}
    if more and last is not None:
        body["next_cursor"] = encode_cursor(last)
    return body


def encode_cursor(task_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": task_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = data["after"]
        if not isinstance(after, str):
            raise TypeError
        return after
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise V2Error(400, "invalid_cursor", "this cursor is not one ComfyGate issued") from exc
