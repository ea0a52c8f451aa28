"""OpenTelemetry spans for executions and task attempts (imported only when it is installed).

The engine calls these functions; users never do. An execution submitted from this process is a
span named ``cloacina.execution <workflow>``, a child of the span current where ``submit`` or
``execute`` was called. It ends when this process learns the execution ended: its own worker
committed the end, or a ``wait``/``execute`` here returned it. Each task attempt is a child span
``cloacina.task <task id>`` of its execution's span when that span is open in this process, and
a new trace otherwise (span context does not travel between processes yet).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

_tracer = trace.get_tracer("cloacina")
_lock = threading.Lock()
# Execution spans still open, oldest first; a process that never learns of their end keeps
# at most _MOST_OPEN of them.
_executions: "OrderedDict[str, Span]" = OrderedDict()
_attempts: Dict[Tuple[str, str, int], Span] = {}
_MOST_OPEN = 10_000


def _ids(execution_id: str, workflow_name: str) -> Dict[str, str]:
    return {"cloacina.execution_id": execution_id, "cloacina.workflow_name": workflow_name}


def start_execution(execution_id: str, workflow_name: str) -> None:
    """Opens the execution's span as a child of the caller's current span."""
    span = _tracer.start_span(f"cloacina.execution {workflow_name}",
                              attributes=_ids(execution_id, workflow_name))
    with _lock:
        _executions[execution_id] = span
        while len(_executions) > _MOST_OPEN:
            _, oldest = _executions.popitem(last=False)
            oldest.set_attribute("cloacina.status", "unknown")
            oldest.end()


def end_execution(execution_id: str, status: str, error: Optional[str] = None) -> None:
    """Closes the execution's span if it is open here."""
    with _lock:
        span = _executions.pop(execution_id, None)
    if span is None:
        return
    span.set_attribute("cloacina.status", status)
    if status == "Completed":
        span.set_status(Status(StatusCode.OK))
    elif status in ("Failed", "Cancelled"):
        span.set_status(Status(StatusCode.ERROR, error or status))
    span.end()


def start_attempt(execution_id: str, workflow_name: str, task_id: str, attempt: int) -> None:
    with _lock:
        parent = _executions.get(execution_id)
    context = trace.set_span_in_context(parent) if parent is not None else None
    attributes = dict(_ids(execution_id, workflow_name), **{"cloacina.task_id": task_id})
    attributes["cloacina.attempt"] = attempt  # type: ignore[assignment]
    span = _tracer.start_span(f"cloacina.task {task_id}", context=context, attributes=attributes)
    with _lock:
        _attempts[(execution_id, task_id, attempt)] = span


def end_attempt(execution_id: str, task_id: str, attempt: int, status: str, error: Optional[str]) -> None:
    with _lock:
        span = _attempts.pop((execution_id, task_id, attempt), None)
    if span is None:
        return
    span.set_attribute("cloacina.status", status)
    if status == "Failed":
        span.set_status(Status(StatusCode.ERROR, error or "Failed"))
        span.add_event("exception", {"exception.message": error or ""})
    elif status == "Completed":
        span.set_status(Status(StatusCode.OK))
    span.end()


def retry_scheduled(execution_id: str, task_id: str, attempt: int, delay: float) -> None:
    """Notes on the execution's span that a failed attempt will be retried."""
    with _lock:
        span = _executions.get(execution_id)
    if span is not None:
        span.add_event("cloacina.retry", {"cloacina.task_id": task_id, "cloacina.attempt": attempt,
                                          "cloacina.delay_seconds": delay})
