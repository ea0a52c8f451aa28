"""Type stubs for a Cloacina backend module (identical for every backend)."""

from typing import Any, Tuple, Type, final, Awaitable, Callable, Dict, List, Literal, Optional, Sequence, TypedDict, TypeVar, Union, overload

__all__ = [
    "CloacinaError",
    "ConfigurationError",
    "ContextError",
    "DatabaseError",
    "NotInitializedError",
    "SkipTask",
    "UnifiedExecutor",
    "Workflow",
    "WorkflowError",
    "__version__",
    "backend",
    "task",
]

__version__: str
backend: str

_Context = Dict[str, Any]
_TaskFunction = Callable[[_Context], Union[Optional[_Context], Awaitable[Optional[_Context]]]]
_F = TypeVar("_F", bound=_TaskFunction)
_TaskRef = Union[str, Callable[..., Any]]

_TaskStatus = Literal["Pending", "Running", "Completed", "Failed", "Skipped", "Cancelled"]
_TriggerRule = Literal["all_success", "all_done", "one_success", "one_failed", "none_failed"]

class _AttemptDict(TypedDict):
    attempt: int
    status: _TaskStatus
    error: Optional[str]
    started_at: str
    completed_at: str

class _TaskResultDict(TypedDict):
    task_id: str
    status: _TaskStatus
    attempts: int
    error: Optional[str]
    traceback: Optional[str]
    reason: Optional[str]
    started_at: Optional[str]
    completed_at: Optional[str]
    history: List[_AttemptDict]

class _ExecutionDict(TypedDict):
    execution_id: str
    workflow_name: str
    workflow_version: str
    status: Literal["Running", "Completed", "Failed", "Cancelled"]
    input_context: _Context
    final_context: Optional[_Context]
    error: Optional[str]
    started_at: str
    completed_at: Optional[str]
    task_results: List[_TaskResultDict]

class CloacinaError(Exception):
    """Base class of every error raised by the Cloacina engine."""

class DatabaseError(CloacinaError):
    """The database failed, refused the connection or could not be reached."""

class WorkflowError(CloacinaError, ValueError):
    """The workflow graph is invalid: empty, unknown or duplicate tasks, or a cycle."""

class ConfigurationError(CloacinaError, ValueError):
    """A database URL or executor setting is invalid."""

class NotInitializedError(CloacinaError, RuntimeError):
    """The executor is not initialized (call `await executor.initialize(url)`) or was shut down."""

class ContextError(CloacinaError, TypeError):
    """A context value cannot be stored as JSON."""

class SkipTask(Exception):
    """Raise inside a task to mark it Skipped with this reason; it is not a failure and is never retried."""

@overload
def task(
    task_id: _F,
    *,
        dependencies: Sequence[_TaskRef] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: float = 60.0,
        retry_jitter: float = 0.0,
        retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = (Exception,),
        timeout: Optional[float] = None,
        trigger_rule: _TriggerRule = "all_success",
) -> _F:
    """Register a ``def`` or ``async def`` function taking the context dict as a task.

    ``task_id`` defaults to the function's name. ``dependencies`` are task ids or decorated
    functions; ids may name tasks registered later. The function is returned unchanged.
    Registering an id again replaces the earlier definition for workflows built afterwards.
    A task returns a dict (merged into the context) or None (keeps the dict it was given,
    including in-place changes).

    Failed attempts whose exception is an instance of ``retry_on`` are retried up to
    ``retries`` times, waiting ``retry_delay * retry_backoff ** (n - 1)`` seconds (capped at
    ``retry_max_delay``, spread by ``± retry_jitter``) before retry ``n``. ``timeout`` bounds
    each attempt: an async task is cancelled, a sync task's late result is discarded.
    ``trigger_rule`` decides whether the task runs once its upstream tasks have ended.
    """

@overload
def task(
    task_id: Optional[str] = None,
    *,
        dependencies: Sequence[_TaskRef] = (),
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_backoff: float = 2.0,
        retry_max_delay: float = 60.0,
        retry_jitter: float = 0.0,
        retry_on: Union[Type[BaseException], Tuple[Type[BaseException], ...]] = (Exception,),
        timeout: Optional[float] = None,
        trigger_rule: _TriggerRule = "all_success",
) -> Callable[[_F], _F]: ...

@final
class Workflow:
    """A named DAG of registered tasks, validated when built.

    ``tasks`` are ids or decorated functions; their dependencies join automatically.
    ``tasks=None`` takes every task registered so far. Raises WorkflowError for an empty
    workflow, an unknown task or dependency, or a cycle.
    """

    def __new__(cls, name: str, tasks: Optional[Sequence[_TaskRef]] = None) -> Workflow: ...
    @property
    def name(self) -> str:
        """The workflow's name."""
    @property
    def task_ids(self) -> List[str]:
        """Task ids in topological order."""
    @property
    def version(self) -> str:
        """A digest of the graph: the same tasks and edges give the same version."""
    def __len__(self) -> int: ...

@final
class UnifiedExecutor:
    """Runs workflows, recording every execution and task result in the database."""

    def __new__(cls, max_concurrency: int = 8) -> UnifiedExecutor: ...
    @property
    def max_concurrency(self) -> int:
        """The most tasks this executor runs at once."""
    async def initialize(
        self, database_url: str, *, schema: Optional[str] = None, pool_size: Optional[int] = None
    ) -> None:
        """Connect to and migrate the database; call once before anything else.

        ``schema`` (PostgreSQL only) keeps every table in that schema, created if missing.
        ``pool_size`` caps the connections this executor opens (default 10 on PostgreSQL,
        4 on a SQLite file).
        """
    async def execute(
        self, workflow: Workflow, context: Optional[_Context] = None, *, timeout: Optional[float] = None
    ) -> _ExecutionDict:
        """Run ``workflow`` on ``context``; a failing task gives a Failed result, not an exception.

        Past ``timeout`` seconds the execution is cancelled and its result is "Cancelled".
        Cancelling the awaiting coroutine cancels the execution too.
        """
    async def cancel(self, execution_id: str) -> bool:
        """Cancel a running execution of this executor; False if it is not running here."""
    async def get_execution(self, execution_id: str) -> Optional[_ExecutionDict]:
        """Read a recorded execution back; None if the id is unknown."""
    async def list_executions(
        self, workflow: Optional[str] = None, status: Optional[str] = None, limit: int = 50
    ) -> List[_ExecutionDict]:
        """List recorded executions, newest first, filtered by workflow name and status."""
    async def shutdown(self, *, cancel: bool = False) -> None:
        """Stop accepting work and wait for running executions; ``cancel=True`` cancels them first."""
