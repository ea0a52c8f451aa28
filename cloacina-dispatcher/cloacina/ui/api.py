"""The dashboard's JSON API: routes a GET path to its endpoint and returns the JSON payload.

Every endpoint only reads, through a :class:`cloacina.SyncExecutor` initialized with
``worker=False``. ``GET /api/`` lists the endpoints below with their parameters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote

import cloacina

from cloacina.ui import records

PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX = cloacina.DEFAULT_LIST_LIMIT, 200
WORKFLOW_LIMIT_DEFAULT, WORKFLOW_LIMIT_MAX = 100, 500
INSTANCE_LIMIT_DEFAULT, INSTANCE_LIMIT_MAX = 100, 1000

Query = Mapping[str, Sequence[str]]
Payload = Dict[str, Any]


class ApiError(Exception):
    """A request the API refuses: answered as ``{"error": message}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Endpoint:
    """One documented route, as ``GET /api/`` lists it."""

    path: str
    description: str
    params: Dict[str, str]


ENDPOINTS: Tuple[Endpoint, ...] = (
    Endpoint("/api/", "this list of endpoints", {}),
    Endpoint("/api/health", "whether the database answers, the backend in use and the status names", {}),
    Endpoint("/api/executions", "one page of executions, newest first, without contexts or task results",
             {"workflow": "only this workflow's executions",
              "status": "only executions in this status: " + ", ".join(cloacina.EXECUTION_STATUSES),
              "limit": f"page size, 1 to {PAGE_LIMIT_MAX} (default {PAGE_LIMIT_DEFAULT})",
              "offset": "skip this many of the newest (default 0); next_offset gives the next page"}),
    Endpoint("/api/executions/<execution_id>",
             "one execution with its task results (dependencies, attempt history) and contexts; "
             f"context values over {records.MAX_VALUE_CHARS} JSON characters are replaced by a preview",
             {}),
    Endpoint("/api/executions/<execution_id>/tasks/<task_id>/instances",
             "one page of a mapped task's instances in map_index order (status, attempts, error, times, a sub-workflow's child); "
             "the task's instance counts are its 'map' in the execution; a task id holding '/' is sent as %2F",
             {"limit": f"page size, 1 to {INSTANCE_LIMIT_MAX} (default {INSTANCE_LIMIT_DEFAULT})",
              "offset": "start at this map_index (default 0); next_offset gives the next page"}),
    Endpoint("/api/workflows/<name>",
             "a workflow's latest executions (newest first), success rate and durations (oldest first)",
             {"limit": f"how many executions, 1 to {WORKFLOW_LIMIT_MAX} (default {WORKFLOW_LIMIT_DEFAULT})"}),
    Endpoint("/api/workers", "every worker registered in the database, with its heartbeat and running tasks", {}),
    Endpoint("/api/schedules", "every cron schedule, with its next and last fire", {}),
    Endpoint("/api/limits", "every limit and each key in use under a '*' default, by name, with the attempts "
             "holding the key and the tasks waiting for it (null for a default)", {}),
)


# --- parameters --------------------------------------------------------------------------------

def _param(query: Query, name: str) -> Optional[str]:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"parameter {name!r} given more than once")
    return values[0]


