# Type view of the dispatcher: the API is the bound backend's. Every backend has the same
# surface, and `_backend.pyi` is a copy of it (a link to the backends' one stub), so this
# type-checks with either backend installed alone.
from cloacina._backend import CloacinaError as CloacinaError
from cloacina._backend import ConfigurationError as ConfigurationError
from cloacina._backend import ContextError as ContextError
from cloacina._backend import DatabaseError as DatabaseError
from cloacina._backend import ExecutionNotFoundError as ExecutionNotFoundError
from cloacina._backend import ExecutionStateError as ExecutionStateError
from cloacina._backend import NotInitializedError as NotInitializedError
from cloacina._backend import ScheduleNotFoundError as ScheduleNotFoundError
from cloacina._backend import LimitNotFoundError as LimitNotFoundError
from cloacina._backend import SkipTask as SkipTask
from cloacina._backend import Snooze as Snooze
from cloacina._backend import TaskRef as TaskRef
from cloacina._backend import UnifiedExecutor as UnifiedExecutor
from cloacina._backend import Workflow as Workflow
from cloacina._backend import WorkflowError as WorkflowError
from cloacina._backend import task as task
from cloacina._backend import current_task as current_task
from cloacina._backend import sleep as sleep
from cloacina._backend import wait_for_event as wait_for_event
from cloacina._backend import subworkflow as subworkflow
from cloacina._backend import EXECUTION_STATUSES as EXECUTION_STATUSES
from cloacina._backend import FINAL_EXECUTION_STATUSES as FINAL_EXECUTION_STATUSES
from cloacina._backend import TASK_STATUSES as TASK_STATUSES
from cloacina._backend import FINAL_TASK_STATUSES as FINAL_TASK_STATUSES
from cloacina._backend import DEFAULT_MAX_CONCURRENCY as DEFAULT_MAX_CONCURRENCY
from cloacina._backend import DEFAULT_LEASE_TIMEOUT as DEFAULT_LEASE_TIMEOUT
from cloacina._backend import DEFAULT_LIST_LIMIT as DEFAULT_LIST_LIMIT
from cloacina._backend import AttemptRecord as AttemptRecord
from cloacina._backend import CurrentTask as CurrentTask
from cloacina._backend import ExecutionResult as ExecutionResult
from cloacina._backend import MapCounts as MapCounts
from cloacina._backend import RunningTask as RunningTask
from cloacina._backend import ScheduleInfo as ScheduleInfo
from cloacina._backend import LimitInfo as LimitInfo
from cloacina._backend import TaskInstance as TaskInstance
from cloacina._backend import TaskResult as TaskResult
from cloacina._backend import WorkerInfo as WorkerInfo
from cloacina.sync import SyncExecutor as SyncExecutor

__version__: str
backend: str
backend_version: str

def available_backends() -> list[str]: ...

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
