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
    "backend",
    "backend_version",
    "available_backends",
    "__version__",
]
