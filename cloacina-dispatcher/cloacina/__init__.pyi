# Type view of the dispatcher: the API is the bound backend's; every backend
# mirrors cloacina_sqlite's surface, so type checkers read it from there.
from cloacina_sqlite import CloacinaError as CloacinaError
from cloacina_sqlite import ConfigurationError as ConfigurationError
from cloacina_sqlite import ContextError as ContextError
from cloacina_sqlite import DatabaseError as DatabaseError
from cloacina_sqlite import ExecutionNotFoundError as ExecutionNotFoundError
from cloacina_sqlite import ExecutionStateError as ExecutionStateError
from cloacina_sqlite import NotInitializedError as NotInitializedError
from cloacina_sqlite import ScheduleNotFoundError as ScheduleNotFoundError
from cloacina_sqlite import SkipTask as SkipTask
from cloacina_sqlite import UnifiedExecutor as UnifiedExecutor
from cloacina_sqlite import Workflow as Workflow
from cloacina_sqlite import WorkflowError as WorkflowError
from cloacina_sqlite import task as task
from cloacina_sqlite import current_task as current_task
from cloacina_sqlite import EXECUTION_STATUSES as EXECUTION_STATUSES
from cloacina_sqlite import FINAL_EXECUTION_STATUSES as FINAL_EXECUTION_STATUSES
from cloacina_sqlite import TASK_STATUSES as TASK_STATUSES
from cloacina_sqlite import FINAL_TASK_STATUSES as FINAL_TASK_STATUSES
from cloacina_sqlite import DEFAULT_MAX_CONCURRENCY as DEFAULT_MAX_CONCURRENCY
from cloacina_sqlite import DEFAULT_LEASE_TIMEOUT as DEFAULT_LEASE_TIMEOUT
from cloacina_sqlite import DEFAULT_LIST_LIMIT as DEFAULT_LIST_LIMIT
from cloacina.sync import SyncExecutor as SyncExecutor

__version__: str
backend: str
backend_version: str

def available_backends() -> list[str]: ...

__all__ = [
    "task",
    "current_task",
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
    "SkipTask",
    "ContextError",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_CONCURRENCY",
    "EXECUTION_STATUSES",
    "FINAL_EXECUTION_STATUSES",
    "FINAL_TASK_STATUSES",
    "TASK_STATUSES",
    "backend",
    "backend_version",
    "available_backends",
    "__version__",
]