def _int_param(query: Query, name: str, default: int, low: int, high: Optional[int] = None) -> int:
    text = _param(query, name)
    if text is None or text == "":
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise ApiError(400, f"parameter {name!r} must be an integer, got {text[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ApiError(400, f"parameter {name!r} must be {bound}, got {value}")
    return value


def _status_param(query: Query) -> Optional[str]:
    status = _param(query, "status") or None
    if status is not None and status not in cloacina.EXECUTION_STATUSES:
        raise ApiError(400, f"parameter 'status' must be one of {', '.join(cloacina.EXECUTION_STATUSES)}, got {status[:40]!r}")
    return status


def _execution_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ApiError(400, f"{text[:80]!r} is not an execution id (a UUID)") from None


# --- endpoints ---------------------------------------------------------------------------------

def index(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/``: the endpoints, each with a one-line description and its query parameters."""
    return {"endpoints": [{"path": e.path, "method": "GET", "description": e.description, "params": e.params}
                          for e in ENDPOINTS]}


def health(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/health``: ``{"ok": true, "backend", "backend_version", "version",
    "execution_statuses", "final_execution_statuses", "task_statuses", "final_task_statuses"}``
    once the database has answered a one-row read (the pages take the status names from here)."""
    executor.list_executions(limit=1)
    return {"ok": True, "backend": cloacina.backend, "backend_version": cloacina.backend_version,
            "version": cloacina.__version__, "execution_statuses": list(cloacina.EXECUTION_STATUSES),
            "final_execution_statuses": list(cloacina.FINAL_EXECUTION_STATUSES),
            "task_statuses": list(cloacina.TASK_STATUSES), "final_task_statuses": list(cloacina.FINAL_TASK_STATUSES)}


def executions(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/executions?workflow=&status=&limit=50&offset=0``: ``{"executions": [...], "limit",
    "offset", "next_offset"}``, items compact (:func:`records.compact_execution`); ``next_offset``
    is null on the last page."""
    workflow = _param(query, "workflow") or None
    status = _status_param(query)
    limit = _int_param(query, "limit", PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX)
    offset = _int_param(query, "offset", 0, 0)
    # One more than the page tells whether a next page exists.
    try:
        found = executor.list_executions(workflow, status, limit + 1, offset)
    except ValueError as exc:  # out of the engine's range (offset), which its message names
        raise ApiError(400, f"parameter {exc}") from None
    page = found[:limit]
    return {"executions": [records.compact_execution(r) for r in page], "limit": limit, "offset": offset,
            "next_offset": offset + limit if len(found) > limit else None}


def execution(executor: cloacina.SyncExecutor, query: Query, execution_id: str) -> Payload:
    """``GET /api/executions/<execution_id>``: the record of ``get_execution`` (task results with
    ``dependencies`` and ``history``), large context values truncated, plus ``duration_seconds``."""
    record = executor.get_execution(_execution_id(execution_id))
    if record is None:
        raise ApiError(404, f"no execution {execution_id}")
    return records.full_execution(record)


def task_instances(executor: cloacina.SyncExecutor, query: Query, execution_id: str, task_id: str) -> Payload:
    """``GET /api/executions/<execution_id>/tasks/<task_id>/instances?offset=0&limit=100``:
    ``{"execution_id", "task_id", "instances": [...], "limit", "offset", "next_offset"}``, the
    dicts of ``list_task_instances`` (one page: never all of them); ``next_offset`` is null on the
    last page. The task's status and instance counts are in the execution's record.

    A page is one indexed read. Only an empty page reads the execution too, to tell an unknown
    execution or task (404) and an ordinary task (400) from a mapped task not expanded yet, or an
    offset past its last instance (200, no instances)."""
    limit = _int_param(query, "limit", INSTANCE_LIMIT_DEFAULT, 1, INSTANCE_LIMIT_MAX)
    offset = _int_param(query, "offset", 0, 0)
    execution_id = _execution_id(execution_id)
    # One more than the page tells whether a next page exists.
    try:
        found = executor.list_task_instances(execution_id, task_id, offset=offset, limit=limit + 1)
    except ValueError as exc:  # out of the engine's range (offset), which its message names
        raise ApiError(400, f"parameter {exc}") from None
    if not found:
        record = executor.get_execution(execution_id)
        if record is None:
            raise ApiError(404, f"no execution {execution_id}")
        task = next((t for t in record["task_results"] if t["task_id"] == task_id), None)
        if task is None:
            raise ApiError(404, f"execution {execution_id} has no task {task_id[:200]!r}")
        if task.get("map") is None:
            raise ApiError(400, f"task {task_id[:200]!r} is not a mapped task (it has no map_over)")
    page = list(found[:limit])
    return {"execution_id": execution_id, "task_id": task_id, "instances": page, "limit": limit,
            "offset": offset, "next_offset": offset + limit if len(found) > limit else None}


def workflow(executor: cloacina.SyncExecutor, query: Query, name: str) -> Payload:
    """``GET /api/workflows/<name>?limit=100``: ``{"name", "executions" (compact, newest first),
    "success_rate" (completed over ended, null if none ended), "durations" (oldest first)}``."""
    limit = _int_param(query, "limit", WORKFLOW_LIMIT_DEFAULT, 1, WORKFLOW_LIMIT_MAX)
    found: List[Mapping[str, Any]] = list(executor.list_executions(name, None, limit, 0))
    return {"name": name, "executions": [records.compact_execution(r) for r in found],
            "success_rate": records.success_rate(found), "durations": records.durations(found)}


def workers(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/workers``: ``{"workers": [...]}``, the dicts of ``list_workers()``."""
    return {"workers": list(executor.list_workers())}


def schedules(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/schedules``: ``{"schedules": [...]}``, the dicts of ``list_schedules()``."""
    return {"schedules": list(executor.list_schedules())}


def limits(executor: cloacina.SyncExecutor, query: Query) -> Payload:
    """``GET /api/limits``: ``{"limits": [...]}``, the dicts of ``list_limits()`` in its order (by name)."""
    return {"limits": list(executor.list_limits())}


_Fixed = Callable[[cloacina.SyncExecutor, Query], Payload]
_Named = Callable[[cloacina.SyncExecutor, Query, str], Payload]

_FIXED: Dict[str, _Fixed] = {
    "/api": index,
    "/api/health": health,
    "/api/executions": executions,
    "/api/workers": workers,
    "/api/schedules": schedules,
    "/api/limits": limits,
}
_NAMED: Dict[str, _Named] = {
    "/api/executions/": execution,
    "/api/workflows/": workflow,
}


# /api/executions/<execution_id>/tasks/<task_id>/instances, matched before the percent-encoding
# is undone, so that a task id may hold an encoded "/".
_INSTANCES = re.compile(r"^/api/executions/([^/]+)/tasks/(.+)/instances$")


def route(executor: cloacina.SyncExecutor, path: str, query: Query) -> Payload:
    """The payload for GET ``path`` (still percent-encoded); raises :class:`ApiError`."""
    trimmed = path.rstrip("/") or "/"
    endpoint = _FIXED.get(trimmed)
    if endpoint is not None:
        return endpoint(executor, query)
    instances = _INSTANCES.match(trimmed)
    if instances is not None:
        return task_instances(executor, query, unquote(instances.group(1)), unquote(instances.group(2)))
    for prefix, named in _NAMED.items():
        if trimmed.startswith(prefix) and len(trimmed) > len(prefix):
            return named(executor, query, unquote(trimmed[len(prefix):]))
    raise ApiError(404, "no such endpoint; GET /api/ lists them")
