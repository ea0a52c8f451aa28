"""Cloacina: an embedded durable workflow engine for Python.

This package holds no engine of its own. On import it binds exactly one
installed backend (``cloacina-postgres`` preferred over ``cloacina-sqlite``
unless ``CLOACINA_BACKEND`` says otherwise, see :mod:`cloacina._discovery`) and
re-exports that backend's API.
"""

from __future__ import annotations

from cloacina._discovery import available_backends, load_backend

__version__ = "0.1.0"

backend, _backend_module = load_backend()
backend_version: str = getattr(_backend_module, "__version__", "unknown")

task = _backend_module.task
current_task = _backend_module.current_task
sleep = _backend_module.sleep
wait_for_event = _backend_module.wait_for_event
subworkflow = _backend_module.subworkflow
TaskRef = _backend_module.TaskRef
Workflow = _backend_module.Workflow
UnifiedExecutor = _backend_module.UnifiedExecutor
CloacinaError = _backend_module.CloacinaError
DatabaseError = _backend_module.DatabaseError
WorkflowError = _backend_module.WorkflowError
ConfigurationError = _backend_module.ConfigurationError
NotInitializedError = _backend_module.NotInitializedError
ExecutionNotFoundError = _backend_module.ExecutionNotFoundError
ExecutionStateError = _backend_module.ExecutionStateError
ScheduleNotFoundError = _backend_module.ScheduleNotFoundError
LimitNotFoundError = _backend_module.LimitNotFoundError
SkipTask = _backend_module.SkipTask
Snooze = _backend_module.Snooze
ContextError = _backend_module.ContextError
EXECUTION_STATUSES: "tuple[str, ...]" = _backend_module.EXECUTION_STATUSES
FINAL_EXECUTION_STATUSES: "tuple[str, ...]" = _backend_module.FINAL_EXECUTION_STATUSES
TASK_STATUSES: "tuple[str, ...]" = _backend_module.TASK_STATUSES
FINAL_TASK_STATUSES: "tuple[str, ...]" = _backend_module.FINAL_TASK_STATUSES
DEFAULT_MAX_CONCURRENCY: int = _backend_module.DEFAULT_MAX_CONCURRENCY
DEFAULT_LEASE_TIMEOUT: float = _backend_module.DEFAULT_LEASE_TIMEOUT
DEFAULT_LIST_LIMIT: int = _backend_module.DEFAULT_LIST_LIMIT
AttemptRecord = _backend_module.AttemptRecord
CurrentTask = _backend_module.CurrentTask
ExecutionResult = _backend_module.ExecutionResult
MapCounts = _backend_module.MapCounts
RunningTask = _backend_module.RunningTask
ScheduleInfo = _backend_module.ScheduleInfo
LimitInfo = _backend_module.LimitInfo
TaskInstance = _backend_module.TaskInstance
TaskResult = _backend_module.TaskResult
WorkerInfo = _backend_module.WorkerInfo

del _backend_module

# After the backend's names: the blocking executor wraps the bound UnifiedExecutor.
from cloacina.sync import SyncExecutor  # noqa: E402

__all__ = [
    "task",
    "current_task",
    "sleep",
    "wait_for_event",
    "subworkflow",
    "TaskRef",
    "Workflow",
    "UnifiedExecutor",
    "SyncExecutor",
    "CloacinaError",
    "DatabaseError",
    "WorkflowError",
    "ConfigurationError",
    "NotInitializedError",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "ScheduleNotFoundError",
    "LimitNotFoundError",
    "SkipTask",
    "Snooze",
    "ContextError",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_CONCURRENCY",
    "EXECUTION_STATUSES",
    "FINAL_EXECUTION_STATUSES",
    "FINAL_TASK_STATUSES",
    "TASK_STATUSES",
    "AttemptRecord",
    "CurrentTask",
    "ExecutionResult",
    "MapCounts",
    "RunningTask",
    "ScheduleInfo",
    "LimitInfo",
    "TaskInstance",
    "TaskResult",
    "WorkerInfo",
    "backend",
    "backend_version",
    "available_backends",
    "__version__",
]
