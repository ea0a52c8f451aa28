"""A Cloacina backend: durable, embedded workflows with a Rust core.

Every backend package (``cloacina_sqlite``, ``cloacina_postgres``) ships this same module over
its own native extension; ``backend`` names which one this is. Import through the dispatcher
(``import cloacina``) unless you need a backend explicitly.
"""

from ._native import (
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_CONCURRENCY,
    EXECUTION_STATUSES,
    FINAL_EXECUTION_STATUSES,
    FINAL_TASK_STATUSES,
    TASK_STATUSES,
    CloacinaError,
    ConfigurationError,
    ContextError,
    DatabaseError,
    ExecutionNotFoundError,
    ExecutionStateError,
    NotInitializedError,
    ScheduleNotFoundError,
    SkipTask,
    UnifiedExecutor,
    Workflow,
    WorkflowError,
    __version__,
    backend,
    current_task,
    task,
)

from ._types import (
    AttemptRecord,
    CurrentTask,
    ExecutionResult,
    MapCounts,
    RunningTask,
    ScheduleInfo,
    TaskInstance,
    TaskResult,
    WorkerInfo,
)

__all__ = [
    "AttemptRecord",
    "CurrentTask",
    "ExecutionResult",
    "MapCounts",
    "RunningTask",
    "ScheduleInfo",
    "TaskInstance",
    "TaskResult",
    "WorkerInfo",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_CONCURRENCY",
    "EXECUTION_STATUSES",
    "FINAL_EXECUTION_STATUSES",
    "FINAL_TASK_STATUSES",
    "TASK_STATUSES",
    "CloacinaError",
    "ConfigurationError",
    "ContextError",
    "DatabaseError",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "NotInitializedError",
    "ScheduleNotFoundError",
    "SkipTask",
    "UnifiedExecutor",
    "Workflow",
    "WorkflowError",
    "__version__",
    "backend",
    "current_task",
    "task",
]
