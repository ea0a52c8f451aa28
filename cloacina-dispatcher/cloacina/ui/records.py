"""How the dashboard API shapes the executor's records: compact list items, durations, success
rates, and context values cut down to a preview when they are large."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

import cloacina
from cloacina._records import parse_timestamp

# A context value whose JSON text is longer than this is replaced by a preview.
MAX_VALUE_CHARS = 10_000
PREVIEW_CHARS = 200


# Fields of an execution record left out of list items (they can be large).
_HEAVY_FIELDS = ("input_context", "final_context", "task_results")


def duration_seconds(record: Mapping[str, Any]) -> Optional[float]:
    """Seconds from ``started_at`` to ``completed_at``; None while the execution has not ended."""
    started = parse_timestamp(record.get("started_at"))
    completed = parse_timestamp(record.get("completed_at"))
    if started is None or completed is None:
        return None
    return round((completed - started).total_seconds(), 6)


def task_counts(record: Mapping[str, Any]) -> Dict[str, int]:
    """How many of the execution's tasks are in each status."""
    counts: Dict[str, int] = {}
    for result in record.get("task_results") or ():
        status = str(result.get("status"))
        counts[status] = counts.get(status, 0) + 1
    return counts


def compact_execution(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A list item: the record without its contexts and task results, plus ``task_counts`` and
    ``duration_seconds``."""
    item = {key: value for key, value in record.items() if key not in _HEAVY_FIELDS}
    item["task_counts"] = task_counts(record)
    item["duration_seconds"] = duration_seconds(record)
    return item


def truncate_value(value: Any) -> Any:
    """``value``, or ``{"truncated": true, "size", "preview"}`` when its JSON text is longer than
    :data:`MAX_VALUE_CHARS` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return {"truncated": True, "size": len(text), "preview": text[:PREVIEW_CHARS]}


def truncate_context(context: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A context with each of its large values replaced by a preview (see :func:`truncate_value`)."""
    if context is None:
        return None
    return {key: truncate_value(value) for key, value in context.items()}


def full_execution(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The detail view: the whole record, its contexts' large values truncated."""
    detail = dict(record)
    detail["input_context"] = truncate_context(record.get("input_context"))
    detail["final_context"] = truncate_context(record.get("final_context"))
    detail["duration_seconds"] = duration_seconds(record)
    return detail


def success_rate(records: List[Mapping[str, Any]]) -> Optional[float]:
    """Completed / (Completed + Failed + Cancelled) among ``records``; None if none has ended."""
    ended = [r for r in records if r.get("status") in cloacina.FINAL_EXECUTION_STATUSES]
    if not ended:
        return None
    return sum(1 for r in ended if r.get("status") == "Completed") / len(ended)


def durations(records: List[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One point per ended execution, oldest first (for a chart)."""
    points = []
    for record in reversed(records):  # records come newest first
        seconds = duration_seconds(record)
        if seconds is None:
            continue
        points.append({"execution_id": record.get("execution_id"), "started_at": record.get("started_at"),
                       "seconds": seconds, "status": record.get("status")})
    return points
